"""Fitting an SMPL-X body to 22 body joints (HumanML3D's joints), so that generated motion,
which only has joints, can be drawn as a mesh. The idea is SMPLify's (Bogo et al., "Keep it
SMPL", ECCV 2016): optimise the body model's pose and shape so that its joints match the
given ones, with priors for what the joints cannot tell.

HumanML3D joints are re-targeted to another skeleton's bone lengths, so no SMPL-X pose puts
every joint exactly where they are. The fit therefore matches what survives re-targeting:
each bone's direction, the root position and (for the shape) the bone lengths. The loop
never runs the mesh: SMPL-X's rest joints are linear in the shape coefficients
(``J_regressor @ (v_template + shapedirs @ betas)``), so that ``(22, 3, 10)`` map is read once
from the model file and forward kinematics over the 22-joint tree gives posed joints for a
few hundred small matrix products per step. The vertices come from ``smplx`` once, after.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .errors import DataError
from .rotations import matrix_to_axis_angle, rot6d_to_matrix
from .skeleton import SMPLX_PARENTS

__all__ = ["FitResult", "fit_smplx_to_joints"]

NUM_JOINTS = 22  # SMPL(-X) body joints 0..21 = HumanML3D's joints, same order
NUM_BETAS = 10
PARENTS = SMPLX_PARENTS[:NUM_JOINTS]
# Loss weights, chosen by measurement (round trips with random poses and the HumanML3D
# fixture; see tests/test_fit_smpl.py). The data term is each bone's direction (squared
# distance of unit vectors, 2 - 2 cos, summed over the 21 bones, mean over frames).
# L2 on the body rotations (||R - I||^2, about 2 angle^2): a joint rotation's twist about its
# single child bone, and the rotations of joints without a child in the 22 (head, wrists,
# feet), move no joint, so without this they drift anywhere; a small weight picks the
# least-rotated pose among the equally good ones and barely biases the observable part.
W_POSE = 1e-3
# Squared frame-to-frame rotation change: the same unobservable twists must not flicker
# between frames, and it damps jitter the joints may have.
W_SMOOTH = 1e-2
# ||betas||^2 next to the squared bone-length residuals (m^2) of the shape fit: 21 lengths
# over-determine 10 betas, but a skeleton no SMPL-X body has (HumanML3D's re-targeted one)
# would otherwise be chased with extreme shapes. Small: a beta of 1 moves real SMPL-X bones
# by about a centimetre, a residual of 1e-4 m^2.
W_BETAS = 1e-6


class FitResult(NamedTuple):
    """A fitted SMPL-X body: ``poses (T, 165)`` axis-angle in BEAT2's layout (global orient,
    21 body joints; jaw, eyes and hands zero), ``betas (10,)`` shared over frames, ``trans
    (T, 3)`` (the ``transl`` of ``smplx``), ``joints_error (T,)`` the per-frame mean distance
    (m) of the fitted body's 22 joints from the given ones. All float32."""

    poses: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    joints_error: np.ndarray


def _model_file(model_path: str | Path) -> Path:
    """The npz that ``smplx.create`` (and :func:`gesture_data.render_smpl.smplx_vertices`)
    loads for ``model_path``, so the fit and the final mesh use the same body."""
    from .datasets.smplx_model import _model_root

    f = _model_root(model_path) / "smplx" / "SMPLX_NEUTRAL.npz"
    if not f.is_file():
        raise DataError(model_path, "SMPL-X model file not found", expected=str(f), found=None)
    return f


def _rest_joint_map(model_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J0 (22, 3), Jdirs (22, 3, 10))`` float64: rest joints ``J0 + Jdirs @ betas``."""
    f = _model_file(model_path)
    st = f.stat()
    # the model's npz holds ~100 MB of blend shapes: read once per file version (a CLI
    # fits the generated and the ground-truth motion with the same model)
    return _read_rest_joint_map(str(f.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read_rest_joint_map(path: str, mtime_ns: int, size: int):
    f = Path(path)
    try:
        with np.load(f, allow_pickle=False) as z:
            jreg = np.asarray(z["J_regressor"], np.float64)[:NUM_JOINTS]  # (22, V)
            v = np.asarray(z["v_template"], np.float64)  # (V, 3)
            sd = np.asarray(z["shapedirs"], np.float64)[:, :, :NUM_BETAS]  # (V, 3, 10)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f, f"cannot read SMPL-X model: {type(e).__name__}: {e}") from None
    V = v.shape[0]
    if v.shape != (V, 3) or jreg.shape != (NUM_JOINTS, V) or sd.shape[:2] != (V, 3):
        found = (jreg.shape, v.shape, sd.shape)
        raise DataError(
            f, "unexpected model arrays", key="J_regressor, v_template, shapedirs",
            expected="(55, V), (V, 3), (V, 3, >=10)", found=found,
        )  # fmt: skip
    j0 = jreg @ v
    jdirs = np.zeros((NUM_JOINTS, 3, NUM_BETAS))
    jdirs[:, :, : sd.shape[2]] = np.einsum("jv,vcb->jcb", jreg, sd)
    return torch.from_numpy(j0), torch.from_numpy(jdirs)


def _levels() -> list[tuple[int, int]]:
    """SMPL's joint order is sorted by depth in the tree: ``[(start, stop), ...]`` of the
    depth levels, so each level's world rotations are one batched product."""
    depth = [0] * NUM_JOINTS
    for j in range(1, NUM_JOINTS):
        depth[j] = depth[PARENTS[j]] + 1
    assert depth == sorted(depth)
    return [(depth.index(d), NUM_JOINTS - depth[::-1].index(d)) for d in range(1, max(depth) + 1)]


_LEVELS = _levels()


def _global_rotations(local: torch.Tensor) -> torch.Tensor:
    """``local (T, 22, 3, 3)`` -> each joint's world rotation (parent's world @ local),
    ``(T, 22, 3, 3)``; 7 level products instead of 21 joint ones (the fit's inner loop)."""
    world = local[:, :1]
    for a, b in _LEVELS:
        world = torch.cat([world, world[:, PARENTS[a:b]] @ local[:, a:b]], 1)
    return world


def _posed_joints(local: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Forward kinematics: rotations ``(T, 22, 3, 3)``, rest joints ``(22, 3)`` -> joints
    ``(T, 22, 3)`` with the root at the rest root (add ``trans`` for smplx's output)."""
    world = _global_rotations(local)
    pos = [rest[0].expand(local.shape[0], 3)]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        pos.append(pos[p] + world[:, p] @ (rest[j] - rest[p]))
    return torch.stack(pos, 1)


def _bones(joints: torch.Tensor) -> torch.Tensor:
    """``(..., 22, 3)`` -> bone vectors child - parent ``(..., 21, 3)``."""
    return joints[..., 1:, :] - joints[..., PARENTS[1:], :]


def _kabsch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Rotations ``(T, 3, 3)`` best taking vectors ``src (K, 3)`` onto ``dst (T, K, 3)``."""
    h = src.T @ dst  # (T, 3, 3)
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.mT @ u.mT))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return vt.mT @ fix @ u.mT


def _fit_betas(j0: torch.Tensor, jdirs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Shape ``(10,)`` whose rest bone lengths best match ``lengths (21,)``. A bone's length
    is the same in every pose, so the shape is fitted first, alone and pose-free; the bone
    directions then fix the pose. (Fitted together, Adam's step size held the shape back and
    the direction term pulled it towards the target skeleton's rest *directions*, which a
    re-targeted skeleton does not share.) Ten unknowns: L-BFGS converges in a few steps."""
    betas = torch.zeros(NUM_BETAS, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([betas], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        rlen = _bones(j0 + jdirs @ betas).norm(dim=-1)
        loss = ((rlen - lengths) ** 2).sum() + W_BETAS * (betas**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return betas.detach()


def fit_smplx_to_joints(
    joints,
    model_path: str | Path,
    *,
    iters: int = 150,
    fit_betas: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit SMPL-X to body joints ``(T, 22, 3)`` (metres, Y up; SMPL's joints 0..21, e.g.
    HumanML3D's ``recover_from_ric``) with the model file at ``model_path`` (the npz or its
    folder, as :func:`gesture_data.render_smpl.smplx_vertices` takes it).

    First the 10 shape coefficients, shared over frames, from the mean bone lengths
    (``fit_betas=False`` keeps them 0); then all frames together (Adam, ``iters`` steps) over
    6D rotations of the global orient and the 21 body joints: bone directions, a small pose
    prior and a small temporal smoothness term. ``trans`` puts the root joint on the given
    root. ``progress(done, iters)`` is called after each step. About 2 s for 196 frames on
    one CPU thread; the error is ~1 mm when the joints come from the same body model.
    Returns a :class:`FitResult`; draw it with ``render_smpl_video([r.poses], model,
    out, trans=[r.trans], betas=[r.betas])``.
    """
    try:
        target = np.asarray(joints, np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(None, f"not real numbers: {e}", key="joints") from None
    if target.ndim != 3 or target.shape[1:] != (NUM_JOINTS, 3) or target.shape[0] < 1:
        raise DataError(
            None, "wrong joints shape", key="joints", expected="(T>=1, 22, 3)", found=target.shape
        )
    if not np.isfinite(target).all():
        bad = np.flatnonzero(~np.isfinite(target).all((1, 2)))
        raise DataError(None, f"non-finite joint positions in frames {bad[:5].tolist()}",
                        key="joints")  # fmt: skip
    if iters < 0:
        raise DataError(None, "iters must be >= 0", key="iters", found=iters)
    j0, jdirs = _rest_joint_map(model_path)
    T = target.shape[0]
    tgt = torch.from_numpy(target)
    tbones = _bones(tgt)  # (T, 21, 3)
    tlen = tbones.norm(dim=-1)  # (T, 21)
    # a zero-length bone has no direction: it is left out of the direction term
    tmask = (tlen > 1e-6).double()
    tdir = tbones / tlen.clamp_min(1e-9)[..., None]
    mean_len = (tlen * tmask).sum(0) / tmask.sum(0).clamp_min(1)  # (21,)

    betas = torch.zeros(NUM_BETAS, dtype=torch.float64)
    if fit_betas:
        betas = _fit_betas(j0, jdirs, mean_len)
    # Global orient starts from the rotation that best lays the rest pelvis bones (hips,
    # spine) onto the target's in each frame: from the rest pose, a body facing away would
    # start near a loss maximum and gradient steps could turn it the wrong way round.
    root_children = [j - 1 for j in range(1, NUM_JOINTS) if PARENTS[j] == 0]
    rest_dirs = _bones(j0)[root_children]
    rest_dirs = rest_dirs / rest_dirs.norm(dim=-1, keepdim=True)
    g0 = _kabsch(rest_dirs, tdir[:, root_children])
    eye6 = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64)
    # 6D (two matrix rows, Gram-Schmidt): continuous, unlike axis-angle near pi
    rot6 = eye6.repeat(T, NUM_JOINTS, 1)
    rot6[:, 0] = g0[:, :2, :].reshape(T, 6)
    rot6.requires_grad_(True)
    opt = torch.optim.Adam([rot6], lr=0.1)
    eye = torch.eye(3, dtype=torch.float64)

    rest = j0 + jdirs @ betas  # (22, 3)
    rbones = _bones(rest)
    rdir = rbones / rbones.norm(dim=-1, keepdim=True)  # (21, 3)

    def loss_fn():
        local = rot6d_to_matrix(rot6)  # (T, 22, 3, 3)
        world = _global_rotations(local)
        # posed bone j = parent's world rotation @ rest bone
        d = (world[:, PARENTS[1:]] @ rdir[:, :, None])[..., 0]  # (T, 21, 3)
        l_dir = (((d - tdir) ** 2).sum(-1) * tmask).sum() / T
        l_pose = W_POSE * ((local[:, 1:] - eye) ** 2).sum() / T
        l_smooth = W_SMOOTH * ((local[1:] - local[:-1]) ** 2).sum() / max(T - 1, 1)
        return l_dir + l_pose + l_smooth

    # Two phases with the same loss: a large step finds the pose, a small one settles it
    # (Adam's step size, not the loss, limits the final accuracy). Measured on 20 random
    # round trips at 150 steps: 0.1 -> 0.02 at 2/3 gave the best worst case (1.9 mm mean
    # joint error) of 0.05/0.01, 0.1/0.01, 0.2/0.01 and cosine decays.
    for i in range(iters):
        if i == (2 * iters) // 3:
            for g in opt.param_groups:
                g["lr"] = 0.02
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        if progress is not None:
            progress(i + 1, iters)

    with torch.no_grad():
        local = rot6d_to_matrix(rot6)
        posed = _posed_joints(local, rest)
        # the root joint sits at rest[0] + transl whatever the rotations, so the
        # translation that puts it on the target's root is exact, not optimised
        trans = tgt[:, 0] - rest[0]
        err = (posed + trans[:, None] - tgt).norm(dim=-1).mean(-1)
        poses = np.zeros((T, 165), np.float32)
        poses[:, :66] = matrix_to_axis_angle(local).reshape(T, 66).numpy()
    return FitResult(
        poses=poses,
        betas=betas.detach().numpy().astype(np.float32),
        trans=trans.numpy().astype(np.float32),
        joints_error=err.numpy().astype(np.float32),
    )

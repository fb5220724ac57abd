"""Joint positions and face vertices from SMPL-X parameters, in both reference conventions.

Users pass their own SMPL-X model file (``SMPLX_NEUTRAL_2020.npz``; licensed, not shipped).

Joints (for BC, L1div, SRGR), ``poses`` (T, 165) axis-angle, zero translation and expression:

- ``evaltools``: only body ``[3:66]`` and hands ``[75:165]`` are used; global orientation,
  jaw and eyes are zeroed (``emage_utils.get_motion_rep_numpy``).
- ``cvpr24``: global orientation, body, jaw, eyes and hands all come from the pose
  (``emage_trainer.test``).

:func:`smplx_joints` evaluates the first 55 SMPL-X joints by forward kinematics of the
shape-dependent rest joints (what ``smplx`` returns as ``joints[:, :55]``, without the cost
of skinning 10,475 vertices). :func:`face_vertices` runs the full ``smplx`` model.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from gesture_eval._checks import Variant, check_finite, check_variant, to_numpy
from gesture_eval.errors import EvalError

__all__ = ["SmplxRest", "face_vertices", "smplx_joints"]

_REQUIRED = ("v_template", "shapedirs", "J_regressor", "kintree_table")


def _rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3, 3), the formula ``smplx.lbs.batch_rodrigues`` uses (same rounding)."""
    angle = torch.norm(aa + 1e-8, dim=1, keepdim=True)
    rx, ry, rz = torch.split(aa / angle, 1, dim=1)
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    zeros = torch.zeros_like(rx)
    k = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)[None]
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


@functools.lru_cache(maxsize=2)
def _load_rest_arrays(path: str, num_betas: int):
    # Cached: evaluating a test set re-reads the same (~100 MB) model file per sequence.
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise EvalError(f"{path}: not a readable SMPL-X .npz ({type(e).__name__}: {e})") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise EvalError(f"{path}: expected an SMPL-X .npz archive, found a single .npy array")
    with data:
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise EvalError(f"{path}: missing SMPL-X keys {missing}")
        arrs = {}
        for k in _REQUIRED:
            try:
                arrs[k] = data[k]
            except (ValueError, OSError, zipfile.BadZipFile) as e:  # object member, bad zip
                raise EvalError(f"{path}: key {k!r} is unreadable ({e})") from e
    for k, a in arrs.items():
        if a.dtype.kind not in "fiu":
            raise EvalError(f"{path}: key {k!r} must be numeric, found dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise EvalError(f"{path}: key {k!r} contains NaN/inf values")
    v, sd, jr = arrs["v_template"], arrs["shapedirs"], arrs["J_regressor"]
    V = v.shape[0] if v.ndim == 2 and v.shape[1] == 3 else None
    for k, a, want in (
        ("v_template", v, "(V, 3)"),
        ("shapedirs", sd, "(V, 3, B)"),
        ("J_regressor", jr, "(J, V)"),
    ):
        ok = (
            V is not None
            and {
                "v_template": True,
                "shapedirs": sd.ndim == 3 and sd.shape[:2] == (V, 3),
                "J_regressor": jr.ndim == 2 and jr.shape[1] == V,
            }[k]
        )
        if not ok:
            raise EvalError(f"{path}: key {k!r} must be {want}, found shape {a.shape}")
    return (
        torch.as_tensor(v, dtype=torch.float32),
        torch.as_tensor(sd[:, :, :num_betas], dtype=torch.float32),
        torch.as_tensor(jr, dtype=torch.float32),
        arrs["kintree_table"][0].astype(np.int64),
    )


@functools.lru_cache(maxsize=2)
def _smplx_model(path: str, num_expression: int):
    import smplx

    return smplx.create(
        path,
        model_type="smplx",
        num_betas=300,
        num_expression_coeffs=num_expression,
        use_pca=False,
        use_face_contour=False,
        ext="npz",
    ).eval()


class SmplxRest:
    """Rest joints and kinematic tree of an SMPL-X model file for a given shape.

    ``SmplxRest(path, betas)``: ``path`` is the ``.npz`` model file, ``betas`` (B,) with
    B <= number of shape components (EMAGE uses 300).
    """

    def __init__(self, model_path: str | os.PathLike, betas=None, *, num_betas: int = 300):
        path = Path(model_path)
        if not path.is_file():
            raise EvalError(f"SMPL-X model file not found: {path}")
        v_template, shapedirs, regressor, parents = _load_rest_arrays(
            str(path.resolve()), num_betas
        )
        parents = parents.copy()
        if regressor.shape[0] < 55:
            raise EvalError(
                f"{path}: key 'J_regressor' must have 55 rows, found {tuple(regressor.shape)}"
            )
        b = torch.zeros(shapedirs.shape[-1])
        if betas is not None:
            arr = to_numpy(betas, "betas").reshape(-1)
            if arr.shape[0] > shapedirs.shape[-1]:
                raise EvalError(
                    f"betas has {arr.shape[0]} values, {path} has {shapedirs.shape[-1]}"
                )
            b[: arr.shape[0]] = torch.as_tensor(arr, dtype=torch.float32)
        # Same contraction order as smplx: blend shapes on the vertices, then regress joints.
        v_shaped = v_template + torch.einsum("l,mkl->mk", b, shapedirs)
        self.joints = torch.einsum("ik,ji->jk", v_shaped, regressor)[:55]
        parents[0] = -1  # uint32 max in the official files
        self.parents = parents[:55]


def smplx_joints(
    poses,
    model: SmplxRest | str | os.PathLike,
    *,
    betas=None,
    variant: Variant = "evaltools",
) -> np.ndarray:
    """Joint positions ``(T, 55, 3)`` float32 (metres) of axis-angle ``poses`` (T, 165)."""
    check_variant(variant)
    rest = model if isinstance(model, SmplxRest) else SmplxRest(model, betas)
    p = to_numpy(poses, "poses")
    if p.ndim != 2 or p.shape[1] != 165:
        raise EvalError(f"poses must be (T, 165) SMPL-X axis-angle, found shape {p.shape}")
    check_finite(p, "poses")
    aa = torch.as_tensor(p, dtype=torch.float32).clone().reshape(-1, 55, 3)
    if variant == "evaltools":
        aa[:, 0] = 0  # global orientation
        aa[:, 22:25] = 0  # jaw, left eye, right eye
    t = aa.shape[0]
    rot = _rodrigues(aa.reshape(-1, 3)).reshape(t, 55, 3, 3)
    j = rest.joints
    rel = j.clone()
    rel[1:] = j[1:] - j[rest.parents[1:]]
    mats = torch.zeros(t, 55, 4, 4)
    mats[..., :3, :3] = rot
    mats[..., :3, 3] = rel
    mats[..., 3, 3] = 1
    chain = [mats[:, 0]]
    for i in range(1, 55):
        chain.append(torch.matmul(chain[int(rest.parents[i])], mats[:, i]))
    return torch.stack(chain, dim=1)[..., :3, 3].numpy()


def face_vertices(
    poses,
    expressions,
    model_path: str | os.PathLike,
    *,
    betas=None,
    batch_size: int = 256,
) -> np.ndarray:
    """SMPL-X vertices ``(T, V*3)`` with only jaw ``poses[:, 66:69]`` and ``expressions``
    (T, 100) non-zero (both references' face-metric convention). Needs ``smplx``."""
    p = to_numpy(poses, "poses")
    e = to_numpy(expressions, "expressions")
    if p.ndim != 2 or p.shape[1] != 165:
        raise EvalError(f"poses must be (T, 165), found shape {p.shape}")
    if e.ndim != 2 or e.shape[0] != p.shape[0]:
        raise EvalError(f"expressions must be ({p.shape[0]}, E), found shape {e.shape}")
    check_finite(p, "poses")
    check_finite(e, "expressions")
    if not Path(model_path).is_file():
        raise EvalError(f"SMPL-X model file not found: {model_path}")
    model = _smplx_model(str(Path(model_path).resolve()), e.shape[1])
    b = torch.zeros(1, 300)
    if betas is not None:
        arr = to_numpy(betas, "betas").reshape(-1)
        b[0, : arr.shape[0]] = torch.as_tensor(arr, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for s in range(0, p.shape[0], batch_size):
            jaw = torch.as_tensor(p[s : s + batch_size, 66:69], dtype=torch.float32)
            n = jaw.shape[0]
            res = model(
                betas=b.expand(n, -1),
                expression=torch.as_tensor(e[s : s + batch_size], dtype=torch.float32),
                jaw_pose=jaw,
                global_orient=torch.zeros(n, 3),
                body_pose=torch.zeros(n, 63),
                left_hand_pose=torch.zeros(n, 45),
                right_hand_pose=torch.zeros(n, 45),
                leye_pose=torch.zeros(n, 3),
                reye_pose=torch.zeros(n, 3),
                transl=torch.zeros(n, 3),
            )
            out.append(res.vertices.reshape(n, -1).numpy())
    return np.concatenate(out)

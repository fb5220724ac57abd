"""SMPL-X forward kinematics through the ``smplx`` package (model files from the user).

SMPL-X model files are licensed, so users pass their own folder (``<root>/smplx/
SMPLX_NEUTRAL.npz`` or the folder holding the npz). :func:`write_synthetic_smplx_model`
writes a stand-in with the right keys and shapes (for tests and demos): its rest joints are
:data:`gesture_data.skeleton.SMPLX_REST`, so ``smplx`` and
:func:`~gesture_data.skeleton.smplx_joints_approx` agree on it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_path
from ..errors import DataError
from ..skeleton import SMPLX_PARENTS, SMPLX_REST


def _model_root(model_path: str | Path) -> Path:
    p = Path(model_path)
    if p.is_file():
        return p.parent.parent if p.parent.name == "smplx" else p.parent
    return p


def smplx_joints(
    poses,
    model_path: str | Path,
    *,
    betas=None,
    trans=None,
    expressions=None,
    gender: str = "neutral",
    batch_size: int = 256,
    num_joints: int = 55,
    flat_hand_mean: bool = True,
) -> np.ndarray:
    """``poses (T, 165)`` axis-angle (BEAT2 layout) -> joints ``(T, num_joints, 3)`` with the
    SMPL-X model at ``model_path``. ``betas (B,)`` is shared over frames; ``trans (T, 3)``.
    ``flat_hand_mean=True`` means a zero hand pose is a flat hand (BEAT2's convention);
    with False the model's mean hand pose is added."""
    import smplx

    poses = np.asarray(poses, np.float32)
    if poses.ndim != 2 or poses.shape[1] != 165:
        raise DataError(
            None, "wrong pose shape", key="poses", expected="(T, 165)", found=poses.shape
        )
    if not np.isfinite(poses).all():
        # the model would return NaN joints for those frames without a word
        raise DataError(None, "non-finite values", key="poses")
    T = poses.shape[0]
    nb = 10 if betas is None else int(np.asarray(betas).shape[-1])
    ne = 10 if expressions is None else int(np.asarray(expressions).shape[-1])
    root = _model_root(model_path)
    try:
        model = smplx.create(
            str(root),
            model_type="smplx",
            gender=gender,
            use_pca=False,
            num_betas=nb,
            num_expression_coeffs=ne,
            flat_hand_mean=flat_hand_mean,
            use_face_contour=False,
            ext="npz",
            batch_size=1,
        )
    except (
        OSError,
        AssertionError,
        KeyError,
        ValueError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
    ) as e:
        raise DataError(root, f"cannot load SMPL-X model: {type(e).__name__}: {e}") from None
    out = []
    b = (
        torch.zeros(1, nb)
        if betas is None
        else torch.as_tensor(np.asarray(betas, np.float32)[:nb]).reshape(1, nb)
    )
    with torch.no_grad():
        for s in range(0, T, batch_size):
            p = torch.from_numpy(poses[s : s + batch_size])
            n = p.shape[0]
            kw = dict(
                global_orient=p[:, 0:3],
                body_pose=p[:, 3:66],
                jaw_pose=p[:, 66:69],
                leye_pose=p[:, 69:72],
                reye_pose=p[:, 72:75],
                left_hand_pose=p[:, 75:120],
                right_hand_pose=p[:, 120:165],
                betas=b.expand(n, -1),
                expression=torch.zeros(n, ne)
                if expressions is None
                else torch.as_tensor(np.asarray(expressions[s : s + n], np.float32)),
            )
            if trans is not None:
                kw["transl"] = torch.as_tensor(np.asarray(trans[s : s + n], np.float32))
            res = model(**kw, return_verts=False)
            out.append(res.joints[:, :num_joints].numpy())
    return np.concatenate(out, 0)


def write_synthetic_smplx_model(root: str | Path, num_vertices: int = 10475) -> Path:
    """Write ``root/smplx/SMPLX_NEUTRAL.npz``: a stand-in SMPL-X model with the real keys
    and shapes (``v_template (V,3)``, ``f``, ``shapedirs (V,3,400)``, ``posedirs (V,3,486)``,
    ``J_regressor (55,V)``, ``weights (V,55)``, ``kintree_table (2,55)``, hand PCA and
    landmark arrays). Vertex j < 55 sits at joint j's rest position and ``J_regressor``
    picks it, so rest joints equal ``SMPLX_REST``. ``num_vertices`` must be >= 9930
    because ``smplx`` hard-codes vertex ids."""
    if num_vertices < 9930:
        raise ValueError("smplx needs at least 9930 vertices")
    V = num_vertices
    rng = np.random.default_rng(0)
    v = np.zeros((V, 3), np.float32)
    v[:55] = SMPLX_REST
    v[55:] = SMPLX_REST[rng.integers(0, 55, V - 55)] + rng.normal(0, 0.02, (V - 55, 3))
    jreg = np.zeros((55, V), np.float32)
    jreg[np.arange(55), np.arange(55)] = 1.0
    weights = np.zeros((V, 55), np.float32)
    weights[np.arange(55), np.arange(55)] = 1.0
    weights[55:, 0] = 1.0
    parents = np.array(SMPLX_PARENTS, np.int64)
    parents[0] = 4294967295  # as in the real files (uint32 -1)
    faces = np.stack([np.arange(0, 300), np.arange(1, 301), np.arange(2, 302)], 1) % V
    arrays = dict(
        v_template=v,
        f=faces.astype(np.int32),
        shapedirs=np.zeros((V, 3, 400), np.float32),
        posedirs=np.zeros((V, 3, 486), np.float32),
        J_regressor=jreg,
        weights=weights,
        kintree_table=np.stack([parents, np.arange(55)]).astype(np.int64),
        hands_componentsl=np.eye(45, dtype=np.float32),
        hands_componentsr=np.eye(45, dtype=np.float32),
        hands_meanl=np.zeros(45, np.float32),
        hands_meanr=np.zeros(45, np.float32),
        lmk_faces_idx=np.zeros(51, np.int64),
        lmk_bary_coords=np.full((51, 3), 1 / 3, np.float32),
        dynamic_lmk_faces_idx=np.zeros((79, 17), np.int64),
        dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3, np.float32),
    )
    path = Path(root) / "smplx" / "SMPLX_NEUTRAL.npz"
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path

"""KTubeUM construction as library functions.

Input is what monocular SMPL-X estimators (OSX / Hand4Whole style) write: one JSON per
video frame with ``smplx_root_pose (3)``, ``smplx_body_pose (63)``, ``smplx_lhand_pose
(45)``, ``smplx_rhand_pose (45)``, ``smplx_jaw_pose (3)``, ``smplx_shape (10)``,
``smplx_expr (10)`` and ``cam_trans (3)`` (nested lists are flattened). KTubeUM's own raw
json is not public; this is the format its README describes.

Pipeline: :func:`read_pose_jsons` -> :func:`pose_json_to_npz` (root fixed across frames,
zero-phase Butterworth low-pass on 6D rotations against estimator jitter, BEAT2-style npz)
-> :func:`~gesture_data.datasets.smplx_model.smplx_joints` -> first 22 joints ->
:func:`~gesture_data.datasets.humanml3d.write_dataset` (263-d vectors, Mean/Std, splits).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, filtfilt

from .._io import atomic_path
from ..errors import DataError
from ..rotations import axis_angle_to_6d, rot6d_to_axis_angle

KEYS = {
    "smplx_root_pose": 3,
    "smplx_body_pose": 63,
    "smplx_lhand_pose": 45,
    "smplx_rhand_pose": 45,
    "smplx_jaw_pose": 3,
    "smplx_shape": 10,
    "smplx_expr": 10,
    "cam_trans": 3,
}


def _frame_number(p: Path) -> tuple:
    nums = re.findall(r"\d+", p.stem)
    return (int(nums[-1]) if nums else -1, p.name)


def read_pose_jsons(files_or_dir) -> dict[str, np.ndarray]:
    """Per-frame json files (or a folder of them, ordered by the last number in the name)
    -> ``{key: (T, dim)}`` float32."""
    if isinstance(files_or_dir, str | Path):
        if not Path(files_or_dir).is_dir():
            raise DataError(files_or_dir, "no pose json files (folder missing)")
        files = sorted(Path(files_or_dir).glob("*.json"), key=_frame_number)
    else:
        files = [Path(f) for f in files_or_dir]
    if not files:
        raise DataError(
            files_or_dir if isinstance(files_or_dir, str | Path) else None, "no pose json files"
        )
    out = {k: [] for k in KEYS}
    for f in files:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f, "pose json missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f, f"corrupt or truncated json: {e}") from None
        if not isinstance(d, dict):
            raise DataError(
                f, "top level must be an object", expected="dict", found=type(d).__name__
            )
        for k, dim in KEYS.items():
            if k not in d:
                raise DataError(f, "key missing", key=k, expected=f"{dim} values", found=None)
            try:
                raw = np.asarray(d[k])
            except (TypeError, ValueError):
                raise DataError(f, "not numeric", key=k) from None
            # bools and nulls would otherwise turn into 1.0 / NaN without a word
            if raw.dtype.kind not in "fi":
                raise DataError(f, "not numeric", key=k, expected="numbers", found=raw.dtype)
            a = raw.astype(np.float64).reshape(-1)
            if a.size != dim:
                raise DataError(f, "wrong size", key=k, expected=dim, found=a.size)
            if not np.isfinite(a).all() or np.abs(a).max(initial=0) > 1e30:
                raise DataError(f, "non-finite or absurd values", key=k)
            out[k].append(a.astype(np.float32))
    return {k: np.stack(v) for k, v in out.items()}


def lowpass_rotations(aa: np.ndarray, fps: float, cutoff_hz: float, order: int = 4):
    """Zero-phase Butterworth low-pass of axis-angle ``(T, J*3)`` done on the 6D form (no
    wrap-around at +-pi), re-orthonormalised back to axis-angle."""
    T = aa.shape[0]
    if cutoff_hz <= 0 or cutoff_hz >= fps / 2 or 3 * (order + 1) > T:
        return aa
    d6 = axis_angle_to_6d(torch.from_numpy(aa).double()).numpy()
    b, a = butter(order, cutoff_hz / (fps / 2))
    d6 = filtfilt(b, a, d6, axis=0, padlen=min(3 * max(len(a), len(b)), T - 1))
    return (
        rot6d_to_axis_angle(torch.from_numpy(np.ascontiguousarray(d6))).numpy().astype(np.float32)
    )


def pose_json_to_npz(
    files_or_dir,
    out_path: str | Path,
    *,
    fps: float = 30.0,
    cutoff_hz: float = 6.0,
    fix_root: bool = True,
    root_height: float = 1.3,
) -> dict[str, np.ndarray]:
    """Per-frame estimator json -> BEAT2-layout npz (``poses (T,165)``, ``trans``,
    ``expressions``, ``betas``, ``mocap_frame_rate``), written atomically; returns the arrays.

    With ``fix_root`` the root orientation is the first frame's for every frame and the
    translation constant (``(0, root_height, 0)``): a monocular camera's depth and global
    rotation estimates are too noisy for a seated/standing speaker. Rotations are
    low-passed at ``cutoff_hz``; body shape is the median over frames."""
    d = read_pose_jsons(files_or_dir)
    T = d["smplx_body_pose"].shape[0]
    poses = np.zeros((T, 165), np.float32)
    poses[:, 0:3] = d["smplx_root_pose"]
    poses[:, 3:66] = d["smplx_body_pose"]
    poses[:, 66:69] = d["smplx_jaw_pose"]
    poses[:, 75:120] = d["smplx_lhand_pose"]
    poses[:, 120:165] = d["smplx_rhand_pose"]
    poses = lowpass_rotations(poses, fps, cutoff_hz)
    if fix_root:
        poses[:, 0:3] = poses[0, 0:3]
        trans = np.tile(np.array([0.0, root_height, 0.0]), (T, 1))
    else:
        trans = d["cam_trans"].astype(np.float64)
    betas = np.zeros(300, np.float32)
    betas[:10] = np.median(d["smplx_shape"], axis=0)
    out = dict(
        poses=poses,
        trans=trans,
        expressions=d["smplx_expr"].astype(np.float64),
        betas=betas,
        model=np.array("smplx2020"),
        gender=np.array("neutral"),
        mocap_frame_rate=np.int32(round(fps)),
    )
    with atomic_path(out_path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
    return out


def npz_to_humanml3d_joints(
    poses: np.ndarray,
    model_path,
    betas=None,
    *,
    src_fps=30.0,
    dst_fps=20.0,
    target_offsets=None,
) -> np.ndarray:
    """SMPL-X poses ``(T, 165)`` -> HumanML3D's 22 joints ``(T', 22, 3)`` at ``dst_fps``
    (linear interpolation in time), through the user's SMPL-X model; re-targeted to
    ``target_offsets (22, 3)`` (see :func:`humanml3d.uniform_skeleton`) when given."""
    from .humanml3d import uniform_skeleton
    from .smplx_model import smplx_joints

    j = smplx_joints(poses, model_path, betas=None if betas is None else betas[:10])[:, :22]
    if target_offsets is not None:
        j = uniform_skeleton(j, target_offsets).astype(np.float32)
    if src_fps == dst_fps:
        return j
    t_old = np.arange(j.shape[0]) / src_fps
    t_new = np.arange(int(np.floor(t_old[-1] * dst_fps)) + 1) / dst_fps
    flat = j.reshape(j.shape[0], -1)
    out = np.stack([np.interp(t_new, t_old, flat[:, i]) for i in range(flat.shape[1])], 1)
    return out.reshape(-1, 22, 3).astype(np.float32)

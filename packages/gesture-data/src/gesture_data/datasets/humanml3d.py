"""The HumanML3D 263-d motion representation (used by KTubeUM) and its inverse, plus the
dataset's files (Mean/Std, split lists, captions).

Layout of one 263-d frame for 22 joints (``T`` input frames give ``T-1`` feature frames)::

    [0]        root angular velocity about Y (half-angle per frame, as HumanML3D stores it)
    [1:3]      root linear velocity (x, z) in the root's facing frame
    [3]        root height
    [4:67]     21 joints relative to the root, facing frame (rotation-invariant coords)
    [67:193]   21 local joint rotations, 6D (first two matrix columns, HumanML3D's own
               convention, unlike gesture_data.rotations which uses rows like GestureLSM)
    [193:259]  22 joint velocities in the facing frame
    [259:263]  foot contacts (left ankle, left toe, right ankle, right toe)

:func:`joints_to_features` follows HumanML3D's ``process_file`` from the floor step on:
put on the floor, move the first root to the origin, face +Z, contacts with threshold
0.002, inverse kinematics on HumanML3D's unit rest directions with the facing direction
smoothed over time (Gaussian, sigma 20 frames). Re-targeting to a reference skeleton (HumanML3D's
``uniform_skeleton``, done before all that) is :func:`uniform_skeleton`.

Checked on the HumanML3D sample 012314: ``recover_from_ric`` reproduces ``new_joints``
exactly; joints -> 263 -> joints round-trips to < 1e-6 m; and ``joints_to_features`` of
``new_joints`` reproduces the published ``new_joint_vecs`` to < 1e-5 on the first 100
frames (all 263 channels). Near the end the two drift apart (up to 0.013 on the last
frame) because the published vector was computed on one more source frame, which changes
the edge of the sigma-20 smoothing of the facing direction. That match needs HumanML3D's
swapped hip order in its inverse kinematics (see :func:`_facing`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from .._io import write_text_atomic
from ..errors import DataError

log = logging.getLogger(__name__)

# HumanML3D ("t2m") 22-joint skeleton: chains and unit rest directions per joint.
KINEMATIC_CHAIN = [
    [0, 2, 5, 8, 11],
    [0, 1, 4, 7, 10],
    [0, 3, 6, 9, 12, 15],
    [9, 14, 17, 19, 21],
    [9, 13, 16, 18, 20],
]
RAW_OFFSETS = np.array(
    [
        [0, 0, 0],
        [1, 0, 0],
        [-1, 0, 0],
        [0, 1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, 1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, 1, 0],
        [0, 0, 1],
        [0, 0, 1],
        [0, 1, 0],
        [1, 0, 0],
        [-1, 0, 0],
        [0, 0, 1],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
    ],
    dtype=np.float64,
)
FACE_JOINTS = (2, 1, 17, 16)  # right hip, left hip, right shoulder, left shoulder
FEET_LEFT, FEET_RIGHT = (7, 10), (8, 11)
FPS = 20


def feature_dim(joints_num: int = 22) -> int:
    return 4 + (joints_num - 1) * 9 + joints_num * 3 + 4


# --- quaternions (w, x, y, z), numpy or torch ------------------------------------------
def _cross(a, b):
    return torch.cross(a, b, dim=-1) if isinstance(a, torch.Tensor) else np.cross(a, b)


def qrot(q, v):
    """Rotate vectors ``(..., 3)`` by unit quaternions ``(..., 4)``."""
    qv = q[..., 1:]
    uv = _cross(qv, v)
    uuv = _cross(qv, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def qinv(q):
    s = (
        torch.tensor([1, -1, -1, -1], dtype=q.dtype)
        if isinstance(q, torch.Tensor)
        else np.array([1, -1, -1, -1], dtype=q.dtype)
    )
    return q * s


def qmul(a, b):
    aw, ax, ay, az = (a[..., i] for i in range(4))
    bw, bx, by, bz = (b[..., i] for i in range(4))
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def qbetween(v0, v1):
    """Quaternion rotating direction ``v0`` onto ``v1`` (both ``(..., 3)``)."""
    v = np.cross(v0, v1)
    w = np.sqrt((v0**2).sum(-1) * (v1**2).sum(-1)) + (v0 * v1).sum(-1)
    q = np.concatenate([w[..., None], v], axis=-1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q):
    w, x, y, z = (q[..., i] for i in range(4))
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


# --- inverse -----------------------------------------------------------------------------
def recover_root_rot_pos(data):
    """Root yaw quaternions ``(..., T, 4)`` and root positions ``(..., T, 3)`` from features."""
    is_t = isinstance(data, torch.Tensor)
    lib = torch if is_t else np
    rot_vel = data[..., 0]
    ang = lib.zeros_like(rot_vel)
    ang[..., 1:] = rot_vel[..., :-1]
    ang = lib.cumsum(ang, -1) if not is_t else torch.cumsum(ang, dim=-1)
    quat = lib.zeros((*data.shape[:-1], 4), dtype=data.dtype)
    quat[..., 0] = lib.cos(ang)
    quat[..., 2] = lib.sin(ang)
    pos = lib.zeros((*data.shape[:-1], 3), dtype=data.dtype)
    pos[..., 1:, 0] = data[..., :-1, 1]
    pos[..., 1:, 2] = data[..., :-1, 2]
    pos = qrot(qinv(quat), pos)
    pos = torch.cumsum(pos, dim=-2) if is_t else np.cumsum(pos, axis=-2)
    pos[..., 1] = data[..., 3]
    return quat, pos


def recover_from_ric(features, joints_num: int = 22):
    """``(..., T, 263)`` features -> ``(..., T, joints_num, 3)`` joint positions (numpy or
    torch in, same out): integrate the root yaw and velocity, un-rotate the root-relative
    joints and add the root."""
    if not isinstance(features, torch.Tensor):
        features = np.asarray(features)
        if features.dtype.kind not in "fiu":
            raise DataError(
                None, "not real numbers", key="features", expected="float", found=features.dtype
            )
        features = features.astype(np.float64) if features.dtype.kind != "f" else features
    if features.ndim < 2 or features.shape[-1] != feature_dim(joints_num):
        raise DataError(
            None,
            "wrong feature size",
            key="features",
            expected=feature_dim(joints_num),
            found=tuple(features.shape),
        )
    finite = torch.isfinite(features).all() if isinstance(features, torch.Tensor) else None
    if not (bool(finite) if finite is not None else np.isfinite(features).all()):
        raise DataError(None, "non-finite values", key="features")
    quat, rpos = recover_root_rot_pos(features)
    pos = features[..., 4 : (joints_num - 1) * 3 + 4]
    pos = pos.reshape(*pos.shape[:-1], joints_num - 1, 3)
    qi = qinv(quat)[..., None, :]
    qi = (
        qi.expand(*pos.shape[:-1], 4)
        if isinstance(qi, torch.Tensor)
        else np.broadcast_to(qi, (*pos.shape[:-1], 4))
    )
    pos = qrot(qi, pos)
    pos[..., 0] = pos[..., 0] + rpos[..., None, 0]
    pos[..., 2] = pos[..., 2] + rpos[..., None, 2]
    root = rpos[..., None, :]
    if isinstance(pos, torch.Tensor):
        return torch.cat([root, pos], dim=-2)
    return np.concatenate([root, pos], axis=-2)


# --- forward -----------------------------------------------------------------------------
def _facing(joints: np.ndarray, hips_swapped: bool = False) -> np.ndarray:
    """Facing direction (horizontal) from the hip and shoulder lines.

    ``hips_swapped`` reproduces HumanML3D's inverse kinematics, which unpacks the face
    joints as ``l_hip, r_hip, ...``, so its hip line points the other way and largely
    cancels the shoulder line. The root yaw, and every channel in the root's frame, depend
    on it, so :func:`joints_to_features` uses it to match the published vectors."""
    r_hip, l_hip, sdr_r, sdr_l = FACE_JOINTS
    if hips_swapped:
        r_hip, l_hip = l_hip, r_hip
    across = (joints[..., r_hip, :] - joints[..., l_hip, :]) + (
        joints[..., sdr_r, :] - joints[..., sdr_l, :]
    )
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    fwd = np.cross(np.array([0.0, 1.0, 0.0]), across)
    return fwd


def inverse_kinematics(
    joints: np.ndarray, smooth_sigma: float = 20.0, hips_swapped: bool = True
) -> np.ndarray:
    """Local joint quaternions ``(T, 22, 4)`` on the unit rest directions; the root's is
    the yaw that turns the (smoothed) facing direction to +Z, identity on frame 0 as in
    HumanML3D (``hips_swapped`` as in HumanML3D, see :func:`_facing`)."""
    fwd = _facing(joints, hips_swapped)
    if smooth_sigma:
        fwd = gaussian_filter1d(fwd, smooth_sigma, axis=0, mode="nearest")
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    root = qbetween(fwd, np.broadcast_to([0.0, 0.0, 1.0], fwd.shape))
    root[0] = [1.0, 0.0, 0.0, 0.0]
    quats = np.zeros((*joints.shape[:-1], 4))
    quats[..., 0] = 1.0
    quats[:, 0] = root
    for chain in KINEMATIC_CHAIN:
        R = root
        for a, b in itertools.pairwise(chain):
            u = np.broadcast_to(RAW_OFFSETS[b], joints[:, b].shape)
            v = joints[:, b] - joints[:, a]
            v = v / np.linalg.norm(v, axis=-1, keepdims=True)
            local = qmul(qinv(R), qbetween(u, v))
            quats[:, b] = local
            R = qmul(R, local)
    return quats


PARENTS = [-1] * 22
for _chain in KINEMATIC_CHAIN:
    for _a, _b in itertools.pairwise(_chain):
        PARENTS[_b] = _a


def skeleton_offsets(joints: np.ndarray) -> np.ndarray:
    """``(22, 3)`` offsets of one pose ``(22, 3)`` in HumanML3D's form: each joint's unit
    rest direction times its bone length (what ``uniform_skeleton`` re-targets to)."""
    joints = np.asarray(joints, np.float64)
    off = np.zeros((22, 3))
    for j, p in enumerate(PARENTS):
        if p >= 0:
            off[j] = RAW_OFFSETS[j] * np.linalg.norm(joints[j] - joints[p])
    return off


def uniform_skeleton(positions: np.ndarray, target_offsets: np.ndarray) -> np.ndarray:
    """Re-target ``(T, 22, 3)`` joints to bone lengths ``target_offsets (22, 3)`` (e.g.
    :func:`skeleton_offsets` of HumanML3D's reference pose) keeping every bone's direction;
    the root path is scaled by the leg-length ratio, as HumanML3D's first step does."""
    pos = np.asarray(positions, np.float64)
    tgt = np.asarray(target_offsets, np.float64)
    src = skeleton_offsets(pos[0])
    leg = lambda o: np.abs(o[5]).max() + np.abs(o[8]).max()  # noqa: E731 - knee + ankle
    scale = leg(tgt) / leg(src)
    quats = inverse_kinematics(pos, smooth_sigma=0.0)
    out = np.zeros_like(pos)
    out[:, 0] = pos[:, 0] * scale
    for chain in KINEMATIC_CHAIN:
        R = quats[:, 0]
        for a, b in itertools.pairwise(chain):
            R = qmul(R, quats[:, b])
            out[:, b] = qrot(R, np.broadcast_to(tgt[b], out[:, b].shape)) + out[:, a]
    return out


def canonicalize(joints: np.ndarray) -> np.ndarray:
    """Floor at y=0, first root at the xz origin, first frame facing +Z. ``(T, J, 3)``."""
    pos = np.array(joints, dtype=np.float64)
    pos[..., 1] -= pos[..., 1].min()
    pos -= pos[0, 0] * np.array([1.0, 0.0, 1.0])
    fwd = _facing(pos[0])
    fwd = fwd / np.linalg.norm(fwd)
    q = qbetween(fwd, np.array([0.0, 0.0, 1.0]))
    return qrot(np.broadcast_to(q, (*pos.shape[:-1], 4)), pos)


def joints_to_features(
    joints, feet_threshold: float = 0.002, hips_swapped: bool = True
) -> np.ndarray:
    """``(T, 22, 3)`` joint positions (metres, Y up) -> ``(T-1, 263)`` HumanML3D features.
    ``hips_swapped=True`` (default) reproduces HumanML3D's published vectors; False uses
    the geometrically intended facing direction (the inverse works either way)."""
    try:
        joints = np.asarray(joints, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(None, f"not real numbers: {e}", key="joints") from None
    if joints.ndim != 3 or joints.shape[1:] != (22, 3) or joints.shape[0] < 2:
        raise DataError(
            None, "wrong joints shape", key="joints", expected="(T>=2, 22, 3)", found=joints.shape
        )
    if not np.isfinite(joints).all():
        raise DataError(None, "non-finite joint positions", key="joints")
    pos = canonicalize(joints)
    n = pos.shape[1]
    sq = lambda ids: ((pos[1:, ids] - pos[:-1, ids]) ** 2).sum(-1)  # noqa: E731
    feet_l = (sq(list(FEET_LEFT)) < feet_threshold).astype(np.float64)
    feet_r = (sq(list(FEET_RIGHT)) < feet_threshold).astype(np.float64)
    glob = pos.copy()
    quats = inverse_kinematics(pos, hips_swapped=hips_swapped)
    r_rot = quats[:, 0]
    mats = quat_to_matrix(quats)
    cont6d = np.concatenate([mats[..., 0], mats[..., 1]], axis=-1)  # (T, 22, 6) columns
    vel = qrot(r_rot[1:], pos[1:, 0] - pos[:-1, 0])
    r_vel = qmul(r_rot[1:], qinv(r_rot[:-1]))
    rel = pos.copy()
    rel[..., 0] -= rel[:, :1, 0]
    rel[..., 2] -= rel[:, :1, 2]
    rel = qrot(np.broadcast_to(r_rot[:, None], (*rel.shape[:-1], 4)), rel)
    root_data = np.concatenate(
        [np.arcsin(np.clip(r_vel[:, 2:3], -1, 1)), vel[:, [0, 2]], rel[:-1, 0, 1:2]], axis=-1
    )
    ric = rel[:-1, 1:].reshape(len(rel) - 1, -1)
    rot = cont6d[:-1, 1:].reshape(len(rel) - 1, -1)
    lvel = qrot(np.broadcast_to(r_rot[:-1, None], (*glob[1:].shape[:-1], 4)), glob[1:] - glob[:-1])
    lvel = lvel.reshape(len(lvel), -1)
    out = np.concatenate([root_data, ric, rot, lvel, feet_l, feet_r], axis=-1)
    assert out.shape[-1] == feature_dim(n)
    return out.astype(np.float32)


def mean_std(
    features: list[np.ndarray],
    joints_num: int = 22,
    feet_bias: float = 5.0,
    min_std: float = 1e-4,
):
    """HumanML3D's Mean/Std: per-channel mean; std averaged within each feature group
    (root yaw vel, root xz vel, root y, ric, rot, local vel, feet), feet std / ``feet_bias``.
    A group that never varies (feet always on the floor for a seated speaker) gets
    ``min_std`` instead of 0, so normalising it cannot divide by zero."""
    d = feature_dim(joints_num)
    arrays = [np.asarray(f, np.float64) for f in features]
    if not arrays:
        raise DataError(None, "no feature arrays", key="features", expected=f"(T, {d}) arrays")
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != d:
            raise DataError(
                None, f"array {i}: wrong shape", key="features", expected=("T", d), found=a.shape
            )
        if not np.isfinite(a).all():
            raise DataError(None, f"array {i}: non-finite values", key="features")
    x = np.concatenate(arrays, axis=0)
    mean, std = x.mean(0), x.std(0)
    j = joints_num
    bounds = [0, 1, 3, 4, 4 + (j - 1) * 3, 4 + (j - 1) * 9, 4 + (j - 1) * 9 + j * 3, x.shape[1]]
    for a, b in itertools.pairwise(bounds):
        std[a:b] = std[a:b].mean()
    std[bounds[-2] :] /= feet_bias
    std = np.maximum(std, min_std)
    return mean.astype(np.float32), std.astype(np.float32)


# --- dataset files -------------------------------------------------------------------------
@dataclass
class Caption:
    caption: str
    tokens: list[str]
    start: float = 0.0
    end: float = 0.0

    def line(self) -> str:
        return f"{self.caption}#{' '.join(self.tokens)}#{self.start}#{self.end}"


def parse_caption_line(line: str, path=None) -> Caption:
    """``caption#tok/POS tok/POS#start#end`` -> :class:`Caption`."""
    parts = line.rstrip("\n").split("#")
    if len(parts) != 4:
        raise DataError(
            path, f"caption line needs 4 '#' fields: {line!r}", expected=4, found=len(parts)
        )
    try:
        s, e = float(parts[2] or 0), float(parts[3] or 0)
    except ValueError:
        raise DataError(path, f"bad start/end in {line!r}") from None
    s, e = (0.0 if np.isnan(s) else s), (0.0 if np.isnan(e) else e)
    # 0/0 means "the whole clip" in HumanML3D; otherwise the span must go forwards
    if s < 0 or e < 0 or (e > 0 and e <= s):
        raise DataError(path, f"bad caption span in {line!r}", key="start/end", found=(s, e))
    return Caption(parts[0], parts[1].split(), s, e)


def write_split(root: str | Path, name: str, ids: list[str]) -> None:
    write_text_atomic(Path(root) / f"{name}.txt", "".join(f"{i}\n" for i in ids))


def read_split(root: str | Path, name: str) -> list[str]:
    p = Path(root) / f"{name}.txt"
    return [ln.strip() for ln in _read_text(p, "split file").splitlines() if ln.strip()]


def _read_text(p: Path, what: str) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(p, f"{what} missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(p, f"cannot read {what}: {type(e).__name__}: {e}") from None


def write_texts(root: str | Path, clip_id: str, captions: list[Caption]) -> None:
    write_text_atomic(
        Path(root) / "texts" / f"{clip_id}.txt", "".join(c.line() + "\n" for c in captions)
    )


def read_texts(root: str | Path, clip_id: str) -> list[Caption]:
    p = Path(root) / "texts" / f"{clip_id}.txt"
    text = _read_text(p, "caption file")
    return [parse_caption_line(ln, p) for ln in text.splitlines() if ln.strip()]


def _load_npy(p: Path, shape_tail: tuple, key: str) -> np.ndarray:
    if not p.exists():
        raise DataError(p, f"{key} file missing")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(p, f"corrupt npy: {e}") from None
    if not isinstance(a, np.ndarray):
        raise DataError(p, "not an .npy array", key=key, expected="npy", found=type(a).__name__)
    if a.dtype.kind not in "fiu":
        raise DataError(p, "not real numbers", key=key, expected="float", found=a.dtype)
    if a.ndim != len(shape_tail) + 1 or a.shape[1:] != shape_tail:
        raise DataError(p, "wrong shape", key=key, expected=("T", *shape_tail), found=a.shape)
    if a.shape[0] == 0:
        raise DataError(p, "no frames", key=key, expected="T > 0", found=a.shape)
    if not np.isfinite(a).all():
        raise DataError(p, "non-finite values", key=key)
    return a


def write_dataset(
    root: str | Path,
    motions: dict[str, np.ndarray],
    captions=None,
    splits: dict[str, list[str]] | None = None,
) -> Path:
    """Write a HumanML3D-format dataset from ``{id: joints (T, 22, 3)}``: new_joints,
    new_joint_vecs, Mean/Std, texts and split files (``all`` is always written)."""
    root = Path(root)
    feats = {}
    for cid, j in motions.items():
        f = joints_to_features(j)
        feats[cid] = f
        for sub, arr in (
            ("new_joint_vecs", f),
            ("new_joints", recover_from_ric(f.astype(np.float64)).astype(np.float32)),
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
            _save_npy(root / sub / f"{cid}.npy", arr)
    mean, std = mean_std(list(feats.values()))
    _save_npy(root / "Mean.npy", mean)
    _save_npy(root / "Std.npy", std)
    for cid, caps in (captions or {}).items():
        write_texts(root, cid, caps)
    splits = dict(splits or {})
    splits.setdefault("all", sorted(motions))
    for name, ids in splits.items():
        write_split(root, name, ids)
    return root


def _save_npy(path: Path, arr: np.ndarray) -> None:
    from .._io import atomic_path

    with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


class HumanML3DReader:
    """Reader for a finished HumanML3D-format dataset (HumanML3D itself or KTubeUM)."""

    def __init__(self, root: str | Path, joints_num: int = 22):
        self.root = Path(root)
        self.joints_num = joints_num
        d = feature_dim(joints_num)
        have = [(self.root / f"{n}.npy").exists() for n in ("Mean", "Std")]
        if have[0] != have[1]:
            # normalising with a mean and no std (or the reverse) is never what was meant
            missing = self.root / ("Std.npy" if have[0] else "Mean.npy")
            raise DataError(missing, "Mean.npy and Std.npy come as a pair; this one is missing")
        for name in ("Mean", "Std"):
            p = self.root / f"{name}.npy"
            if not p.exists():
                setattr(self, name.lower(), None)
                continue
            try:
                a = np.load(p, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DataError(p, f"corrupt npy: {e}", key=name) from None
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
                raise DataError(p, "not a float array", key=name)
            if a.shape != (d,):
                raise DataError(p, "wrong shape", key=name, expected=(d,), found=a.shape)
            if not np.isfinite(a).all() or (name == "Std" and (a <= 0).any()):
                bad = np.flatnonzero(~np.isfinite(a) | ((a <= 0) if name == "Std" else False))
                raise DataError(
                    p,
                    f"non-finite{' or non-positive' if name == 'Std' else ''} values "
                    f"(first at channel {int(bad[0])})",
                    key=name,
                    found=float(a[bad[0]]),
                )
            setattr(self, name.lower(), a)

    def ids(self, split: str = "all") -> list[str]:
        return read_split(self.root, split)

    def features(self, clip_id: str) -> np.ndarray:
        """``(T, 263)`` float32."""
        return _load_npy(
            self.root / "new_joint_vecs" / f"{clip_id}.npy",
            (feature_dim(self.joints_num),),
            "new_joint_vecs",
        )

    def joints(self, clip_id: str) -> np.ndarray:
        """``(T, 22, 3)``."""
        return _load_npy(
            self.root / "new_joints" / f"{clip_id}.npy", (self.joints_num, 3), "new_joints"
        )

    def texts(self, clip_id: str) -> list[Caption]:
        return read_texts(self.root, clip_id)


def make_splits(
    ids: list[str], *, seed: int = 0, val: float = 0.05, test: float = 0.15
) -> dict[str, list[str]]:
    """Random, seeded ``train``/``val``/``test`` plus ``train_val`` and ``all`` lists (the
    files KTubeUM's README lists), each sorted."""
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_test, n_val = round(len(ids) * test), round(len(ids) * val)
    te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {
        "train": sorted(tr),
        "val": sorted(va),
        "test": sorted(te),
        "train_val": sorted(tr + va),
        "all": sorted(ids),
    }


def make_caption(text: str, language: str = "en", start: float = 0.0, end: float = 0.0) -> Caption:
    """A caption line's fields from raw text. Korean is split into morphemes with POS tags
    by kiwipiepy (``form/TAG``); other languages get lower-cased word tokens tagged ``X``
    (HumanML3D used spaCy tags; pass your own :class:`Caption` for those)."""
    if language == "ko":
        from ..features.text import korean_morphemes

        tokens = [f"{f}/{t}" for f, t in korean_morphemes(text)]
    else:
        import re

        tokens = [f"{w}/X" for w in re.findall(r"[\w']+", text.lower())]
    return Caption(text.strip(), tokens, start, end)

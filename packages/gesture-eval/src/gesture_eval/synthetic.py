"""Deterministic synthetic inputs for tests, benchmarks and parity recordings.

Every generator takes a ``seed`` (or a ``numpy.random.Generator``) so the same call always
returns the same arrays; the parity values asserted in the tests were recorded by running the
reference implementations on exactly these arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "click_track",
    "gaussian_features",
    "random_axis_angle",
    "random_walk_joints",
    "synthetic_mean_velocity",
]


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def random_walk_joints(
    num_frames: int, num_joints: int = 55, *, fps: int = 30, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Joint positions ``(T, J, 3)`` float32 in metres from a speed-modulated random walk.

    The step size of each joint follows a slow periodic envelope, so the joint speed has
    clear local minima and regularly drops below the BC speed thresholds (0.1 / 0.3 of the
    mean speed); that makes the BC index-offset quirk observable.
    """
    rng = _rng(seed)
    t = np.arange(num_frames) / fps
    period = rng.uniform(0.6, 1.6, size=(1, num_joints, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(1, num_joints, 1))
    envelope = (
        0.002 + 0.03 * (0.5 + 0.5 * np.sin(2 * np.pi * t[:, None, None] / period + phase)) ** 4
    )
    steps = rng.standard_normal((num_frames, num_joints, 3)) * envelope
    start = rng.uniform(-0.5, 0.5, size=(1, num_joints, 3))
    return (start + np.cumsum(steps, axis=0)).astype(np.float32)


def synthetic_mean_velocity(
    num_joints: int = 55, *, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """A per-joint mean speed vector ``(J,)`` float32 in the range of BEAT2's file (0.05-0.4)."""
    rng = _rng(seed)
    return (0.05 + 0.35 * rng.random(num_joints)).astype(np.float32)


def click_track(
    seconds: float,
    *,
    sample_rate: int = 16000,
    interval: float = 0.5,
    jitter: float = 0.1,
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A click-track ``(N,)`` float32 and its click times in seconds.

    Clicks are 15 ms decaying noise bursts roughly every ``interval`` s (uniform jitter),
    over a quiet noise floor, so librosa's onset detector fires on (most) clicks.
    """
    rng = _rng(seed)
    n = round(seconds * sample_rate)
    audio = 0.002 * rng.standard_normal(n)
    times = []
    t = 0.25
    while t < seconds - 0.1:
        times.append(t)
        t += interval + rng.uniform(-jitter, jitter)
    burst_len = int(0.015 * sample_rate)
    decay = np.exp(-np.arange(burst_len) / (0.003 * sample_rate))
    for click in times:
        i = int(click * sample_rate)
        seg = slice(i, min(n, i + burst_len))
        m = seg.stop - seg.start
        audio[seg] += 0.5 * decay[:m] * rng.standard_normal(m)
    return audio.astype(np.float32), np.asarray(times)


def gaussian_features(
    num: int, dim: int, *, shift: float = 0.0, mix: float = 0.0, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Gaussian features ``(num, dim)`` float32: ``N(shift, I)`` mixed by a random matrix.

    ``mix`` > 0 correlates the dimensions (``x @ (I + mix * W)``), giving a non-diagonal
    covariance.
    """
    rng = _rng(seed)
    x = rng.standard_normal((num, dim))
    if mix:
        x = x @ (np.eye(dim) + mix * rng.standard_normal((dim, dim)))
    return (x + shift).astype(np.float32)


def random_axis_angle(
    num_frames: int,
    num_joints: int = 55,
    *,
    scale: float = 0.5,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Smooth random axis-angle poses ``(T, J*3)`` float32 (a scaled random walk, wrapped)."""
    rng = _rng(seed)
    base = rng.normal(0.0, scale, size=(1, num_joints * 3))
    walk = np.cumsum(rng.normal(0.0, 0.05, size=(num_frames, num_joints * 3)), axis=0)
    return (base + walk).astype(np.float32)


def is_structural_key(key: str) -> bool:
    """True for FGD-encoder state-dict entries fixed by the skeleton (masks, pooling matrices)."""
    return key.endswith(".mask") or key.endswith("common.0.weight")


def randomize_state_dict(state_dict: dict, *, seed: int = 0) -> dict:
    """Seeded random values for every learnable tensor of a state dict (sorted key order).

    Structural entries (:func:`is_structural_key`) are kept. Matrices get
    ``randn / sqrt(fan_in)``, vectors ``0.1 * randn``. Used to build a checkpoint with EMAGE's
    exact key names and shapes without the real weights.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state_dict):
        value = state_dict[key]
        if is_structural_key(key):
            out[key] = value.clone()
            continue
        rnd = torch.randn(tuple(value.shape), generator=gen, dtype=torch.float32)
        # Division (not multiplication by 1/x): the recorded reference latents used this rounding.
        rnd = rnd / float(np.sqrt(np.prod(value.shape[1:]))) if value.ndim >= 2 else 0.1 * rnd
        if key.endswith("running_var"):  # BatchNorm variances must stay positive
            rnd = rnd.abs() + 0.5
        out[key] = rnd.to(value.dtype)
    return out


_BODY_OFFSETS = {
    1: (0.06, -0.09, 0.0), 2: (-0.06, -0.09, 0.0), 3: (0.0, 0.11, -0.01),
    4: (0.04, -0.38, 0.0), 5: (-0.04, -0.38, 0.0), 6: (0.0, 0.13, 0.0),
    7: (-0.01, -0.40, -0.04), 8: (0.01, -0.40, -0.04), 9: (0.0, 0.06, 0.02),
    10: (0.03, -0.06, 0.12), 11: (-0.03, -0.06, 0.12), 12: (0.0, 0.21, -0.03),
    13: (0.08, 0.12, -0.01), 14: (-0.08, 0.12, -0.01), 15: (0.0, 0.09, 0.05),
    16: (0.11, 0.04, -0.02), 17: (-0.11, 0.04, -0.02), 18: (0.26, 0.0, -0.02),
    19: (-0.26, 0.0, -0.02), 20: (0.25, 0.01, 0.0), 21: (-0.25, 0.01, 0.0),
    22: (0.0, -0.02, 0.05), 23: (0.03, 0.07, 0.09), 24: (-0.03, 0.07, 0.09),
}  # fmt: skip
# index, middle, pinky, ring, thumb: offset of the first joint from the wrist (left hand)
_FINGER_BASES = [(0.09, 0.0, 0.03), (0.095, 0.0, 0.005), (0.075, -0.005, -0.04),
                 (0.085, 0.0, -0.02), (0.025, -0.015, 0.025)]  # fmt: skip


def smplx_rest_joints() -> np.ndarray:
    """A plausible (approximate, hand-made) SMPL-X rest skeleton ``(55, 3)`` in metres, Y up."""
    from gesture_eval.encoder import SMPLX_PARENTS

    off = dict(_BODY_OFFSETS)
    for side, first in ((1.0, 25), (-1.0, 40)):
        for f, base in enumerate(_FINGER_BASES):
            j = first + 3 * f
            off[j] = (side * base[0], base[1], base[2])
            step = (side * 0.025, 0.0, 0.02) if f == 4 else (side * 0.03, 0.0, 0.0)
            off[j + 1] = off[j + 2] = step
    joints = np.zeros((55, 3))
    for j in range(1, 55):
        joints[j] = joints[SMPLX_PARENTS[j]] + np.asarray(off[j])
    return joints


def write_synthetic_smplx(path, *, num_vertices: int = 10475, seed: int = 0):
    """Write a synthetic SMPL-X ``.npz`` with the official keys and shapes (not a real body).

    Vertices 0-54 sit on :func:`smplx_rest_joints` and ``J_regressor`` selects them;
    ``shapedirs`` (V, 3, 400), ``posedirs`` (V, 3, 486) are small random fields;
    skinning ``weights`` bind each vertex to one joint. ``num_vertices`` must be at least
    9930 because ``smplx`` indexes fixed vertex ids for its extra joints. Written to a
    temporary name and renamed, so the file is never half-written.
    """
    from pathlib import Path

    from gesture_eval._io import atomic_write
    from gesture_eval.encoder import SMPLX_PARENTS

    rng = _rng(seed)
    joints = smplx_rest_joints()
    owner = np.concatenate([np.arange(55), rng.integers(0, 55, num_vertices - 55)])
    v = joints[owner] + np.concatenate(
        [np.zeros((55, 3)), rng.normal(0, 0.03, (num_vertices - 55, 3))]
    )
    regressor = np.zeros((55, num_vertices))
    regressor[np.arange(55), np.arange(55)] = 1.0
    weights = np.zeros((num_vertices, 55))
    weights[np.arange(num_vertices), owner] = 1.0
    arrays = {
        "v_template": v,
        "f": rng.integers(0, num_vertices, (20908, 3)).astype(np.uint32),
        "shapedirs": (rng.standard_normal((num_vertices, 3, 400)) * 1e-3).astype(np.float32),
        "posedirs": (rng.standard_normal((num_vertices, 3, 486)) * 1e-3).astype(np.float32),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.stack([np.array(SMPLX_PARENTS), np.arange(55)]).astype(np.int64),
        "hands_componentsl": np.eye(45),
        "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45),
        "hands_meanr": np.zeros(45),
        "lmk_faces_idx": np.arange(51, dtype=np.int64),
        "lmk_bary_coords": np.full((51, 3), 1 / 3),
        "dynamic_lmk_faces_idx": np.zeros((79, 17), dtype=np.int64),
        "dynamic_lmk_bary_coords": np.full((79, 17, 3), 1 / 3),
    }
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    # a unique temporary name: concurrent writers of the same model never share one
    atomic_write(path, write)
    return path

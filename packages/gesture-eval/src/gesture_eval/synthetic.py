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
        out[key] = rnd.to(value.dtype)
    return out

"""Input validation shared by the metrics (private)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from gesture_eval.errors import EvalError

Variant = Literal["evaltools", "cvpr24"]
VARIANTS: tuple[str, ...] = ("evaltools", "cvpr24")


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise EvalError(f"variant must be one of {VARIANTS}, found {variant!r}")
    return variant


def to_numpy(x, name: str) -> np.ndarray:
    """Array-like -> numpy array, keeping the dtype (the references compute in the input dtype)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise EvalError(f"{name} must be a numeric array, found dtype {arr.dtype}")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise EvalError(f"{name} contains {bad} NaN/inf value(s)")


def as_joints(x, name: str = "joints", *, num_joints: int | None = None) -> np.ndarray:
    """Validate joint positions: ``(T, J, 3)`` or flattened ``(T, J*3)`` -> ``(T, J, 3)``."""
    arr = to_numpy(x, name)
    if arr.ndim == 2:
        if arr.shape[1] % 3:
            raise EvalError(f"{name} must be (T, J, 3) or (T, J*3), found shape {arr.shape}")
        arr = arr.reshape(arr.shape[0], -1, 3)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise EvalError(f"{name} must be (T, J, 3) or (T, J*3), found shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EvalError(f"{name} is empty (T=0), expected at least one frame")
    if num_joints is not None and arr.shape[1] != num_joints:
        raise EvalError(
            f"{name} must have {num_joints} joints, found {arr.shape[1]} (shape {arr.shape})"
        )
    check_finite(arr, name)
    return arr


def as_features(x, name: str, *, min_rows: int = 2) -> np.ndarray:
    """Validate a feature matrix ``(N, D)``."""
    arr = to_numpy(x, name)
    if arr.ndim != 2:
        raise EvalError(f"{name} must be (N, D), found shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise EvalError(
            f"{name} needs at least {min_rows} samples, found {arr.shape[0]} (shape {arr.shape})"
        )
    check_finite(arr, name)
    return arr


def as_audio(x, name: str = "audio") -> np.ndarray:
    arr = to_numpy(x, name)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise EvalError(f"{name} must be mono (N,), found shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EvalError(f"{name} is empty")
    check_finite(arr, name)
    return arr


def load_torch_file(path, what: str):
    """``torch.load(weights_only=True)`` with every failure (missing, truncated, a pickle
    that would run code or build an arbitrary object) as an :class:`EvalError` naming the
    file; nothing but tensors and plain containers is ever unpickled."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, EOFError, RuntimeError (zip), ...
        first = " ".join(str(e).split())[:200]
        raise EvalError(
            f"{path}: not a weights-only torch checkpoint ({type(e).__name__}: {first})"
        ) from e


def check_state_dict(state, path, where: str) -> dict:
    """A ``{str: tensor}`` dict of finite tensors, or an :class:`EvalError` naming the key."""
    if not isinstance(state, dict):
        raise EvalError(f"{path}: {where} must be a dict of tensors, found {type(state).__name__}")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise EvalError(
                f"{path}: {where} key {k!r} holds {type(v).__name__}, expected a tensor"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            # a NaN weight turns every latent (and the FGD) into NaN
            raise EvalError(f"{path}: {where} key {k!r} holds NaN or infinite values")
    return state


def check_fps(fps) -> None:
    if not (isinstance(fps, int | float) and np.isfinite(fps) and fps > 0):
        raise EvalError(f"fps must be a positive number, found {fps!r}")

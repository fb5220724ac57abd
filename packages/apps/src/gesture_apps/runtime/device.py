"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from gesture_apps.errors import GenerationError


def default_device() -> str:
    """What ``device=None`` means everywhere here: ``"cuda"`` when a CUDA device is usable,
    else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> :func:`default_device`; a device that does not exist or is not usable on
    this machine is a :class:`GenerationError` before anything is loaded."""
    name = default_device() if device is None else device
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise GenerationError(
            f"device {name!r}: not a torch device (expected e.g. cpu, cuda, cuda:1)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerationError(f"device {name!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenerationError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu" and not _backend_available(dev.type):
        raise GenerationError(f"device {name!r}: {dev.type} is not available on this machine")
    return dev


def _backend_available(kind: str) -> bool:
    module = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    check = getattr(module, "is_available", None)
    return bool(check and check())

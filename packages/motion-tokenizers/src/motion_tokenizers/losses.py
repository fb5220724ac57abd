"""Reconstruction losses for motion tokenizers, on ``(B, T, C)`` tensors."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

RECON_LOSSES = ("smooth_l1", "l1", "l2")


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1") -> Tensor:
    """Mean smooth-L1 (T2M-GPT/MoMask/GestureLSM), L1 or L2 error."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"recon_loss: expected one of {RECON_LOSSES}, found {kind!r}")


def velocity_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1") -> Tensor:
    """Loss on first temporal differences (frame-to-frame velocity)."""
    return reconstruction_loss(pred.diff(dim=1), target.diff(dim=1), kind)


def acceleration_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1") -> Tensor:
    """Loss on second temporal differences; penalises jitter the velocity loss lets through."""
    return reconstruction_loss(pred.diff(n=2, dim=1), target.diff(n=2, dim=1), kind)

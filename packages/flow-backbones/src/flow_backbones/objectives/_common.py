"""Pieces shared by the objectives: noise, condition dropout, per-sample MSE."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import FlowInputError


def draw_x0(x1: Tensor, x0: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """Given noise (reflow pairs) or fresh ``N(0, I)`` like ``x1``."""
    if x0 is not None:
        if x0.shape != x1.shape:
            raise FlowInputError(
                f"x0: expected the shape of x1 {tuple(x1.shape)}, found {tuple(x0.shape)}"
            )
        return x0
    g_dev = generator.device if generator is not None else x1.device
    return torch.randn(x1.shape, generator=generator, device=g_dev, dtype=x1.dtype).to(x1.device)


def keep_mask(n: int, drop: float, generator: torch.Generator | None, device) -> Tensor:
    """``(n,)`` bool, each row False (condition dropped) with probability ``drop``."""
    if not 0.0 <= drop <= 1.0:
        raise FlowInputError(f"condition drop rate: expected a value in [0, 1], found {drop}")
    g_dev = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=g_dev) >= drop).to(device)


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per row: ``(B, ...)`` -> ``(B,)``."""
    if pred.shape != target.shape:
        raise FlowInputError(
            f"model output: expected shape {tuple(target.shape)}, found {tuple(pred.shape)}"
        )
    return (pred - target).pow(2).flatten(1).mean(1)


def rand(n: int, generator: torch.Generator | None, device) -> Tensor:
    g_dev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=g_dev).to(device)

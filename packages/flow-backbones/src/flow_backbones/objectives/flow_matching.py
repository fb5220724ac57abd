"""Conditional flow matching on the straight (rectified) path.

Lipman et al. 2023, "Flow Matching for Generative Modeling" (arXiv:2210.02747); Liu et al. 2023,
"Flow Straight and Fast" (arXiv:2209.03003). In library time, ``x_t = t x1 + (1 - t) x0`` and the
model regresses ``v = x1 - x0`` (or, with ``prediction="x1"``, the data itself).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from ..flow import TimeSampler, interpolate, loss_weight, sample_t, velocity_target
from ..samplers import ConditionalModel
from ._common import draw_x0, keep_mask, per_sample_mse


class FlowLossOutput(NamedTuple):
    """loss: scalar to backprop; per_sample ``(B,)`` unweighted MSE; t ``(B,)`` times used."""

    loss: Tensor
    per_sample: Tensor
    t: Tensor


class FlowMatchingLoss:
    """Flow-matching loss for a :data:`~flow_backbones.samplers.ConditionalModel`.

    Args:
        prediction: ``"velocity"`` (target ``x1 - x0``) or ``"x1"``: the model predicts the
            clean data (diffusion's "x0-prediction", OmniFlow's preconditioned text stream;
            here data is ``x1``). Sample such a model through
            :func:`~flow_backbones.flow.x1_to_velocity`.
        t_sampler: how training times are drawn (:func:`~flow_backbones.flow.sample_t`).
        weighting: per-sample weight (:func:`~flow_backbones.flow.loss_weight`): ``"none"``,
            ``"inv_t"``, ``"cosmap"``, ``"sigma_sqrt"``.
        cond_drop: probability that a row trains unconditionally (``keep = False``).
        shift: resolution shift applied to sampled times.
        t_kwargs: extra keyword arguments for ``sample_t`` (``logit_mean``, ``beta_alpha``...).
    """

    def __init__(
        self,
        *,
        prediction: Literal["velocity", "x1"] = "velocity",
        t_sampler: TimeSampler = "logit_normal",
        weighting: str = "none",
        cond_drop: float = 0.0,
        shift: float = 1.0,
        **t_kwargs: float,
    ) -> None:
        if prediction not in ("velocity", "x1"):
            raise ValueError(f"prediction: expected 'velocity' or 'x1', found {prediction!r}")
        self.prediction, self.t_sampler, self.weighting = prediction, t_sampler, weighting
        self.cond_drop, self.shift, self.t_kwargs = cond_drop, shift, t_kwargs
        loss_weight(weighting, torch.zeros(1) + 0.5)  # fail early on an unknown weighting

    def __call__(
        self,
        model: ConditionalModel,
        x1: Tensor,
        cond: Any = None,
        *,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
        t: Tensor | None = None,
    ) -> FlowLossOutput:
        """x1 ``(B, ...)`` data; ``x0`` optional paired noise (reflow); ``t`` optional ``(B,)``."""
        B = x1.shape[0]
        x0 = draw_x0(x1, x0, generator)
        if t is None:
            t = sample_t(
                self.t_sampler, B, generator=generator, shift=self.shift, **self.t_kwargs
            ).to(x1.device)
        x_t = interpolate(x0, x1, t)
        keep = keep_mask(B, self.cond_drop, generator, x1.device)
        out = model(x_t, t, torch.zeros_like(t), cond, keep)
        target = velocity_target(x0, x1) if self.prediction == "velocity" else x1
        mse = per_sample_mse(out, target)
        w = loss_weight(self.weighting, t).to(mse.dtype)
        return FlowLossOutput((w * mse).mean(), mse.detach(), t)

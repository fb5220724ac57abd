"""MeanFlow: learn the average velocity over a jump, for one-step generation.

Geng, Deng, Bai, Kolter, He 2025, "Mean Flows for One-step Generative Modeling"
(arXiv:2505.13447). Rewritten in library time (0 = noise, 1 = data): for ``r >= t`` the average
velocity ``u(x_t, t, r) = 1/(r - t) * int_t^r v(x_s, s) ds`` satisfies the MeanFlow identity

    u(x_t, t, r) = v(x_t, t) + (r - t) * d/dt u(x_t, t, r),

with ``d/dt`` the total derivative along the path (``dx/dt = v``, ``r`` fixed). The model takes
``d = r - t`` as its step-size input, so in ``(x, t, d)`` coordinates the tangent is
``(v, 1, -1)``; one ``torch.func.jvp`` gives ``u`` and its derivative together. A model trained
this way samples in one step with :func:`~flow_backbones.samplers.sample_shortcut` (``steps=1``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..flow import TimeSampler, interpolate, sample_t, velocity_target
from ..samplers import ConditionalModel
from ._common import draw_x0, keep_mask, rand


class MeanFlowLossOutput(NamedTuple):
    """loss: adaptively weighted scalar; mse: plain mean squared error to the target."""

    loss: Tensor
    mse: Tensor


class MeanFlowLoss:
    """MeanFlow objective.

    Args:
        t_sampler, t_kwargs: how the two times are drawn. Default logit-normal(+0.4, 1): the
            paper's logit-normal(-0.4, 1) is in its own time, where t = 0 is data; mirrored into
            library time (t = 0 noise, logit(1 - t) = -logit(t)) the mean is +0.4, so the draws
            lean towards data as the paper's do.
        flow_fraction: share of rows with ``r = t`` (plain flow matching; paper: 0.75).
        adaptive_p: adaptive weight ``1 / (||err||^2 + c)^p`` (paper: p = 1); 0 disables it.
        cond_drop: condition-dropout rate.
    """

    def __init__(
        self,
        *,
        t_sampler: TimeSampler = "logit_normal",
        flow_fraction: float = 0.75,
        adaptive_p: float = 1.0,
        adaptive_c: float = 1e-3,
        cond_drop: float = 0.0,
        **t_kwargs: float,
    ) -> None:
        # +0.4, not the paper's -0.4: see ``t_kwargs`` above (the paper's t = 0 is data)
        t_kwargs.setdefault("logit_mean", 0.4)
        self.t_sampler, self.flow_fraction = t_sampler, flow_fraction
        self.adaptive_p, self.adaptive_c, self.cond_drop = adaptive_p, adaptive_c, cond_drop
        self.t_kwargs = t_kwargs

    def target(
        self, model: ConditionalModel, x_t: Tensor, t: Tensor, d: Tensor, v: Tensor, cond, keep
    ) -> tuple[Tensor, Tensor]:
        """Model output ``u (B, ...)`` and the stop-gradient MeanFlow target ``(B, ...)``."""

        def fn(x, tt, dd):
            return model(x, tt, dd, cond, keep)

        # the fused SDPA kernels have no forward-mode derivative; the math kernel does
        with sdpa_kernel(SDPBackend.MATH):
            u, du_dt = torch.func.jvp(fn, (x_t, t, d), (v, torch.ones_like(t), -torch.ones_like(d)))
        dd = d.view(-1, *([1] * (x_t.ndim - 1)))
        return u, (v + dd * du_dt).detach()

    def __call__(
        self,
        model: ConditionalModel,
        x1: Tensor,
        cond: Any = None,
        *,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
    ) -> MeanFlowLossOutput:
        B, dev = x1.shape[0], x1.device
        x0 = draw_x0(x1, x0, generator)
        a = sample_t(self.t_sampler, B, generator=generator, **self.t_kwargs).to(dev)
        b = sample_t(self.t_sampler, B, generator=generator, **self.t_kwargs).to(dev)
        t, r = torch.minimum(a, b), torch.maximum(a, b)
        r = torch.where(rand(B, generator, dev) < self.flow_fraction, t, r)
        d = r - t
        keep = keep_mask(B, self.cond_drop, generator, dev)
        x_t = interpolate(x0, x1, t)
        u, target = self.target(model, x_t, t, d, velocity_target(x0, x1), cond, keep)
        err = (u - target).pow(2).flatten(1).mean(1)
        if self.adaptive_p:
            w = (err.detach() + self.adaptive_c) ** (-self.adaptive_p)
            loss = (w * err).mean()
        else:
            loss = err.mean()
        return MeanFlowLossOutput(loss, err.mean().detach())

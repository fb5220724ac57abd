"""Shortcut models: one network for every step size.

Frans, Hafner, Levine, Abbeel 2024, "One Step Diffusion via Shortcut Models" (arXiv:2410.12557),
as GestureLSM (Liu et al., ICCV 2025) trains it. The model ``s(x_t, t, d)`` predicts the average
velocity of a jump of size ``d``:

* flow part (first ``1 - consistency_fraction`` of the batch): ``d = 0``, target ``x1 - x0``,
  condition dropped with ``cond_drop_flow``;
* self-consistency part (the rest): one jump of ``2d`` must equal two jumps of ``d``,
  ``s(x_t, t, 2d) ~ (s(x_t, t, d) + s(x_t + d s_t, t + d, d)) / 2`` (target without gradient),
  condition dropped with ``cond_drop_consistency`` (GestureLSM: 0.8);
* ``d`` is drawn uniformly from ``{2^-min_log2, ..., 2^-max_log2}`` (GestureLSM: 1/2 ... 1/128).

One deviation: GestureLSM draws the consistency ``t`` like the flow ``t`` and lets ``t + d`` pass
1; here consistency times are ``t ~ U(0, 1 - 2d)`` so that both jumps stay inside ``[0, 1]``,
which every model of this library checks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import FlowInputError
from ..flow import TimeSampler, interpolate, loss_weight, sample_t, velocity_target
from ..samplers import ConditionalModel
from ..utils import tree_map
from ._common import draw_x0, keep_mask, per_sample_mse, rand


class ShortcutLossOutput(NamedTuple):
    """loss = flow + consistency (scalars); ``flow`` or ``consistency`` is 0 for an empty part."""

    loss: Tensor
    flow: Tensor
    consistency: Tensor


class ShortcutLoss:
    """The shortcut objective for a :data:`~flow_backbones.samplers.ConditionalModel`.

    Args:
        consistency_fraction: share of each batch used for self-consistency (GestureLSM: 1/4).
        min_log2, max_log2: step sizes ``d = 2^-k`` for ``k`` in ``[min_log2, max_log2]``.
        cond_drop_flow, cond_drop_consistency: condition-dropout rates of the two parts.
        t_sampler: flow-part time sampler (GestureLSM: ``"beta"``, Beta(2, 1.2)).
        flow_weighting: flow-part weight; GestureLSM divides its MSE by ``t`` (``"inv_t"``).
    """

    def __init__(
        self,
        *,
        consistency_fraction: float = 0.25,
        min_log2: int = 1,
        max_log2: int = 7,
        cond_drop_flow: float = 0.1,
        cond_drop_consistency: float = 0.8,
        t_sampler: TimeSampler = "beta",
        flow_weighting: str = "inv_t",
        **t_kwargs: float,
    ) -> None:
        if not 0.0 <= consistency_fraction < 1.0:
            raise FlowInputError(
                f"consistency_fraction: expected a value in [0, 1), found {consistency_fraction}"
            )
        if not 1 <= min_log2 <= max_log2:
            raise FlowInputError(
                f"min_log2/max_log2: expected 1 <= min_log2 <= max_log2, found {min_log2}, "
                f"{max_log2}"
            )
        self.consistency_fraction = consistency_fraction
        self.min_log2, self.max_log2 = min_log2, max_log2
        self.cond_drop_flow, self.cond_drop_consistency = cond_drop_flow, cond_drop_consistency
        self.t_sampler, self.flow_weighting, self.t_kwargs = t_sampler, flow_weighting, t_kwargs

    def __call__(
        self,
        model: ConditionalModel,
        x1: Tensor,
        cond: Any = None,
        *,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
    ) -> ShortcutLossOutput:
        """x1 ``(B, ...)``; ``cond`` a tree of ``(B, ...)`` tensors; ``x0`` optional noise."""
        B, dev = x1.shape[0], x1.device
        x0 = draw_x0(x1, x0, generator)
        n_c = round(B * self.consistency_fraction)
        n_f = B - n_c
        zero = x1.new_zeros(())

        flow = zero
        if n_f:
            t = sample_t(self.t_sampler, n_f, generator=generator, **self.t_kwargs).to(dev)
            xf0, xf1 = x0[:n_f], x1[:n_f]
            cond_f = tree_map(lambda c: c[:n_f], cond)
            keep = keep_mask(n_f, self.cond_drop_flow, generator, dev)
            out = model(interpolate(xf0, xf1, t), t, torch.zeros_like(t), cond_f, keep)
            mse = per_sample_mse(out, velocity_target(xf0, xf1))
            # GestureLSM multiplies the batch-mean MSE by mean(1/t); weighting each row by its
            # own 1/t keeps the intent (emphasis near noise) without coupling rows
            flow = (loss_weight(self.flow_weighting, t) * mse).mean()

        consistency = zero
        if n_c:
            xc0, xc1 = x0[n_f:], x1[n_f:]
            cond_c = tree_map(lambda c: c[n_f:], cond)
            g_dev = generator.device if generator is not None else dev
            k = torch.randint(
                self.min_log2, self.max_log2 + 1, (n_c,), generator=generator, device=g_dev
            ).to(dev)
            d = 2.0 ** (-k.float())
            t = rand(n_c, generator, dev) * (1 - 2 * d)
            keep = keep_mask(n_c, self.cond_drop_consistency, generator, dev)
            x_t = interpolate(xc0, xc1, t)
            with torch.no_grad():
                s_t = model(x_t, t, d, cond_c, keep)
                x_td = x_t + d.view(-1, *([1] * (x_t.ndim - 1))) * s_t
                s_td = model(x_td, (t + d).clamp(max=1.0), d, cond_c, keep)
                target = 0.5 * (s_t + s_td)
            out = model(x_t, t, 2 * d, cond_c, keep)
            consistency = per_sample_mse(out, target).mean()
        return ShortcutLossOutput(flow + consistency, flow.detach(), consistency.detach())

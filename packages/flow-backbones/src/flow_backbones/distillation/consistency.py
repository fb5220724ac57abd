"""Consistency distillation of a flow teacher, and the multistep consistency sampler.

Song, Dhariwal, Chen, Sutskever 2023, "Consistency Models" (arXiv:2303.01469), Algorithm 2 and
Algorithm 1, in library time (``t = 0`` noise, ``t = 1`` data, ``x_t = t x1 + (1 - t) x0``):

* the interval is cut into ``N`` steps ``0 = t_0 < ... < t_N = 1``; a row picks ``n`` uniformly,
  sits at ``x_{t_n}`` on the straight path between noise and a data sample, and the teacher
  takes one (classifier-free-guided) ODE step to ``x_hat_{t_{n+1}}``;
* the loss is ``d(f_theta(x_{t_n}, t_n), f_ema(x_hat_{t_{n+1}}, t_{n+1}))`` with ``f_ema`` an
  exponential moving average of the student that receives no gradient;
* ``f(x, t) = c_skip(t) x + c_out(t) F(x, t)`` with ``c_skip = 1``, ``c_out = 1 - t``
  (:func:`~flow_backbones.distillation.generator.boundary_scalings`), so ``f(x, 1) = x`` holds
  for every network and the last interval's target is the teacher's step itself.

Guidance inside the teacher step distils the guided ODE into the student, as latent consistency
models do (Luo et al. 2023, arXiv:2310.04378), so the student samples without guidance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..conditional import prepare_condition
from ..errors import FlowInputError
from ..flow import interpolate
from ..objectives._common import draw_x0
from ..samplers import GuidanceSchedule, conditioned, make_noise, time_grid
from .endpoint import Distance, per_sample_distance
from .generator import OneStepGenerator, ode_step


@dataclass(frozen=True, kw_only=True)
class ConsistencyConfig:
    """Consistency distillation settings (the paper's CIFAR-10 choices where they apply).

    Args:
        intervals: ``N``, steps of the teacher's discretisation of ``[0, 1]``.
        shift: time-grid shift (:func:`~flow_backbones.flow.shift_t`; > 1 spends intervals
            near noise).
        guidance: classifier-free guidance weight or schedule of the teacher step.
        solver: the teacher step, ``"euler"`` or ``"heun"`` (the paper's choice; 2 calls).
        pass_step_size: give the teacher ``d = t_{n+1} - t_n`` (shortcut teachers).
        ema_decay: ``mu`` of the target network ``theta^- <- mu theta^- + (1 - mu) theta``.
        distance: ``"mse"`` or ``"pseudo_huber"``
            (:func:`~flow_backbones.distillation.endpoint.per_sample_distance`).
    """

    intervals: int = 18
    shift: float = 1.0
    guidance: GuidanceSchedule | float = 1.0
    solver: Literal["euler", "heun"] = "heun"
    pass_step_size: bool = False
    ema_decay: float = 0.95
    distance: Distance = "mse"

    def __post_init__(self) -> None:
        if self.intervals < 1:
            raise FlowInputError(
                f"ConsistencyConfig.intervals: expected >= 1, found {self.intervals}"
            )
        if not 0.0 <= self.ema_decay <= 1.0:
            raise FlowInputError(
                f"ConsistencyConfig.ema_decay: expected a value in [0, 1], found {self.ema_decay}"
            )
        if self.solver not in ("euler", "heun"):
            raise FlowInputError(
                f"ConsistencyConfig.solver: expected euler or heun, found {self.solver!r}"
            )


class ConsistencyLossOutput(NamedTuple):
    """loss: scalar; per_sample ``(B,)`` distances (detached); t, t_next ``(B,)`` the interval."""

    loss: Tensor
    per_sample: Tensor
    t: Tensor
    t_next: Tensor


class ConsistencyDistillation(nn.Module):
    """Student, EMA target and frozen teacher of consistency distillation.

    Args:
        student: the one-step generator being trained (usually
            :meth:`OneStepGenerator.from_teacher`); its ``jump`` is ``f_theta``.
        teacher: the flow teacher, a :class:`~flow_backbones.conditional.ConditionalModel`
            module; it is frozen here (``requires_grad_(False)``).
        config: :class:`ConsistencyConfig`.

    Only ``student`` should be given to the optimizer; call :meth:`update_target` after every
    optimizer step (or use :meth:`step`, which does both).
    """

    def __init__(
        self,
        student: OneStepGenerator,
        teacher: nn.Module,
        *,
        config: ConsistencyConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ConsistencyConfig()
        self.student = student
        # theta^- starts at theta (the paper initialises both from the teacher)
        self.target = copy.deepcopy(student).eval().requires_grad_(False)
        self.teacher = teacher.requires_grad_(False)
        self.register_buffer(
            "grid", time_grid(self.config.intervals, shift=self.config.shift), persistent=False
        )

    def loss(
        self,
        x1: Tensor,
        cond: Any = None,
        *,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
    ) -> ConsistencyLossOutput:
        """The consistency loss on data ``x1`` ``(B, ...)`` with conditions ``cond``.

        ``x0`` optional noise ``(B, ...)``; ``generator`` draws the noise and the intervals.
        """
        cfg, B, dev = self.config, x1.shape[0], x1.device
        x0 = draw_x0(x1, x0, generator)
        g_dev = generator.device if generator is not None else dev
        n = torch.randint(cfg.intervals, (B,), generator=generator, device=g_dev).to(dev)
        grid = self.grid.to(dev)
        t, t_next = grid[n], grid[n + 1]
        x_t = interpolate(x0, x1, t)
        with torch.no_grad():
            was_training = self.teacher.training
            self.teacher.eval()
            try:
                velocity = conditioned(self.teacher, cond, guidance=cfg.guidance)
                x_next = ode_step(
                    velocity, x_t, t, t_next, solver=cfg.solver, pass_step_size=cfg.pass_step_size
                )
            finally:
                self.teacher.train(was_training)
            target = self.target.jump(x_next, t_next, cond)
        pred = self.student.jump(x_t, t, cond)
        d = per_sample_distance(pred, target, cfg.distance)
        return ConsistencyLossOutput(d.mean(), d.detach(), t, t_next)

    @torch.no_grad()
    def update_target(self) -> None:
        """``theta^- <- mu theta^- + (1 - mu) theta``; buffers are copied."""
        mu = self.config.ema_decay
        for p_t, p_s in zip(self.target.parameters(), self.student.parameters(), strict=True):
            p_t.lerp_(p_s.detach(), 1 - mu)
        for b_t, b_s in zip(self.target.buffers(), self.student.buffers(), strict=True):
            b_t.copy_(b_s)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        x1: Tensor,
        cond: Any = None,
        *,
        generator: torch.Generator | None = None,
        grad_clip: float | None = None,
    ) -> dict[str, float]:
        """One optimisation step of the student and the target update; returns ``{"loss"}``."""
        out = self.loss(x1, cond, generator=generator)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):  # before the update, so the weights stay usable
            raise RuntimeError(f"consistency loss is {loss}: training diverged; lower the lr")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(self.student.parameters(), grad_clip)
        optimizer.step()
        self.update_target()
        return {"loss": loss}


@torch.no_grad()
def sample_consistency(
    model: OneStepGenerator,
    x0: Tensor | tuple[int, ...],
    cond: Any = None,
    *,
    times: Sequence[float] = (),
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    ``x = f(x0, 0)``, then for each ``tau`` in ``times``: re-noise ``x`` to
    ``tau x + (1 - tau) z`` with fresh ``z ~ N(0, I)`` and jump again, ``x = f(x_tau, tau)``.
    With ``times = ()`` this is the one-step sample. The backbone's ``prepare_condition`` (if
    any) runs once.

    Args:
        model: the distilled :class:`OneStepGenerator`.
        x0: starting noise ``(B, ...)``, or a shape to draw it with ``generator``.
        cond: tree of ``(B, ...)`` conditions, or None.
        times: strictly increasing re-noising times in ``(0, 1)``.
        generator: torch.Generator or seed for ``x0`` (when a shape) and the re-noising.

    Returns:
        The sample ``(B, ...)``.
    """
    ts = torch.as_tensor(list(times), dtype=torch.float32)
    if ts.numel() and ((ts <= 0).any() or (ts >= 1).any() or (ts.diff() <= 0).any()):
        raise FlowInputError(f"times: expected strictly increasing values in (0, 1), found {times}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    x = make_noise(x0, generator)
    B = x.shape[0]
    keep = torch.ones(B, dtype=torch.bool, device=x.device)
    c = prepare_condition(model.model, cond, keep)
    x = model.jump(x, torch.zeros(B, device=x.device, dtype=x.dtype), c)
    for tau in ts.tolist():
        z = make_noise(tuple(x.shape), generator).to(device=x.device, dtype=x.dtype)
        t = torch.full((B,), tau, device=x.device, dtype=x.dtype)
        x = model.jump(interpolate(z, x, t), t, c)
    return x

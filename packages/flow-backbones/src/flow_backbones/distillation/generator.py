"""One-step generators distilled from a flow teacher, and the teacher's ODE solutions.

The student is a copy of the teacher's backbone read as a jump to data,
``x1_hat = c_skip(t) x_t + c_out(t) F(x_t, t, d = 1 - t)`` with ``c_skip = 1`` and
``c_out = 1 - t``: one Euler step over the whole remaining interval, which is exactly what the
teacher's velocity already approximates at initialisation (Luhman & Luhman 2021,
arXiv:2101.02388; Song et al. 2023, "Consistency Models", arXiv:2303.01469, for the
``c_skip``/``c_out`` form that makes ``f(x, t = 1) = x`` hold by construction). A
shortcut/MeanFlow backbone reads ``d = 1 - t`` as the jump length; a plain flow backbone
ignores ``d``.

The teacher's targets are its classifier-free-guided ODE solutions from given noise, integrated
by the library samplers (Euler, Heun or shortcut steps), so a teacher with
``prepare_condition`` prepares its condition once per solve.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import FlowInputError
from ..flow import _bcast
from ..samplers import GuidanceSchedule, conditioned, sample_euler, sample_heun, sample_shortcut

Solver = Literal["euler", "heun", "shortcut"]


def boundary_scalings(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` of the jump to data at times ``t`` ``(B,)``: ``(1, 1 - t)``.

    ``c_out(1) = 0`` gives the consistency boundary condition ``f(x, 1) = x`` for any network;
    ``c_skip = 1`` keeps the jump an Euler step of the network's velocity.
    """
    return torch.ones_like(t), 1 - t


class OneStepGenerator(nn.Module):
    """``G(z, cond) = z + model(z, t=0, d=1, cond, keep=True)``: one jump from noise to data.

    Args:
        model: a :class:`~flow_backbones.conditional.ConditionalModel` module, trained here
            (build it from a teacher with :meth:`from_teacher`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @classmethod
    def from_teacher(cls, teacher: nn.Module) -> OneStepGenerator:
        """A generator around a trainable deep copy of ``teacher`` (the teacher is untouched)."""
        model = copy.deepcopy(teacher).train()
        return cls(model.requires_grad_(True))

    def jump(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The jump to data ``(B, ...)`` from ``x`` ``(B, ...)`` at times ``t`` ``(B,)``.

        ``cond`` is a raw condition tree or what the backbone's ``prepare_condition`` returned
        (the samplers prepare once per run).
        """
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        c_skip, c_out = boundary_scalings(t)
        v = self.model(x, t, 1 - t, cond, keep)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * v

    def forward(self, z: Tensor, cond: Any = None) -> Tensor:
        """Noise ``z`` ``(B, ...)`` -> sample ``(B, ...)``."""
        return self.jump(z, torch.zeros(z.shape[0], device=z.device, dtype=z.dtype), cond)


@dataclass(frozen=True, kw_only=True)
class TeacherODE:
    """How the teacher's guided ODE is solved.

    Args:
        steps: solver steps from noise to data.
        guidance: classifier-free guidance weight or schedule (1: unguided).
        solver: ``"euler"``, ``"heun"`` (2 calls per step) or ``"shortcut"`` (equal jumps that
            tell the model ``d = 1/steps``).
        pass_step_size: Euler only: give the teacher ``d = t_{k+1} - t_k`` (shortcut teachers
            sampled on Euler grids, as GestureLSM does).
        shift: time-grid shift for Euler/Heun (:func:`~flow_backbones.flow.shift_t`).
    """

    steps: int = 16
    guidance: GuidanceSchedule | float = 2.0
    solver: Solver = "euler"
    pass_step_size: bool = False
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FlowInputError(f"TeacherODE.steps: expected >= 1, found {self.steps}")
        if self.solver not in ("euler", "heun", "shortcut"):
            raise FlowInputError(
                f"TeacherODE.solver: expected euler, heun or shortcut, found {self.solver!r}"
            )


@torch.no_grad()
def teacher_solution(
    teacher: nn.Module, z: Tensor, cond: Any = None, ode: TeacherODE | None = None
) -> Tensor:
    """The teacher's guided ODE solution ``(B, ...)`` from noise ``z`` ``(B, ...)``.

    The teacher runs in eval mode (restored afterwards), so dropout does not perturb targets.
    """
    ode = ode or TeacherODE()
    was_training = teacher.training
    teacher.eval()
    try:
        fn = conditioned(teacher, cond, guidance=ode.guidance)
        if ode.solver == "euler":
            return sample_euler(
                fn, z, ode.steps, shift=ode.shift, pass_step_size=ode.pass_step_size
            )
        if ode.solver == "heun":
            return sample_heun(fn, z, ode.steps, shift=ode.shift)
        return sample_shortcut(fn, z, ode.steps)
    finally:
        teacher.train(was_training)


def ode_step(
    velocity: Any,
    x: Tensor,
    t: Tensor,
    t_next: Tensor,
    *,
    solver: Literal["euler", "heun"] = "euler",
    pass_step_size: bool = False,
) -> Tensor:
    """One solver step from ``t`` to ``t_next`` (both ``(B,)``, per row) of ``x`` ``(B, ...)``.

    ``velocity`` is a bound ``(x, t, d) -> v`` (:func:`~flow_backbones.samplers.conditioned`).
    Unlike the samplers, every row may sit at its own time, as consistency distillation needs.
    """
    dt = t_next - t
    d = dt if pass_step_size else torch.zeros_like(dt)
    v = velocity(x, t, d)
    x_next = x + _bcast(dt, x) * v
    if solver == "heun":
        # t_next = 1 is a valid model input in this convention, so no last-step special case
        v_next = velocity(x_next, t_next, d)
        x_next = x + _bcast(dt, x) * 0.5 * (v + v_next)
    return x_next

"""Knowledge distillation onto the teacher's multi-step ODE endpoints.

Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models for Improved
Sampling Speed" (arXiv:2101.02388): solve the teacher's (guided) ODE with many steps from noise
``z``, keep the pairs ``(z, cond) -> x1 = ODE(z)``, and regress a one-step student
``G(z, cond)`` onto ``x1``. The pairs are the same couplings reflow trains on, so they are
held in :class:`~flow_backbones.objectives.ReflowPairs` (``noise``, ``sample``, ``cond``).

This is a deterministic regression target: a student trained only on the teacher's first
velocity ``v(z, 0)`` instead would sample the blurry conditional mean in one step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import FlowInputError
from ..objectives import ReflowPairs
from ..objectives._common import per_sample_mse
from ..utils import tree_map
from .generator import TeacherODE, teacher_solution

logger = logging.getLogger(__name__)

Distance = Literal["mse", "pseudo_huber"]


def per_sample_distance(pred: Tensor, target: Tensor, kind: Distance = "mse") -> Tensor:
    """Distance per row, ``(B, ...)`` x ``(B, ...)`` -> ``(B,)``.

    ``"mse"``: mean squared error. ``"pseudo_huber"``: ``sqrt(|a - b|^2 + c^2) - c`` with
    ``c = 0.00054 sqrt(D)`` for ``D`` values per row (Song & Dhariwal 2023, "Improved Techniques
    for Training Consistency Models", arXiv:2310.14189): quadratic near 0, linear for outliers,
    so a few far-off targets do not dominate the gradient.
    """
    if kind == "mse":
        return per_sample_mse(pred, target)
    if kind == "pseudo_huber":
        if pred.shape != target.shape:
            raise FlowInputError(
                f"model output: expected shape {tuple(target.shape)}, found {tuple(pred.shape)}"
            )
        c = 0.00054 * (pred[0].numel() ** 0.5)
        sq = (pred - target).pow(2).flatten(1).sum(1)
        return (sq + c * c).sqrt() - c
    raise FlowInputError(f"distance: expected 'mse' or 'pseudo_huber', found {kind!r}")


class DistillLossOutput(NamedTuple):
    """loss: scalar to backprop; per_sample: ``(B,)`` distances (detached)."""

    loss: Tensor
    per_sample: Tensor


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """Endpoint distillation settings.

    Args:
        teacher: how the teacher's targets are solved (:class:`TeacherODE`).
        distance: ``"mse"`` or ``"pseudo_huber"`` (:func:`per_sample_distance`).
        batch_size: rows per teacher solve when making pairs.
    """

    teacher: TeacherODE = field(default_factory=TeacherODE)
    distance: Distance = "mse"
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise FlowInputError(
                f"EndpointConfig.batch_size: expected >= 1, found {self.batch_size}"
            )


@torch.no_grad()
def make_endpoint_pairs(
    teacher: nn.Module, noise: Tensor, cond: Any = None, config: EndpointConfig | None = None
) -> ReflowPairs:
    """The teacher's guided ODE endpoint for every row of ``noise``.

    Args:
        teacher: a :class:`~flow_backbones.conditional.ConditionalModel` module (not modified).
        noise: ``(N, ...)`` starting points (draw them with a seeded generator).
        cond: tree of ``(N, ...)`` conditions, or None.

    Returns:
        ``ReflowPairs(noise (N, ...), sample (N, ...) = the endpoints, cond)``.
    """
    config = config or EndpointConfig()
    outs = []
    for s in range(0, noise.shape[0], config.batch_size):
        sl = slice(s, s + config.batch_size)
        c = tree_map(lambda c, sl=sl: c[sl], cond)
        outs.append(teacher_solution(teacher, noise[sl], c, config.teacher))
    logger.info(
        "endpoint distillation: %d pairs from %d %s steps",
        noise.shape[0],
        config.teacher.steps,
        config.teacher.solver,
    )
    return ReflowPairs(noise, torch.cat(outs), cond)


class EndpointLoss:
    """Distance between the one-step sample ``G(noise, cond)`` and the teacher's endpoint.

    Args:
        distance: ``"mse"`` or ``"pseudo_huber"`` (:func:`per_sample_distance`).
    """

    def __init__(self, *, distance: Distance = "mse") -> None:
        per_sample_distance(torch.zeros(1, 1), torch.zeros(1, 1), distance)  # fail early
        self.distance = distance

    def __call__(
        self, generator: nn.Module, noise: Tensor, target: Tensor, cond: Any = None
    ) -> DistillLossOutput:
        """``generator(noise (B, ...), cond) -> (B, ...)``; ``target`` ``(B, ...)`` endpoints."""
        d = per_sample_distance(generator(noise, cond), target, self.distance)
        return DistillLossOutput(d.mean(), d.detach())

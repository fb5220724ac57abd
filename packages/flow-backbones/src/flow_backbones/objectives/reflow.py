"""Reflow: retrain on (noise, sample) pairs produced by a trained model.

Liu, Gong, Liu 2023, "Flow Straight and Fast" (arXiv:2209.03003): coupling each noise with the
sample its ODE reaches straightens the paths, so few-step sampling loses less. GestureLSM does
this for its shortcut model (noise, audio feature, sample and seed saved per training batch).
Train on the pairs by passing ``x0=pairs.noise`` to any loss of this package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import FlowInputError
from ..samplers import ConditionalModel, GuidanceSchedule, conditioned, sample_euler
from ..utils import tree_map

logger = logging.getLogger(__name__)


@dataclass
class ReflowPairs(Dataset):
    """noise ``(N, ...)``, sample ``(N, ...)`` and the condition tree (``(N, ...)`` leaves)."""

    noise: Tensor
    sample: Tensor
    cond: Any = None

    def __len__(self) -> int:
        return self.noise.shape[0]

    def __getitem__(self, i):
        return self.noise[i], self.sample[i], tree_map(lambda c: c[i], self.cond)


@torch.no_grad()
def build_reflow_pairs(
    model: ConditionalModel,
    noise: Tensor,
    cond: Any = None,
    *,
    steps: int = 20,
    guidance: GuidanceSchedule | float = 1.0,
    batch_size: int = 256,
    pass_step_size: bool = False,
) -> ReflowPairs:
    """Integrate ``model`` from every row of ``noise`` with Euler and keep the pairs.

    Args:
        model: the trained teacher (a :data:`~flow_backbones.samplers.ConditionalModel`).
        noise: ``(N, ...)`` starting points (draw them with a seeded generator).
        cond: tree of ``(N, ...)`` conditions, or None.
        steps, guidance, pass_step_size: as in :func:`sample_euler` / :func:`conditioned`.
    """
    if batch_size < 1:
        raise FlowInputError(f"batch_size: expected >= 1, found {batch_size}")
    outs = []
    for s in range(0, noise.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        fn = conditioned(model, tree_map(lambda c, sl=sl: c[sl], cond), guidance=guidance)
        outs.append(sample_euler(fn, noise[sl], steps, pass_step_size=pass_step_size))
    logger.info("reflow: %d pairs from %d Euler steps", noise.shape[0], steps)
    return ReflowPairs(noise, torch.cat(outs), cond)

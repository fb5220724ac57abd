"""SRGR, semantic-relevant gesture recall (BEAT): the fraction of joints within ``threshold``
of the ground truth, each frame weighted by its semantic score, rescaled by 1/0.165.

``evaltools`` measures the per-joint distance as the Euclidean norm; ``cvpr24`` (CVPR'24
``metric.py``) as the L1 sum over x, y, z. With ``semantic=None`` (evaltools only) every frame
weighs 1 and no rescaling is applied. Data-set values weight sequences by frame count.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from gesture_eval._checks import Variant, as_joints, check_finite, check_variant, to_numpy
from gesture_eval.errors import EvalError

__all__ = ["SRGR", "srgr"]

#: The mean semantic score in BEAT: SRGR is divided by it so that perfect recall is ~1.
SEMANTIC_NORMALISER = 0.165


def _rate(pred, target, semantic, threshold: float, variant: str) -> tuple[float, int]:
    if not (isinstance(threshold, int | float) and np.isfinite(threshold) and threshold > 0):
        raise EvalError(f"threshold must be a positive distance in metres, found {threshold!r}")
    p, g = as_joints(pred, "pred_joints"), as_joints(target, "target_joints")
    if p.shape != g.shape:
        raise EvalError(f"pred_joints {p.shape} and target_joints {g.shape} differ (T, J, 3)")
    if variant == "evaltools":
        diff = np.linalg.norm(p - g, axis=2)
    else:
        diff = np.sum(np.abs(p - g), axis=2)
    success = np.where(diff < threshold, 1.0, 0.0)
    if semantic is None:
        if variant == "cvpr24":
            raise EvalError("variant='cvpr24' SRGR needs semantic (T,) scores")
        weights = np.ones(p.shape[0])
    else:
        sem = to_numpy(semantic, "semantic").reshape(-1)
        check_finite(sem, "semantic")
        if sem.shape[0] != p.shape[0]:
            raise EvalError(
                f"semantic must be ({p.shape[0]},) to match the joints, found {sem.shape}"
            )
        weights = sem * (1 / SEMANTIC_NORMALISER)
    success = success * weights[:, None]
    return float(np.sum(success) / (success.shape[0] * success.shape[1])), p.shape[0]


def srgr(
    pred_joints,
    target_joints,
    semantic=None,
    *,
    threshold: float = 0.1,
    variant: Variant = "evaltools",
) -> float:
    """SRGR of one sequence: joints ``(T, J, 3)``, ``semantic`` (T,) scores in [0, 1]."""
    return _rate(pred_joints, target_joints, semantic, threshold, check_variant(variant))[0]


class SRGR(Metric):
    """Data-set SRGR: ``update(pred (T, J, 3), target (T, J, 3), semantic (T,))`` per sequence."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, *, threshold: float = 0.1, variant: Variant = "evaltools", **kwargs):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.threshold = threshold
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("frames", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred_joints, target_joints, semantic=None) -> None:
        rate, frames = _rate(pred_joints, target_joints, semantic, self.threshold, self.variant)
        self.total += rate * frames
        self.frames += frames

    def compute(self) -> torch.Tensor:
        if int(self.frames) == 0:
            raise EvalError("SRGR.compute() called before any update()")
        return self.total / self.frames

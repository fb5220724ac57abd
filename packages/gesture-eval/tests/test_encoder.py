"""FGD encoder: EMAGE ``VAESKConv`` state-dict layout and latents.

Recording (2026-11-21): the reference ``emage_evaltools/motion_encoder.py`` (+ ``skeleton.py``,
``skeleton_DME.py``, ``decoders.py``) from PantoMatrix/PantoMatrix @ 0bbb03d was run from /tmp
with a stand-in ``SMPLX_NEUTRAL_2020.npz`` holding only ``kintree_table`` (the SMPL-X parents).
Its ``state_dict()`` gave ``data/vaeskconv_layout.json`` (56 key names and shapes, sums and
index-weighted sums of the structural masks / pooling matrices, 3,093,000 trainable values).
Its learnable tensors were then replaced by ``synthetic.randomize_state_dict(sd, seed=123)``,
saved as ``{"model_state": {"module." + k: v}}`` and loaded through the reference ``FGD`` class
(``torch.load`` + ``module.`` stripping). Latents ``data/emage_latents_seed123.npz``:
evaltools = ``FGD.get_feature(rc.axis_angle_to_rotation_6d(aa))``; cvpr24 = the CVPR'24
trainer path ``map2latent(matrix_to_rotation_6d(rotation_6d_to_matrix(6d))[:, :n - n % 32])``,
for ``aa = synthetic.random_axis_angle(100, seed=7)`` ("a") and ``(200, seed=8)`` ("b").
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_eval import EvalError, FGDEncoder, FrechetDistance, fgd_features, frechet_distance
from gesture_eval import synthetic as S

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def layout():
    return json.loads((DATA / "vaeskconv_layout.json").read_text())


@pytest.fixture(scope="module")
def emage_checkpoint(tmp_path_factory):
    model = FGDEncoder()
    state = S.randomize_state_dict(model.state_dict(), seed=123)
    path = tmp_path_factory.mktemp("ckpt") / "AESKConv_240_100.bin"
    torch.save({"model_state": {"module." + k: v for k, v in state.items()}}, path)
    return path


def test_state_dict_has_emage_key_names_shapes_and_structure(layout):
    sd = FGDEncoder().state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(k, s) for k, s in layout["keys"]]
    trainable = sum(p.numel() for p in FGDEncoder().parameters() if p.requires_grad)
    assert trainable == layout["n_trainable"] == 3_093_000
    for key, (total, weighted) in layout["structural_checksums"].items():
        v = sd[key]
        idx = torch.arange(v.numel(), dtype=torch.float64).float()
        assert float(v.sum()) == pytest.approx(total, rel=1e-9)
        assert float((v.flatten() * idx).double().sum()) == pytest.approx(weighted, rel=1e-6)


@pytest.mark.parametrize("variant", ["evaltools", "cvpr24"])
def test_latents_match_reference_architecture(emage_checkpoint, variant):
    enc = FGDEncoder.from_emage_checkpoint(emage_checkpoint)
    refs = np.load(DATA / "emage_latents_seed123.npz")
    for name, frames, seed in (("a", 100, 7), ("b", 200, 8)):
        ref = refs[f"{variant}_{name}"]
        z = fgd_features(S.random_axis_angle(frames, seed=seed), enc, variant=variant)
        assert z.shape == ref.shape == (frames // 32 * 2, 240)
        # Noise floor, measured by running this encoder in float64 on the same inputs: the
        # float32 reference is off the exact latents by up to 1.04e-6 * max|ref|, ours by up to
        # 6.3e-7 (1 or 2 threads; the two thread counts differ from each other by 3.8e-7).
        # Both sides carry that rounding, so they may differ by ~2e-6 * max|ref|; 5e-6 leaves
        # room for other CPUs' kernels (AVX2 vs AVX-512 summation order). A wrong layer, mask
        # or normalisation moves latents by O(max|ref|).
        np.testing.assert_allclose(z, ref, rtol=0, atol=5e-6 * np.abs(ref).max())


def test_checkpoint_without_module_prefix_and_fgd_class(emage_checkpoint, tmp_path):
    blob = torch.load(emage_checkpoint, weights_only=True)
    plain = tmp_path / "plain.bin"
    torch.save(
        {"model_state": {k.removeprefix("module."): v for k, v in blob["model_state"].items()}},
        plain,
    )
    enc = FGDEncoder.from_emage_checkpoint(plain)
    a, b = S.random_axis_angle(100, seed=7), S.random_axis_angle(200, seed=8)
    metric = FrechetDistance(encoder=enc)
    metric.update(a, b)
    metric.update(b, a)
    feats = np.concatenate([fgd_features(a, enc), fgd_features(b, enc)])
    swapped = np.concatenate([fgd_features(b, enc), fgd_features(a, enc)])
    assert float(metric.compute()) == pytest.approx(frechet_distance(feats, swapped), rel=1e-9)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(EvalError, match="not found"):
        FGDEncoder.from_emage_checkpoint(tmp_path / "missing.bin")
    p = tmp_path / "bad.bin"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(EvalError, match="model_state"):
        FGDEncoder.from_emage_checkpoint(p)
    sd = FGDEncoder().state_dict()
    sd["fc_mu.weight"] = torch.zeros(3, 3)
    torch.save({"model_state": sd}, p)
    with pytest.raises(EvalError, match=r"fc_mu.weight.*\(240, 240\).*\(3, 3\)"):
        FGDEncoder.from_emage_checkpoint(p)


def test_fgd_features_crop_and_errors():
    enc = FGDEncoder.tiny()
    z = fgd_features(S.random_axis_angle(70, seed=1), enc)
    assert z.shape == (64 // 4, 120)  # cropped to 64 frames, 4 frames per latent for 2 layers
    with pytest.raises(EvalError, match="at least 32"):
        fgd_features(S.random_axis_angle(20, seed=1), enc)
    with pytest.raises(EvalError, match=r"\(T, 165\)"):
        fgd_features(np.zeros((64, 160), np.float32), enc)
    bad = S.random_axis_angle(64, seed=1)
    bad[3, 4] = np.nan
    with pytest.raises(EvalError, match="NaN"):
        fgd_features(bad, enc)


def test_save_pretrained_roundtrip_and_training_reduces_loss(tmp_path):
    torch.manual_seed(0)
    enc = FGDEncoder.tiny()
    motions = [S.random_axis_angle(64, seed=s) for s in range(3)]
    x = torch.from_numpy(np.stack([m[:64] for m in motions]))
    from gesture_eval.rotations import axis_angle_to_rot6d_rows

    x6 = axis_angle_to_rot6d_rows(x.reshape(3, 64, 55, 3)).reshape(3, 64, 330)
    before = torch.nn.functional.l1_loss(enc(x6), x6).item()
    from gesture_eval import train_fgd_encoder

    trained = train_fgd_encoder(motions, encoder=enc, steps=4, batch_size=2, lr=3e-3, window=64)
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(trained(x6), x6).item()
    assert after < before
    trained.save_pretrained(tmp_path / "enc")
    again = FGDEncoder.from_pretrained(tmp_path / "enc")
    np.testing.assert_array_equal(
        fgd_features(motions[0], again), fgd_features(motions[0], trained)
    )

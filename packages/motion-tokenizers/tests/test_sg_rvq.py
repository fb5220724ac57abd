"""SGRVQVAE against Semantic Gesticulator's own tokenizer (outputs recorded from its code, see
data/sg_rvq_reference/README.md), plus save/load, sizes, bad input and a short training run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import motion_tokenizers
from motion_tokenizers import SGRVQVAE, CheckpointError, TokenizerInputError
from motion_tokenizers.sg_rvq import _gaussian, _savgol, _windowed, read_sg_checkpoint

DATA = Path(__file__).parent / "data" / "sg_rvq_reference"
CKPT = DATA / "rqvae.pt"
META = json.loads((DATA / "reference_meta.json").read_text())
# Float outputs: the reference itself moves by up to 8.3e-7 between 1 and 4 threads (measured,
# reference_meta.json), and ours differed from the recording by at most 7.8e-7 (savgol on the
# motion; 0.0 for the unfiltered paths) at 1 and 2 threads. 1e-5 is ~12x that floor, far
# below any real discrepancy (a wrong window or code moves outputs by ~1e-2).
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tiny models are all per-op overhead: on the shared 2-core box the 24-step training
    # fixture took 7.0 s at 1 thread and 101.8 s at 2 (measured); results are the same to 3e-4
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref():
    r = np.load(DATA / "reference_outputs.npz")
    return {k: r[k] for k in r.files}


@pytest.fixture(scope="module")
def model():
    return motion_tokenizers.from_reference_checkpoint(CKPT)


def _x(ref, key):
    return torch.from_numpy(ref[key].astype(np.float32))


def _codes(ref, which):
    # the reference returns (Q, B, N); ours is (B, N, Q)
    return {
        p: torch.from_numpy(ref[f"codes_{which}_{p}"]).permute(1, 2, 0) for p in ("body", "hands")
    }


def test_dispatch_and_config_from_file(model):
    assert isinstance(model, SGRVQVAE)
    assert model.joints == {
        "body": META["config"]["body_joints"],
        "hands": META["config"]["hands_joints"],
    }
    assert model.joint_num == 12 and model.input_dim == 39 and not model.training


@pytest.mark.parametrize("which", ["short", "long"])
def test_encode_codes_equal_reference(model, ref, which):
    codes = model.encode(_x(ref, f"x_{which}"))
    want = _codes(ref, which)
    for p in ("body", "hands"):
        assert codes[p].dtype == torch.long and codes[p].shape == want[p].shape
        assert torch.equal(codes[p], want[p]), p


DECODES = {
    "decode_short": ("short", {}),
    "decode_long": ("long", {}),
    "decode_long_savgol": ("long", {"filter": "savgol"}),
    "decode_long_gaussian_insert": (
        "long",
        {"filter": "gaussian", "insert_windows": [(2, 6), (11, 16)]},
    ),
    "decode_long_gaussian_rq": ("long", {"filter": "gaussian", "filter_pos": "rq_code"}),
    "decode_long_savgol_motion": ("long", {"filter": "savgol", "filter_pos": "motion_info"}),
}


@pytest.mark.parametrize("key", list(DECODES))
def test_decode_matches_reference(model, ref, key):
    which, kw = DECODES[key]
    out = model.decode(_codes(ref, which), **kw).numpy()
    assert out.shape == ref[key].shape
    np.testing.assert_allclose(out, ref[key], rtol=0, atol=ATOL)


def test_insert_windows_change_the_decode(model, ref):
    # the pasted windows are decoded with their own context: the result differs from the
    # stride-1 stitch inside them (so the parity test above checks something)
    plain = model.decode(_codes(ref, "long"), filter="gaussian")
    ins = model.decode(_codes(ref, "long"), filter="gaussian", insert_windows=[(2, 6), (11, 16)])
    assert (plain - ins).abs().max() > 1e-3


def test_forward_inference_bottleneck_match_reference(model, ref):
    with torch.no_grad():
        recon, loss, metrics = model(_x(ref, "x_batch"))
    np.testing.assert_allclose(recon.numpy(), ref["forward_recon"], rtol=0, atol=ATOL)
    got = [loss.item(), metrics["loss_body"].item(), metrics["loss_hands"].item()]
    np.testing.assert_allclose(got, ref["forward_loss"], rtol=0, atol=ATOL)
    for p in ("body", "hands"):
        for k in ("recons_loss", "commit_loss", "velocity_loss", "acceleration_loss"):
            np.testing.assert_allclose(
                metrics[f"{p}/{k}"].item(), ref[f"forward_{p}_{k}"], atol=ATOL
            )
    for which in ("short", "long"):
        out = model.inference(_x(ref, f"x_{which}")).numpy()
        np.testing.assert_allclose(out, ref[f"inference_{which}"], rtol=0, atol=ATOL)
    cols = torch.from_numpy(ref["bneck_codes_in"]).T  # (6, Q)
    np.testing.assert_allclose(
        model.codes_to_latent("body", cols).numpy(), ref["bneck_decode"], atol=ATOL
    )
    hands_cols = _codes(ref, "long")["hands"][0, 3:9]
    np.testing.assert_allclose(
        model.codes_to_latent("hands", hands_cols).numpy(), ref["bneck_decode_hands"], atol=ATOL
    )
    codes = model.latent_to_codes("body", _x(ref, "bneck_blend"))
    assert torch.equal(codes, torch.from_numpy(ref["bneck_encode"]))


def test_training_step_matches_reference(ref):
    """One train-mode step from the loaded file: the codebooks are re-initialised from the batch
    and EMA-updated with the reference's random draws (same seed, same draw order)."""
    m = SGRVQVAE.from_reference_checkpoint(CKPT).train()
    torch.manual_seed(7)
    recon, loss, metrics = m(_x(ref, "x_train"))
    loss.backward()
    np.testing.assert_allclose(recon.detach().numpy(), ref["train_recon"], rtol=0, atol=ATOL)
    got = [loss.item(), metrics["loss_body"].item(), metrics["loss_hands"].item()]
    np.testing.assert_allclose(got, ref["train_loss"], rtol=0, atol=ATOL)
    for p in ("body", "hands"):
        books = torch.stack([layer.codebook for layer in getattr(m, p).quantizer.layers])
        # codebooks: reference floor 9.5e-7 between thread counts (reference_meta.json)
        np.testing.assert_allclose(books.numpy(), ref[f"train_codebooks_{p}"], rtol=0, atol=ATOL)
    grad = m.body.encoder.model[0][0].weight.grad.numpy()
    np.testing.assert_allclose(grad, ref["train_grad_enc_in_body"], rtol=0, atol=ATOL)


def test_parameter_counts_match_reference_class():
    with torch.device("meta"):
        big = SGRVQVAE.sg()
    assert sum(p.numel() for p in big.parameters()) == META["sg_param_count"] == 84_894_900
    assert big.input_dim == 219 and big.downsample == 8 and big.num_quantizers == 4
    assert sum(p.numel() for p in SGRVQVAE.tiny().parameters()) == META["tiny_param_count"]


def test_save_pretrained_round_trip(model, ref, tmp_path):
    m = SGRVQVAE.from_reference_checkpoint(CKPT).train()
    torch.manual_seed(0)
    m(_x(ref, "x_train"))  # sets the EMA state, which save_pretrained keeps
    m.eval()
    m.save_pretrained(tmp_path / "sg")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "sg").iterdir()}
    back = SGRVQVAE.from_pretrained(tmp_path / "sg")
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert bool(back.body.quantizer.layers[0].initted)
    x = _x(ref, "x_long")
    assert torch.equal(m.inference(x), back.inference(x))
    assert back.joints == model.joints


def test_bad_inputs_name_the_field(model):
    with pytest.raises(TokenizerInputError, match=r"\(B, T, 39\).*found \(1, 16, 38\)"):
        model.encode(torch.zeros(1, 16, 38))
    x = torch.zeros(1, 16, 39)
    x[0, 3, 5] = float("nan")
    with pytest.raises(TokenizerInputError, match="NaN"):
        model.inference(x)
    with pytest.raises(TokenizerInputError, match="multiple of 8, found T=12"):
        model.encode(torch.zeros(1, 12, 39))
    good = {p: torch.zeros(1, 4, 4, dtype=torch.long) for p in ("body", "hands")}
    with pytest.raises(TokenizerInputError, match=r"codes\['hands'\].*\[0, 16\)"):
        model.decode({**good, "hands": torch.full((1, 4, 4), 16)})
    with pytest.raises(TokenizerInputError, match="expected keys"):
        model.decode({"body": good["body"]})
    with pytest.raises(TokenizerInputError, match="at least 5 tokens"):
        model.decode(good, filter="savgol")
    with pytest.raises(TokenizerInputError, match="insert_windows"):
        model.decode(good, insert_windows=[(3, 9)])
    with pytest.raises(TokenizerInputError, match="part"):
        model.codes_to_latent("face", good["body"][0])


def test_bad_checkpoints_name_file_and_key(tmp_path):
    state, config = read_sg_checkpoint(CKPT)
    dropped = "vqvae_hands.decoders.0.out.weight"
    broken = {"module." + k: v for k, v in state.items() if k != dropped}
    path = tmp_path / "rqvae_missing.pt"
    torch.save({"model": broken, "optimizer": {}, "config": config, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=rf"rqvae_missing\.pt.*{dropped}"):
        motion_tokenizers.from_reference_checkpoint(path)
    del config["structure"]["hands"]["joint_indexes"]
    path = tmp_path / "rqvae_noconf.pt"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "config": config}, path)
    with pytest.raises(CheckpointError, match=r"rqvae_noconf\.pt.*structure\.hands\.joint_indexes"):
        SGRVQVAE.from_reference_checkpoint(path)
    cut = tmp_path / "rqvae_cut.pt"
    cut.write_bytes(CKPT.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"rqvae_cut\.pt"):
        SGRVQVAE.from_reference_checkpoint(cut)
    with pytest.raises(CheckpointError, match="not found"):
        SGRVQVAE.from_reference_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("n", [15, 16, 17, 23, 40])
@pytest.mark.parametrize("stride", [1, 2, 4, 15])
def test_window_stitching(n, stride):
    # a "transformer" that writes each frame's position inside its window: the stitched output
    # holds 0..14 for the first window, and later frames come from the end of their window
    def tf(w):
        return torch.arange(w.shape[1], dtype=torch.float).view(1, -1, 1).expand(w.shape[0], -1, 1)

    x = torch.zeros(2, n, 1)
    out = _windowed(tf, x, 15, stride)[0, :, 0]
    assert out.shape == (n,)
    assert torch.equal(out[:15], torch.arange(15.0))
    assert bool((out[15:] >= 15 - stride).all())
    ident = torch.randn(2, n, 3)
    assert torch.equal(_windowed(lambda w: w, ident, 15, stride), ident)


def test_filters_equal_scipy():
    """savgol / gaussian against scipy (1.17.1, recorded in scipy_filters.npz: importing
    scipy.signal alone costs seconds, and scipy is no dependency of this library)."""
    rec = np.load(DATA / "scipy_filters.npz")
    x = rec["x"]  # (40, 6) float32, standard normal
    # ours works in float64 and rounds to float32; scipy was run on the float64 signal, so the
    # difference is the float32 rounding (measured max 5.9e-8 at |x| ~ 3). scipy's own float32
    # path fits the edges less precisely (3.3e-5 away from its float64 answer for (24, 4)).
    for wl, order in [(5, 2), (24, 4), (7, 3)]:
        want = rec[f"savgol_{wl}_{order}"]
        np.testing.assert_allclose(_savgol(x, wl, order), want, rtol=0, atol=1e-6)
    for sigma, length in [(2.0, 40), (5.0, 40), (5.0, 9)]:  # 9 < the sigma-5 kernel radius 20
        want = rec[f"gaussian_{sigma:g}_{length}"]
        np.testing.assert_allclose(_gaussian(x[:length], sigma), want, rtol=0, atol=1e-6)


def _gestures(n: int, T: int, C: int, seed: int) -> torch.Tensor:
    """Gesture-like motion (n, T, C): six beat oscillators (0.5-3 Hz, random phase and
    amplitude per clip) mixed into all channels by one shared synergy matrix, so channels
    move together as joints do."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(6, C, generator=g) * 0.3
    t = torch.arange(T) / 30.0
    f = torch.rand(n, 6, 1, generator=g) * 2.5 + 0.5
    phase = torch.rand(n, 6, 1, generator=g) * 6.283
    amp = torch.rand(n, 6, 1, generator=g)
    return (amp * torch.sin(6.283 * f * t + phase)).transpose(1, 2) @ mix


@pytest.fixture(scope="module")
def trained():
    """The tiny model on an SMPL-X axis-angle layout (55 joints + translation in slot 55),
    trained 24 steps with the reference's optimizer (AdamW, betas 0.9/0.999) at lr 3e-3."""
    torch.manual_seed(0)
    m = SGRVQVAE.tiny(joint_num=55, body_joints=[*range(22), 55], hands_joints=list(range(25, 55)))
    data = _gestures(8, 64, 168, seed=1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.999), weight_decay=0)
    m.train()
    losses = []
    for step in range(24):
        _, loss, _ = m(data[(step % 2) * 4 : (step % 2) * 4 + 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return m.eval(), losses, data


def test_training_lowers_the_loss(trained):
    m, losses, data = trained
    # measured: step 0 2.562, mean of the last 3 steps 2.008 (ratio 0.78; 1 and 2 threads agree
    # to 3e-4); 0.9 still fails a model that does not learn
    assert np.mean(losses[-3:]) < 0.9 * losses[0], losses
    assert all(np.isfinite(losses))
    codes = m.encode(data[:2])
    assert codes["body"].shape == (2, 8, 4) and codes["hands"].shape == (2, 8, 4)
    # slots in neither part (22, 23, 24: jaw and eyes) decode as zeros
    out = m.decode(codes).reshape(2, 64, 56, 3)
    assert torch.equal(out[:, :, 22:25], torch.zeros_like(out[:, :, 22:25]))
    assert out[:, :, :22].abs().mean() > 0

import pytest
import torch
from torch.nn import functional as F

from motion_tokenizers import (
    RVQVAE,
    VQVAE,
    CheckpointError,
    MultiPartTokenizer,
    TokenizerInputError,
    pad_to_multiple,
)
from motion_tokenizers.encdec import upsample_conv1d

from .conftest import smooth_motion

KINDS = ["rvq", "vq", "fsq", "rfsq", "lfq"]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes_and_eval_invariant(kind):
    torch.manual_seed(0)
    model = RVQVAE.tiny(78, quantizer=kind)
    x = smooth_motion(4, 32, 78)
    out = model(x)  # training mode: initialises the codebooks
    Q = model.num_quantizers
    assert out.recon.shape == (4, 32, 78)
    assert out.indices.shape == (4, 8, Q) and out.indices.dtype == torch.long
    assert out.commit_loss.ndim == 0 and out.perplexity.ndim == 0
    assert 1.0 <= out.perplexity.item() <= model.codebook_size
    model.eval()
    with torch.no_grad():
        z = model.encode_continuous(x)
        assert z.shape == (4, 8, model.latent_dim)
        idx = model.encode(x)
        assert idx.shape == (4, 8, Q) and (idx >= 0).all()
        # the contract: decoding the indices equals re-quantising the continuous latent
        torch.testing.assert_close(
            model.decode_indices(idx), model.decode_latent(z), rtol=0, atol=0
        )
        # and both equal the eval forward pass
        torch.testing.assert_close(model(x).recon, model.decode_indices(idx), rtol=1e-5, atol=1e-5)


def test_vqvae_t2m_gpt_shapes():
    model = VQVAE.tiny()
    x = smooth_motion(2, 64, 263)
    out = model(x)
    assert out.indices.shape == (2, 16, 1)
    model.eval()
    assert model.decode_indices(model.encode(x)).shape == (2, 64, 263)


def test_downsampling_8x():
    model = RVQVAE.tiny(66, down_t=3)
    assert model.downsample_factor == 8
    assert model.encode(smooth_motion(1, 64, 66)).shape == (1, 8, 3)


def test_polyphase_upsample_equals_literal_upsample_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(24, 24, 3, 1, 1)
    x = torch.randn(3, 24, 17)
    fast, slow = upsample_conv1d(x, conv), upsample_conv1d(x, conv, polyphase=False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert fast.shape == (3, 24, 34)


def test_bad_input_errors():
    model = RVQVAE.tiny(78)
    with pytest.raises(ValueError, match=r"expected shape \(B, T, 78\), found \(2, 16, 77\)"):
        model(torch.zeros(2, 16, 77))
    with pytest.raises(ValueError, match="expected shape"):
        model(torch.zeros(16, 78))
    x = torch.zeros(2, 16, 78)
    x[1, 3, 5] = float("nan")
    with pytest.raises(TokenizerInputError, match="NaN or inf"):
        model(x)
    x[1, 3, 5] = float("inf")
    with pytest.raises(TokenizerInputError, match="NaN or inf"):
        model.encode(x)
    with pytest.raises(ValueError, match="shorter than 4 frames"):
        model(torch.zeros(2, 2, 78))
    with pytest.raises(ValueError, match="not divisible by 4"):
        model.encode_continuous(torch.zeros(2, 18, 78))
    with pytest.raises(ValueError, match="integer"):
        model.decode_indices(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="values must be in"):
        model.decode_indices(torch.full((1, 4, 3), 64))
    with pytest.raises(ValueError, match="4 layers given"):
        model.decode_indices(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="quantizer kind"):
        RVQVAE(10, quantizer="pq")


def test_pad_to_multiple_crops_back():
    model = RVQVAE.tiny(12).eval()
    x = smooth_motion(2, 18, 12)
    padded, T = pad_to_multiple(x, model.downsample_factor)
    assert padded.shape[1] == 20 and T == 18
    torch.testing.assert_close(padded[:, 18:], x[:, -1:].expand(-1, 2, -1))
    assert model(padded).recon[:, :T].shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_bit_identical(tmp_path, kind):
    torch.manual_seed(0)
    model = RVQVAE.tiny(57, quantizer=kind)
    x = smooth_motion(3, 16, 57)
    model(x)  # k-means init + one EMA update, so buffers differ from a fresh model
    model.eval()
    model.save_pretrained(tmp_path / "tok")
    assert {p.name for p in (tmp_path / "tok").iterdir()} >= {"config.json", "model.safetensors"}
    loaded = RVQVAE.from_pretrained(tmp_path / "tok").eval()
    assert loaded.num_quantizers == model.num_quantizers
    with torch.no_grad():
        idx = model.encode(x)
        assert torch.equal(loaded.encode(x), idx)
        assert torch.equal(loaded.decode_indices(idx), model.decode_indices(idx))
        assert torch.equal(loaded(x).recon, model(x).recon)
    # no stray temporary folders left beside the checkpoint
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        RVQVAE.from_pretrained(tmp_path / "missing")  # never a hub download
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file not found"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text("{}")
        RVQVAE.from_pretrained(tmp_path / "empty")
    RVQVAE.tiny(12).save_pretrained(tmp_path / "t")
    data = (tmp_path / "t" / "model.safetensors").read_bytes()
    (tmp_path / "t" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        RVQVAE.from_pretrained(tmp_path / "t")


def test_multipart_roundtrip(tmp_path):
    torch.manual_seed(0)
    dims = {"upper": 78, "hands": 180, "lower": 57, "face": 100}
    tok = MultiPartTokenizer.tiny(dims)
    parts = {name: smooth_motion(2, 32, d, seed=i) for i, (name, d) in enumerate(dims.items())}
    for name, t in tok.parts.items():
        t(parts[name])  # initialise codebooks
    tok.eval()
    with torch.no_grad():
        z = tok.encode_continuous(parts)
        assert z.shape == (2, 8, 4 * 16)
        # GestureLSM divides the concatenated latents by latent_scale
        torch.testing.assert_close(
            z[..., :16] * 5.0, tok.parts["upper"].encode_continuous(parts["upper"])
        )
        out = tok.decode(z)
        assert {k: v.shape for k, v in out.items()} == {k: (2, 32, d) for k, d in dims.items()}
        idx = tok.encode(parts)
        for name in dims:
            assert torch.equal(out[name], tok.decode_indices(idx)[name])
        tok.save_pretrained(tmp_path / "mp")
        loaded = MultiPartTokenizer.from_pretrained(tmp_path / "mp").eval()
        assert loaded.part_names == list(dims)
        for name, v in loaded.decode(z).items():
            assert torch.equal(v, out[name])
    with pytest.raises(ValueError, match=r"missing \['face'\]"):
        tok.encode_continuous({k: v for k, v in parts.items() if k != "face"})
    with pytest.raises(ValueError, match="expected shape"):
        tok.decode(torch.zeros(1, 8, 63))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_presets_on_meta_device():
    """Parameter counts of the paper-size presets, built without allocating memory.

    The EMA codebooks are buffers, not parameters, as in MoMask/GestureLSM, so the counts are the
    convolutions'. Checked by hand for the upper part (78 in, width 512, code 128, depth 3):
    encoder 120,320 + 2 x (1,049,088 + 3 x 1,049,600) + 196,736 = 8,712,832; decoder
    197,120 + 2 x (3,148,800 + 786,944) + 786,944 + 119,886 = 8,975,438; total 17,688,270.
    """
    with torch.device("meta"):
        upper = RVQVAE.gesturelsm("upper")
        hands = RVQVAE.gesturelsm("hands")
        t2m = VQVAE.t2m_gpt()
        seg = MultiPartTokenizer.semantic_gesticulator()
        lsm = MultiPartTokenizer.gesturelsm()
    assert next(upper.parameters()).is_meta
    assert _count(upper) == 17_688_270
    assert _count(hands) == 18_001_716
    assert _count(t2m) == 19_436_807
    assert _count(lsm) == 71_069_599
    assert _count(seg) == 54_077_620
    assert lsm.latent_dim == 512 and lsm.downsample_factor == 4
    assert seg.downsample_factor == 8 and seg.parts["body"].num_quantizers == 4
    assert upper.codebook_size == 1024 and upper.num_quantizers == 6 and upper.latent_dim == 128
    assert t2m.codebook_size == 512 and t2m.latent_dim == 512


def test_polyphase_weight_cache_follows_weight_updates():
    torch.manual_seed(0)
    model = RVQVAE.tiny(12, width=16).eval()
    plain = RVQVAE.tiny(12, width=16, polyphase_upsample=False).eval()
    z = torch.randn(2, 4, 16)
    with torch.no_grad():
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.decode(z), plain.decode(z), rtol=1e-5, atol=1e-6)
        for m in (model, plain):  # an in-place update (optimizer step, load_state_dict)
            m.decoder.model[2][2].weight.mul_(1.5)
        torch.testing.assert_close(model.decode(z), plain.decode(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k, dilation", [(1, 1), (2, 1), (3, 1), (3, 3), (3, 9), (15, 1)])
def test_conv1d_tokens_equals_conv1d(k, dilation):
    """The token-major GEMM convolution of the range decoder is ``F.conv1d`` (measured max
    difference up to 3.1e-7 of the output's largest value at these sizes: float summation order;
    bound 1e-5 of it)."""
    from motion_tokenizers.encdec import conv1d_tokens

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 40, 24), torch.randn(32, 24, k), torch.randn(32)
    pad = dilation * (k - 1) // 2
    want = F.conv1d(x.transpose(1, 2), w, b, padding=pad, dilation=dilation).transpose(1, 2)
    got = conv1d_tokens(x, w, b, pad, dilation)
    assert got.shape == want.shape
    err = ((got - want).abs().max() / want.abs().max()).item()
    assert err < 1e-5, err


@pytest.mark.parametrize("kw", [{}, {"polyphase_upsample": False}, {"norm": "LN"}])
def test_decoder_forward_range_equals_the_slice_of_a_full_decode(kw):
    """Only the cone of positions the frames depend on is computed; the values are the full
    decode's (measured difference up to 2.8e-7 at the sequence end: float rounding of convs
    over shorter tensors)."""
    from motion_tokenizers.encdec import Conv1dDecoder

    torch.manual_seed(0)
    dec = Conv1dDecoder(12, 16, width=24, **kw).eval()
    z = torch.randn(2, 23, 16)
    with torch.no_grad():
        full = dec(z)
        assert full.shape == (2, 92, 12)
        for lo, hi in [(0, 92), (0, 8), (40, 56), (41, 42), (80, 92), (88, 120), (-5, 3)]:
            part = dec.forward_range(z, lo, hi)
            torch.testing.assert_close(part, full[:, max(lo, 0) : hi], rtol=0, atol=1e-6)
    # a decoder that mixes time in its norm has no fixed cone: the slice of a full decode
    gn = Conv1dDecoder(12, 16, width=32, norm="GN").eval()
    with torch.no_grad():
        torch.testing.assert_close(gn.forward_range(z, 40, 56), gn(z)[:, 40:56])


def test_multipart_decode_of_a_frame_range():
    torch.manual_seed(0)
    dims = {"upper": 78, "hands": 180}
    tok = MultiPartTokenizer.tiny(dims).eval()
    z = torch.randn(1, 12, 2 * 16)
    with torch.no_grad():
        for requantize in (True, False):
            full = tok.decode(z, requantize=requantize)
            part = tok.decode(z, requantize=requantize, frames=(20, 36))
            for name in dims:
                torch.testing.assert_close(part[name], full[name][:, 20:36], rtol=0, atol=1e-6)
        # the same through one part's indices, the way a stream of codes would decode them
        upper = tok.parts["upper"]
        idx = upper.quantize(tok.split_latents(z)["upper"]).indices
        torch.testing.assert_close(
            upper.decode_indices(idx, frames=(20, 36)),
            upper.decode_indices(idx)[:, 20:36],
            rtol=0,
            atol=1e-6,
        )

"""GestureLSM's spatial-temporal denoiser: frame alignment, null condition, seed, preset."""

import pytest
import torch

import flow_backbones as fb
from flow_backbones import SpatialTemporalDenoiser
from flow_backbones.spatial_temporal import frames_to_tokens, tokens_to_frames


def randomize(model, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def test_frame_tokens_hold_one_frame_of_every_part():
    B, P, N, D = 1, 3, 5, 2
    h = torch.zeros(B, P, N, D)
    for p in range(P):
        for n in range(N):
            h[0, p, n] = 10 * p + n  # value encodes (part, frame)
    f = frames_to_tokens(h)
    assert f.shape == (1, 5, 6)
    assert f[0, 2].tolist() == [2, 2, 12, 12, 22, 22]  # frame 2 of parts 0, 1, 2
    assert torch.equal(tokens_to_frames(f, P), h)
    # the reference's view() would mix frames of one part into a token instead
    assert h.reshape(B, N, P * D)[0, 2].tolist() != f[0, 2].tolist()


def test_cross_attention_is_frame_aligned():
    """With no spatial-temporal layers, frames only meet through cross-attention to the audio:
    perturbing latent frame 5 (of any part) must change output frame 5 and nothing else."""
    m = randomize(SpatialTemporalDenoiser.tiny(num_layers=0))
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 8, 12, generator=g), torch.randn(2, 8, 12, generator=g)
    t = torch.rand(2, generator=g)
    out = m(x, t, None, cond)
    x2 = x.clone()
    x2[:, 5, 0:4] += 1.0  # part 0, frame 5
    diff = (m(x2, t, None, cond) - out).abs().amax(dim=(0, 2))
    assert diff[5] > 1e-3
    assert diff[torch.arange(8) != 5].max() == 0


def test_null_condition_and_seed():
    m = randomize(SpatialTemporalDenoiser.tiny())
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(2, 8, 12, generator=g), torch.randn(2, 8, 12, generator=g)
    t, d = torch.rand(2, generator=g), torch.full((2,), 0.25)
    seed = torch.randn(2, 2, 12, generator=g)
    full = m(x, t, d, {"features": cond, "seed": seed})
    keep = torch.tensor([True, False])
    part = m(x, t, d, cond, keep, seed=seed)
    torch.testing.assert_close(part[0], full[0])
    # a dropped row sees the learned null condition, as if no features were given
    torch.testing.assert_close(part[1], m(x, t, d, None, seed=seed)[1], atol=1e-5, rtol=1e-5)
    assert (part[1] - full[1]).abs().max() > 1e-3
    assert (m(x, t, d, cond, seed=seed + 1) - full).abs().max() > 1e-3
    # the step size is an input of the shortcut model
    assert (m(x, t, 0.5 * d, cond, seed=seed) - full).abs().max() > 1e-4


def test_bad_inputs():
    m = SpatialTemporalDenoiser.tiny()
    x = torch.randn(2, 8, 12)
    with pytest.raises(fb.FlowInputError, match=r"x: expected shape \(B, N, 12\)"):
        m(torch.randn(2, 8, 10), 0.5)
    with pytest.raises(fb.FlowInputError, match=r"cond: expected shape \(2, S, 12\)"):
        m(x, 0.5, None, torch.randn(2, 8, 7))
    with pytest.raises(fb.FlowInputError, match="max_cond_len"):
        m(x, 0.5, None, torch.randn(2, 17, 12))
    with pytest.raises(fb.FlowInputError, match="seed"):
        m(x, 0.5, seed=torch.randn(2, 3, 12))
    with pytest.raises(fb.FlowInputError, match=r"\[0, 1\]"):
        m(x, 2.0)


def test_save_load(tmp_path):
    m = randomize(SpatialTemporalDenoiser.tiny())
    m.save_pretrained(tmp_path / "st")
    m2 = SpatialTemporalDenoiser.from_pretrained(tmp_path / "st").eval()
    x, cond = torch.randn(1, 8, 12), torch.randn(1, 4, 12)
    assert torch.equal(m(x, 0.3, 0.1, cond), m2(x, 0.3, 0.1, cond))


def test_gesturelsm_preset_on_meta_device():
    """GestureLSM's denoiser has 30.6M parameters (measured on the reference); ours has
    30,508,160. The blocks match the reference layer for layer (3 cross blocks at 768:
    21,268,224 here; 8 spatial-temporal blocks at 256: 8,427,520); the ~0.1M gap is the
    reference's rounding plus our extra key LayerNorm in the cross blocks (3 x 1,536) and
    biases the reference's modules may lack (not checked: the reference was not runnable)."""
    with torch.device("meta"):
        m = SpatialTemporalDenoiser.gesturelsm()
    assert m.num_parameters() == 30_508_160
    assert abs(m.num_parameters() - 30.6e6) / 30.6e6 < 0.005
    assert sum(p.numel() for p in m.cross_blocks.parameters()) == 21_268_224
    assert sum(p.numel() for p in m.blocks.parameters()) == 8_427_520


def test_cached_cross_attention_equals_uncached():
    """Keys/values computed once (for a batch of windows, or the null condition) and passed as
    ``cross_kv`` give the same velocity as the plain forward, in training mode too."""
    m = randomize(SpatialTemporalDenoiser.tiny(cross_layers=2))
    g = torch.Generator().manual_seed(3)
    x, cond = torch.randn(3, 8, 12, generator=g), torch.randn(3, 8, 12, generator=g)
    t, d, seed = torch.rand(3, generator=g), torch.full((3,), 0.5), torch.randn(3, 2, 12)
    keep = torch.tensor([True, False, True])
    with torch.inference_mode():
        plain = m(x, t, d, cond, keep, seed=seed)
        kv = m.cross_kv(cond, keep, n_frames=8)
        torch.testing.assert_close(
            m(x, t, d, None, seed=seed, cross_kv=kv), plain, atol=1e-5, rtol=0
        )
        # one window's slice of a batched cache, and the null condition's cache
        one = [(k[2:], v[2:]) for k, v in kv]
        out = m(x[2:], t[2:], d[2:], None, seed=seed[2:], cross_kv=one)
        torch.testing.assert_close(out, plain[2:], atol=1e-5, rtol=0)
        null = m.cross_kv(None, n_frames=8)
        out = m(x[1:2], t[1:2], d[1:2], None, seed=seed[1:2], cross_kv=null)
        torch.testing.assert_close(out, plain[1:2], atol=1e-5, rtol=0)
    with pytest.raises(fb.FlowInputError, match="cross_kv"):
        m(x[:2], t[:2], d[:2], cross_kv=kv)
    m.train()
    torch.manual_seed(0)
    a = m(x, t, d, cond, keep, seed=seed)
    torch.manual_seed(0)
    b = m(x, t, d, None, seed=seed, cross_kv=m.cross_kv(cond, keep, n_frames=8))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    b.sum().backward()  # cached rotary tables made under inference_mode are not reused here

"""DiT: sequence and video inputs, cross-attention, channel conditions, dropout, errors."""

import pytest
import torch

import flow_backbones as fb
from flow_backbones import DiT


def randomize(model, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def test_sequence_with_tokens_mask_and_dropout():
    m = randomize(DiT.tiny(cond_dim=6))
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 10, 4, generator=g), torch.rand(2, generator=g)
    tok = torch.randn(2, 5, 6, generator=g)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    out = m(x, t, None, {"tokens": tok, "tokens_mask": mask})
    assert out.shape == (2, 10, 4)
    tok2 = tok.clone()
    tok2[0, 3:] = 50.0  # padded condition tokens of row 0
    torch.testing.assert_close(m(x, t, None, {"tokens": tok2, "tokens_mask": mask}), out)
    # a dropped row equals running with no tokens at all (the learned null token)
    keep = torch.tensor([False, True])
    dropped = m(x, t, None, {"tokens": tok, "tokens_mask": mask}, keep)
    null = m(x, t)
    torch.testing.assert_close(dropped[0], null[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dropped[1], out[1])


def test_channel_concat_condition():
    m = randomize(DiT.tiny(concat_channels=2))
    x, ch = torch.randn(1, 6, 4), torch.randn(1, 6, 2)
    a = m(x, torch.tensor([0.5]), None, {"channels": ch})
    b = m(x, torch.tensor([0.5]), None, {"channels": ch + 1})
    assert (a - b).abs().max() > 1e-3
    c = m(x, torch.tensor([0.5]), None, {"channels": ch}, torch.tensor([False]))
    torch.testing.assert_close(c, m(x, torch.tensor([0.5]), None, {"channels": 0 * ch}))
    with pytest.raises(fb.FlowInputError, match=r"cond\['channels'\]"):
        m(x, 0.5, None, {"channels": torch.randn(1, 6, 3)})


def test_video_patches_roundtrip_and_reference_frames():
    m = randomize(DiT.tiny(video=True, patch_size=(1, 2, 2)))
    x = torch.randn(1, 4, 3, 4, 6)
    out = m(x, torch.tensor([0.3]))
    assert out.shape == x.shape
    # patchify / unpatchify are inverse: with identity projections the layout is preserved
    p = m._tokens(x, 0)[0]
    assert p.shape == (1, 3 * 2 * 3, 32)
    # two reference frames share temporal position 0 (one reference at 0 followed by the
    # video at 1, 2 is the plain numbering, so it takes two to move a position)
    ref = m(x, torch.tensor([0.3]), reference_frames=2)
    assert (ref - out).abs().max() > 1e-4  # positions changed
    with pytest.raises(fb.FlowInputError, match="patch_size"):
        m(torch.randn(1, 4, 3, 5, 6), 0.3)


def test_video_layout_is_preserved_by_patchify():
    m = DiT.tiny(video=True, patch_size=(1, 2, 2), in_channels=1, dim=4, num_heads=1)
    with torch.no_grad():
        m.in_proj.weight.copy_(torch.eye(4))
        m.in_proj.bias.zero_()
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 1, 2, 4, 4)
    tok, pos, grid = m._tokens(x, 0)
    # token 0 holds the top-left 2x2 patch of frame 0
    assert tok[0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert grid == (2, 2, 2) and pos[4].tolist() == [1.0, 0.0, 0.0]
    with torch.no_grad():
        m.out_proj.weight.copy_(torch.eye(4))
        m.out_proj.bias.zero_()
    assert torch.equal(m._untokens(tok, grid), x)


def test_save_load_and_errors(tmp_path):
    m = randomize(DiT.tiny(cond_dim=3, step_size_cond=True))
    m.save_pretrained(tmp_path)
    m2 = DiT.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 5, 4)
    assert torch.equal(m(x, 0.2, 0.5), m2(x, 0.2, 0.5))
    with pytest.raises(fb.FlowInputError, match=r"expected shape \(B, N, 4\)"):
        m(torch.randn(2, 5), 0.2)
    with pytest.raises(fb.FlowInputError, match="4 channels"):
        m(torch.randn(2, 5, 3), 0.2)
    with pytest.raises(fb.FlowInputError, match=r"\[0, 1\]"):
        m(x, torch.tensor([-0.1, 0.5]))
    with pytest.raises(fb.FlowInputError, match="unknown key"):
        m(x, 0.2, None, {"audio": x})


def test_gradient_checkpointing_same_gradients_dit_and_denoiser():
    cases = [
        (
            lambda: DiT.tiny(cond_dim=3),
            lambda m: m(torch.ones(2, 5, 4), 0.3, None, {"tokens": torch.ones(2, 2, 3)}),
        ),
        (
            lambda: fb.SpatialTemporalDenoiser.tiny(),
            lambda m: m(torch.ones(2, 8, 12), 0.3, 0.1, torch.ones(2, 8, 12)),
        ),
    ]
    for build, run in cases:
        grads = []
        for ckpt in (False, True):
            m = randomize(build()).train()
            m.enable_gradient_checkpointing(ckpt)
            run(m).square().sum().backward()
            # unused parameters (the null condition) have no gradient in either mode
            grads.append([p.grad for p in m.parameters()])
        for a, b in zip(*grads, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b)

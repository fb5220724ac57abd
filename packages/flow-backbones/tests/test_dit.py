"""DiT: sequence and video inputs, cross-attention, channel conditions, dropout, errors."""

import json

import pytest
import torch

import flow_backbones as fb
from flow_backbones import DiT
from flow_backbones.dit import FrameCrossAttention


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


# ---- frame-aligned cross-attention (OmniHuman audio injection) ----


def frame_dit(**kw):
    return DiT.tiny(video=True, frame_cond_dim=6, **kw)


def video_inputs(T=3, F=5, seed=1, patch_t=1):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 4, T, 4, 4, generator=g), torch.rand(2, generator=g)
    return x, t, torch.randn(2, T // patch_t, F, 6, generator=g)


def test_frame_branch_is_the_identity_until_its_output_projection_moves(tmp_path):
    # a DiT without the branch, and the same weights with a fresh branch whose inner weights
    # are random (so only the zero output projection keeps it silent)
    plain = randomize(DiT.tiny(video=True, cond_dim=5))
    m = frame_dit(cond_dim=5)
    missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert missing and all("frame" in k for k in missing)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for k in missing:
            if "to_out" not in k:
                p = m.get_parameter(k)
                p.copy_(torch.randn(p.shape, generator=g))
    m.eval()
    x, t, ft = video_inputs()
    cond = {"tokens": torch.randn(2, 4, 5)}
    out = m(x, t, None, {**cond, "frame_tokens": ft})
    assert out.shape == x.shape
    # exact: the branch adds a zero tensor to the residual stream
    assert torch.equal(out, plain(x, t, None, cond))
    assert torch.equal(out, m(x, t, None, {**cond, "frame_tokens": 10 * ft}))
    # the same through a checkpoint saved before the branch existed
    plain.save_pretrained(tmp_path / "old")
    grown = DiT.from_pretrained(tmp_path / "old", frame_cond_dim=6, strict=False)
    assert torch.equal(grown(x, t, None, {**cond, "frame_tokens": ft}), out)


def test_frame_branch_equals_one_attention_per_frame():
    # the branch alone against the loop it replaces: the queries of temporal position k (a
    # frame-major block of tokens) attend to the frame tokens of position k. Measured 0.0 at
    # 1 thread and 2.1e-7 at 2 threads on outputs of size about 1, so 2e-6.
    branch = randomize(FrameCrossAttention(32, 4, 6, qk_norm=True))
    g = torch.Generator().manual_seed(2)
    B, T, hw, F = 2, 3, 4, 5
    h, ft = torch.randn(B, T * hw, 32, generator=g), torch.randn(B, T, F, 6, generator=g)
    loop = [branch.attn(branch.norm(h[:, k * hw : (k + 1) * hw]), ft[:, k]) for k in range(T)]
    torch.testing.assert_close(branch(h, ft), torch.cat(loop, dim=1), atol=2e-6, rtol=0)


@pytest.mark.parametrize("patch_size", [(1, 2, 2), (2, 2, 2)])
def test_frame_tokens_reach_only_their_own_temporal_position(patch_size):
    # depth 1: a later block's self-attention would spread a change to every token. Measured:
    # the unchanged positions (and the other sample) differ by exactly 0.0 at 1 and 2 threads,
    # since they pass through the same kernels with bitwise-equal inputs; the changed position
    # moves by 0.8-1.3, so 1e-2 is far below it.
    pt = patch_size[0]
    m = randomize(frame_dit(depth=1, patch_size=patch_size))
    x, t, ft = video_inputs(T=6, F=3, patch_t=pt)
    out = m(x, t, None, {"frame_tokens": ft})
    for k in range(6 // pt):
        ft2 = ft.clone()
        ft2[0, k] += 1.0
        diff = (m(x, t, None, {"frame_tokens": ft2}) - out).abs()
        here = torch.zeros(6, dtype=torch.bool)
        here[k * pt : (k + 1) * pt] = True  # the frames of temporal token position k
        assert diff[0][:, here].max() > 1e-2
        assert diff[0][:, ~here].max() == 0.0
        assert diff[1].max() == 0.0


def test_dropped_rows_see_the_null_frame_token():
    m = randomize(frame_dit())
    x, t, ft = video_inputs()
    full = m(x, t, None, {"frame_tokens": ft})
    null_tokens = m.null_frame_token.detach().expand_as(ft)
    null = m(x, t, None, {"frame_tokens": null_tokens})
    for cond, keep in [
        ({"frame_tokens": ft}, torch.tensor([False, True])),
        ({"frame_tokens": ft, "frame_keep": torch.tensor([False, True])}, None),
    ]:
        out = m(x, t, None, cond, keep)
        assert torch.equal(out[0], null[0])  # exact: the same tokens go in
        assert torch.equal(out[1], full[1])
    # no frame tokens at all: one null token per position instead of F copies of it; measured
    # 1.2e-6-1.4e-6 apart (float32 rounding of an average of equal values) on outputs of size
    # about 5, so 1e-5
    torch.testing.assert_close(m(x, t)[0], null[0], atol=1e-5, rtol=0)
    assert (full[0] - null[0]).abs().max() > 1e-2  # the null token is not a no-op here


def test_frame_tokens_under_guidance_and_gradient_checkpointing():
    m = randomize(frame_dit())
    x, t, ft = video_inputs()
    d = torch.zeros(2)
    guided = fb.conditioned(m, {"frame_tokens": ft}, guidance=3.0)(x, t, d)
    ones = torch.ones(2, dtype=torch.bool)
    want = fb.cfg_combine(
        m(x, t, d, {"frame_tokens": ft}, ones),
        m(x, t, d, {"frame_tokens": ft}, ~ones),
        torch.full((2,), 3.0),
    )
    # one batch of 2B rows vs two of B: measured 6.9e-6-7.3e-6 apart (outputs about 15 after
    # the guidance weight 3), so 5e-5
    torch.testing.assert_close(guided, want, atol=5e-5, rtol=0)
    grads = []
    for ckpt in (False, True):
        m.train().enable_gradient_checkpointing(ckpt)
        m.zero_grad()
        m(x, t, d, {"frame_tokens": ft}).square().sum().backward()
        grads.append(m.blocks[0].frame_cross.attn.to_kv.weight.grad.clone())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_frame_cond_save_load_and_errors(tmp_path):
    m = randomize(frame_dit())
    m.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["frame_cond_dim"] == 6
    m2 = DiT.from_pretrained(tmp_path)
    x, t, ft = video_inputs()
    assert torch.equal(m(x, t, None, {"frame_tokens": ft}), m2(x, t, None, {"frame_tokens": ft}))
    bad = [
        (torch.randn(2, 2, 5, 6), r"expected shape \(2, 3, F, 6\).*found \(2, 2, 5, 6\)"),
        (torch.randn(1, 3, 5, 6), r"expected shape \(2, 3, F, 6\)"),
        (torch.randn(2, 3, 5, 4), r"expected shape \(2, 3, F, 6\)"),
        (torch.randn(2, 3, 6), r"expected shape \(2, 3, F, 6\).*found \(2, 3, 6\)"),
    ]
    for tokens, match in bad:
        with pytest.raises(fb.FlowInputError, match=r"cond\['frame_tokens'\]: " + match):
            m(x, t, None, {"frame_tokens": tokens})
    with pytest.raises(fb.FlowInputError, match=r"cond\['frame_keep'\]: .*\(2,\)"):
        m(x, t, None, {"frame_tokens": ft, "frame_keep": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(fb.FlowInputError, match="built without frame_cond_dim"):
        DiT.tiny(video=True)(x, t, None, {"frame_tokens": ft})
    with pytest.raises(fb.FlowInputError, match="built without frame_cond_dim"):
        DiT.tiny()(torch.randn(2, 5, 4), 0.5, None, {"frame_tokens": ft})
    with pytest.raises(fb.FlowInputError, match=r"frame_cond_dim: .*video=True.*video=False"):
        DiT.tiny(frame_cond_dim=6)


def test_reference_frame_then_video_positions_with_frame_tokens():
    # OmniHuman packs one reference latent frame before T video frames (pt = 1): temporal RoPE
    # position 0 for the reference tokens, 1..T for the frames after it
    m = randomize(frame_dit(patch_size=(1, 2, 2)))
    T, hw = 3, 2 * 2
    x, t, ft = video_inputs(T=T + 1)
    _, pos, grid = m._tokens(x, 1)
    assert grid == (T + 1, 2, 2)
    assert pos[:, 0].tolist() == [float(i) for i in range(T + 1) for _ in range(hw)]
    _, pos2, _ = m._tokens(x, 2)
    assert pos2[:, 0].tolist() == [0.0] * 2 * hw + [1.0] * hw + [2.0] * hw
    # frame tokens for the video frames only: the reference position sees the null token
    null = m.null_frame_token.detach().expand(2, 1, ft.shape[2], 6)
    packed = m(x, t, None, {"frame_tokens": torch.cat([null, ft[:, 1:]], 1)}, reference_frames=1)
    video_only = m(x, t, None, {"frame_tokens": ft[:, 1:]}, reference_frames=1)
    assert torch.equal(packed, video_only)
    with pytest.raises(fb.FlowInputError, match=r"\(2, 4, F, 6\).* or \(2, 3, F, 6\)"):
        m(x, t, None, {"frame_tokens": ft[:, 2:]}, reference_frames=1)

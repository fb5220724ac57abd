"""Time embedding with the step-size term, rotary and sin-cos positions, 3D positions."""

import torch

import flow_backbones as fb


def test_step_size_term_is_zero_at_init_and_learnable():
    emb = fb.TimeEmbedding(16, step_size_cond=True)
    t = torch.rand(4)
    base = emb(t)
    torch.testing.assert_close(emb(t, torch.full((4,), 0.5)), base)  # zero-initialised
    with torch.no_grad():
        emb.step_proj.weight.normal_()
    assert (emb(t, torch.full((4,), 0.5)) - base).abs().max() > 1e-3
    # a model without the term has no extra parameters
    plain = fb.TimeEmbedding(16)
    assert plain.step_proj is None
    assert (
        sum(p.numel() for p in emb.parameters()) - sum(p.numel() for p in plain.parameters())
        == 256 * 256
    )


def test_rotary_scores_depend_only_on_relative_position():
    rope = fb.RotaryEmbedding(8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(pq, pk):
        rq = rope.apply(q, rope.freqs(torch.tensor([float(pq)])))
        rk = rope.apply(k, rope.freqs(torch.tensor([float(pk)])))
        return (rq * rk).sum()

    torch.testing.assert_close(score(3, 1), score(12, 10))
    assert (score(3, 1) - score(3, 2)).abs() > 1e-4
    # rotation keeps the norm
    r = rope.apply(q, rope.freqs(torch.tensor([5.0])))
    torch.testing.assert_close(r.norm(), q.norm())


def test_3d_positions_and_reference_frames():
    pos = fb.grid_positions_3d(3, 2, 2)
    assert pos.shape == (12, 3)
    assert pos[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ref = fb.grid_positions_3d(3, 2, 2, reference_frames=1)
    # the reference frame is at temporal position 0, the video frames after it at 1, 2
    assert ref[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    two = fb.grid_positions_3d(4, 2, 2, reference_frames=2)
    # several references share position 0; the video still starts at 1
    assert two[:, 0].tolist() == [0] * 8 + [1] * 4 + [2] * 4
    assert torch.equal(ref[:, 1:], pos[:, 1:])
    rope = fb.RotaryEmbedding(8, axes_dim=(2, 2, 4))
    cos, _ = rope.freqs(ref)
    assert cos.shape == (12, 8)
    # zero temporal position: the time channels are not rotated
    torch.testing.assert_close(cos[:4, :2], torch.ones(4, 2))


def test_sincos_table():
    tab = fb.sincos_1d(8, 5)
    assert tab.shape == (5, 8)
    torch.testing.assert_close(tab[0], torch.tensor([0.0] * 4 + [1.0] * 4))

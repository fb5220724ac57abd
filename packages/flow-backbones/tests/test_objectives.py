"""Flow matching, shortcut, MeanFlow and reflow against models with known answers.

With point-mass data ``x1 = c`` every path from noise is a straight line to ``c`` at constant
speed, so the exact velocity ``(c - x) / (1 - t)`` is also the exact average velocity over any
jump: every objective must be ~0 for it and clearly positive for a wrong model.
"""

import torch

import flow_backbones as fb

C = torch.tensor([1.5, -0.5, 2.0])


def exact(x, t, d, cond, keep):
    return (C - x) / (1 - t).clamp_min(1e-6)[:, None]


def wrong(x, t, d, cond, keep):
    return 0.9 * exact(x, t, d, cond, keep)


def data(n=64):
    return C.expand(n, 3).clone()


def test_flow_matching_loss():
    g = torch.Generator().manual_seed(0)
    for weighting in ("none", "inv_t", "cosmap"):
        loss = fb.FlowMatchingLoss(weighting=weighting)
        assert loss(exact, data(), generator=g).loss < 1e-8
        assert loss(wrong, data(), generator=g).loss > 1e-2
    x1_loss = fb.FlowMatchingLoss(prediction="x1")
    assert x1_loss(lambda x, t, d, c, k: C.expand_as(x), data(), generator=g).loss == 0


def test_flow_matching_condition_dropout_rate_and_paired_noise():
    seen = {}

    def spy(x, t, d, cond, keep):
        seen.update(keep=keep, x=x, t=t, d=d)
        return torch.zeros_like(x)

    loss = fb.FlowMatchingLoss(cond_drop=0.25)
    g = torch.Generator().manual_seed(1)
    loss(spy, torch.zeros(20000, 1), generator=g)
    assert abs((~seen["keep"]).float().mean().item() - 0.25) < 0.015
    assert (seen["d"] == 0).all()
    x0 = torch.randn(4, 1)
    loss(spy, torch.ones(4, 1), x0=x0, t=torch.full((4,), 0.25))
    torch.testing.assert_close(seen["x"], 0.25 + 0.75 * x0)


def test_shortcut_loss_parts_step_sizes_and_dropout():
    g = torch.Generator().manual_seed(2)
    loss = fb.ShortcutLoss()
    out = loss(exact, data(128), generator=g)
    assert out.loss < 1e-8 and out.flow < 1e-8 and out.consistency < 1e-8
    bad = loss(wrong, data(128), generator=g)
    assert bad.flow > 1e-2 and bad.consistency > 1e-4

    calls = []

    def spy(x, t, d, cond, keep):
        calls.append(dict(n=x.shape[0], t=t.clone(), d=d.clone(), keep=keep.clone(), cond=cond))
        return torch.zeros_like(x)

    cond = torch.arange(8000.0)[:, None]
    loss(spy, torch.zeros(8000, 2), cond, generator=g)
    flow, c1, c2, c_out = calls
    assert flow["n"] == 6000 and c_out["n"] == 2000  # three quarters flow, one quarter
    assert torch.equal(flow["cond"], cond[:6000]) and torch.equal(c_out["cond"], cond[6000:])
    assert (flow["d"] == 0).all()
    d = c1["d"]
    assert set(d.unique().tolist()) == {2.0**-k for k in range(1, 8)}
    torch.testing.assert_close(c_out["d"], 2 * d)  # one jump of 2d against two of d
    torch.testing.assert_close(c2["t"], c1["t"] + d)
    assert (c1["t"] + 2 * d <= 1 + 1e-6).all()
    assert abs((~flow["keep"]).float().mean().item() - 0.1) < 0.015
    assert abs((~c1["keep"]).float().mean().item() - 0.8) < 0.03
    assert torch.equal(c1["keep"], c_out["keep"])


def test_meanflow_loss_zero_for_exact_and_jvp_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    loss = fb.MeanFlowLoss(flow_fraction=0.25)
    assert loss(exact, data(), generator=g).mse < 1e-8
    assert loss(wrong, data(), generator=g).mse > 1e-2

    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    def model(x, t, d, cond, keep):
        return net(torch.cat([x, t[:, None], d[:, None]], 1))

    x, v = torch.randn(4, 3), torch.randn(4, 3)
    t, d = torch.full((4,), 0.3), torch.full((4,), 0.2)
    keep = torch.ones(4, dtype=torch.bool)
    u, target = loss.target(model, x, t, d, v, None, keep)
    h = 1e-3
    with torch.no_grad():
        up = model(x + h * v, t + h, d - h, None, keep)
        um = model(x - h * v, t - h, d + h, None, keep)
    du = (up - um) / (2 * h)
    torch.testing.assert_close(target, v + d[:, None] * du, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(u, model(x, t, d, None, keep))


def test_reflow_pairs_follow_the_teacher_and_feed_the_loss():
    noise = fb.make_noise((10, 3), 4)
    cond = torch.randn(10, 3)

    def teacher(x, t, d, c, keep):
        return c - x  # pulls toward the condition

    pairs = fb.build_reflow_pairs(teacher, noise, cond, steps=5, batch_size=4)
    assert len(pairs) == 10
    ref = fb.sample_euler(fb.conditioned(teacher, cond), noise, 5)
    torch.testing.assert_close(pairs.sample, ref)
    n, s, c = pairs[3]
    assert torch.equal(n, noise[3]) and torch.equal(s, ref[3]) and torch.equal(c, cond[3])

    seen = {}

    def spy(x, t, d, c, keep):
        seen["x"] = x
        return torch.zeros_like(x)

    t = torch.full((10,), 0.5)
    fb.FlowMatchingLoss()(spy, pairs.sample, pairs.cond, x0=pairs.noise, t=t)
    torch.testing.assert_close(seen["x"], 0.5 * (pairs.sample + pairs.noise))


def test_meanflow_runs_through_every_backbone():
    """Forward-mode AD must pass through the backbones' attention (math SDPA kernel)."""
    g = torch.Generator().manual_seed(5)

    def randomize(model):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return model

    dit = randomize(fb.DiT.tiny(step_size_cond=True))
    st = randomize(fb.SpatialTemporalDenoiser.tiny())
    mm = randomize(fb.MMDiT.tiny(step_size_cond=True))

    def mm_fn(x, t, d, c, keep):
        return mm(
            {"gesture": x, "audio": c}, {"gesture": t, "audio": 1.0}, step_sizes={"gesture": d}
        )["gesture"]

    cases = [
        (dit, dit, torch.randn(4, 6, 4), None),
        (st, st, torch.randn(4, 8, 12), torch.randn(4, 8, 12)),
        (mm, mm_fn, torch.randn(4, 8, 8), torch.randn(4, 3, 4)),
    ]
    for module, fn, x1, cond in cases:
        out = fb.MeanFlowLoss()(fn, x1, cond, generator=g)
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.mse > 0
        grads = [p.grad.abs().sum() for p in module.parameters() if p.grad is not None]
        assert sum(grads) > 0


def test_meanflow_default_times_lean_towards_data():
    """The paper draws logit-normal(-0.4, 1) times in its own convention, where t = 0 is data;
    in library time (t = 0 noise, t = 1 data) the same distribution has logit mean +0.4.

    Read the times through the loss itself: with ``x0 = x1`` the target velocity is 0, with
    ``flow_fraction=1`` every row has ``r = t`` (``d = 0``), and a model that outputs ``t``
    makes the per-row error ``t^2`` with ``t = min(a, b)`` of two draws. Its mean is 0.249
    for logit mean +0.4 and 0.115 for the mirrored -0.4 (10^6-draw Monte Carlo); over 4096
    rows its standard error is 0.17 / 64 = 0.003, so 0.18 splits the two by > 20 errors.
    """
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4096, 3, generator=g)

    def outputs_t(x, t, d, cond, keep):
        return t[:, None].expand_as(x)

    loss = fb.MeanFlowLoss(flow_fraction=1.0, adaptive_p=0.0)
    out = loss(outputs_t, x1, x0=x1.clone(), generator=g)
    assert out.mse > 0.18

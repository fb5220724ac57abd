"""Tiny models learn toy distributions on CPU (the learning checks of the package).

Distances are energy distances between flattened samples, ``2 E|X-Y| - E|X-X'| - E|Y-Y'|``
(Szekely & Rizzo), a two-sample statistic that is 0 iff the distributions agree; we compare
its square root (a metric). Everything is seeded, so the figures in the docstrings reproduce
on the same torch build; thresholds leave room for other builds and BLAS libraries.
"""

import math

import pytest
import torch

import flow_backbones as fb
from flow_backbones import MMDiT, StreamSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def energy_distance(x, y):
    x, y = x.flatten(1), y.flatten(1)
    e = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    return e.clamp_min(0).sqrt().item()


K, LA, LB = 4, 2, 2  # modes, tokens of the condition stream "a", tokens of the target "b"


def two_stream_data(n, g):
    """Stream a says which of 4 modes (a noisy unit vector at angle 2 pi m / 4); stream b is
    that mode's pattern (the vector turned by 90 degrees and scaled, then its negative)."""
    m = torch.randint(0, K, (n,), generator=g)
    th = 2 * math.pi * m / K
    a = torch.stack([th.cos(), th.sin()], -1)[:, None].expand(n, LA, 2)
    a = a + 0.05 * torch.randn(n, LA, 2, generator=g)
    mu = 1.5 * torch.stack([-th.sin(), th.cos()], -1)
    b = torch.stack([mu, -mu], 1) + 0.1 * torch.randn(n, LB, 2, generator=g)
    return a, b, mu


@pytest.mark.slow
def test_tiny_mmdit_learns_a_conditional_two_stream_mixture():
    """Stream b is generated (20 Euler steps) given clean stream a; a is a context-only stream,
    dropped per row by hiding its tokens (10%) so the same model also learns p(b).

    Measured (torch 2.15 CPU, 1 thread, 400 AdamW steps of batch 256, ~10-12 s): distance of
    generated (a, b) pairs to fresh data 0.101; data vs fresh data 0.062 (the sampling floor
    of 1000 pairs); data with b shuffled across rows (right marginal, wrong mode) 0.511.
    Threshold 0.2: about 3x the floor and well under the wrong-mode answer (which is asserted
    above 0.4, so the statistic is shown to see the mistake it guards against). Mode accuracy
    (first b token within 0.5 of its mode's centre) measured 0.999; threshold 0.95.
    """
    torch.manual_seed(0)
    streams = {"a": StreamSpec(2, generate=False, context_only_last=True), "b": StreamSpec(2)}
    m = MMDiT(streams, dim=32, depth=2, num_heads=2, per_stream_time=True)

    def model(x, t, d, cond, keep):
        mask = {"a": keep[:, None].expand(-1, LA)}
        return m({"a": cond, "b": x}, {"a": 1.0, "b": t}, mask)["b"]

    loss_fn = fb.FlowMatchingLoss(t_sampler="logit_normal", cond_drop=0.1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        a, b, _ = two_stream_data(256, g)
        loss = loss_fn(model, b, a, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    m.eval()
    ge = torch.Generator().manual_seed(1)
    a, b, mu = two_stream_data(1000, ge)
    a_ref, b_ref, _ = two_stream_data(1000, ge)
    gen = fb.sample_euler(fb.conditioned(model, a), (1000, LB, 2), 20, generator=2)
    ref = torch.cat([a_ref, b_ref], 1)
    dist = energy_distance(torch.cat([a, gen], 1), ref)
    floor = energy_distance(torch.cat([a, b], 1), ref)
    wrong = energy_distance(torch.cat([a, b[torch.randperm(1000, generator=ge)]], 1), ref)
    assert dist < 0.2, (dist, floor, wrong)
    assert wrong > 0.4  # the statistic does see a wrong mode
    acc = ((gen[:, 0] - mu).norm(dim=-1) < 0.5).float().mean().item()
    assert acc > 0.95, acc


def ring_data(n, g):
    """4 modes at 45 + 90 k degrees, radius 1.5; token 2 is token 1 with x and y swapped."""
    m = torch.randint(0, 4, (n,), generator=g)
    th = 2 * math.pi * m / 4 + math.pi / 4
    mu = 1.5 * torch.stack([th.cos(), th.sin()], -1)
    return torch.stack([mu, mu.flip(-1)], 1) + 0.1 * torch.randn(n, 2, 2, generator=g)


@pytest.mark.slow
def test_shortcut_model_one_and_two_step_samples():
    """A tiny DiT trained with ShortcutLoss (GestureLSM settings: d in 1/2..1/128, 3/4 flow,
    1/4 self-consistency, Beta(2, 1.2) times, 1/t flow weight) samples in 1 and 2 steps.

    Measured (torch 2.15 CPU, 1 thread, 600 AdamW steps of batch 256, one-cycle schedule,
    ~20 s): distance to fresh data of the 32-step samples 0.112, 2-step 0.116 (1.04x), 1-step
    0.211 (1.9x); pure noise 0.54; data vs fresh data 0.095. Thresholds: 2-step within 2x and
    1-step within 3x of the 32-step distance (room for other builds, still far below noise),
    and 32-step under 0.2. The same network asked for one jump with d = 0 (what a plain
    flow-matching model would be asked) measured 1.08, worse than noise: that is what the
    step-size conditioning buys, asserted as 1-step < 0.7x that.
    """
    torch.manual_seed(0)
    m = fb.DiT(in_channels=2, dim=32, depth=2, num_heads=2, step_size_cond=True)
    loss_fn = fb.ShortcutLoss()
    steps = 600
    opt = torch.optim.AdamW(m.parameters(), lr=6e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=6e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        out = loss_fn(m, ring_data(256, g), generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()

    m.eval()
    ref = ring_data(1000, torch.Generator().manual_seed(1))
    fn = fb.conditioned(m)
    dist = {
        k: energy_distance(fb.sample_shortcut(fn, (1000, 2, 2), k, generator=3), ref)
        for k in (1, 2, 32)
    }
    plain_one_step = energy_distance(fb.sample_euler(fn, (1000, 2, 2), 1, generator=3), ref)
    assert dist[32] < 0.2, dist
    assert dist[2] < 2 * dist[32], dist
    assert dist[1] < 3 * dist[32], dist
    assert dist[1] < 0.7 * plain_one_step, (dist, plain_one_step)

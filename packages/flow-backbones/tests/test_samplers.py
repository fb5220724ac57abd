"""Samplers against an analytic Gaussian flow, the diffusers wrapper, guidance."""

import pytest
import torch

import flow_backbones as fb
from flow_backbones.distillation import OneStepGenerator, sample_consistency
from flow_backbones.testing import ToyFlowMLP, toy_condition

MU, S = 2.0, 0.5  # data N(MU, S^2 I), noise N(0, I)


def sigma_t(t):
    return torch.sqrt(t**2 * S**2 + (1 - t) ** 2)


def gaussian_velocity(x, t, d):
    # marginal velocity of the straight path between N(0, I) and N(MU, S^2 I)
    t = t.view(-1, *([1] * (x.ndim - 1)))
    return MU + (t * S**2 - (1 - t)) / sigma_t(t) ** 2 * (x - t * MU)


def gaussian_mean_velocity(x, t, d):
    # exact average velocity over [t, t + d]: the flow map is x_t = t MU + sigma_t x0
    tb, db = (z.view(-1, *([1] * (x.ndim - 1))) for z in (t, d))
    x0 = (x - tb * MU) / sigma_t(tb)
    x_next = (tb + db) * MU + sigma_t(tb + db) * x0
    return (x_next - x) / db


def exact_endpoint(x0):
    return MU + S * x0


def test_euler_and_heun_converge_to_the_ode_solution():
    x0 = fb.make_noise((256, 3), 0)
    target = exact_endpoint(x0)
    e20 = (fb.sample_euler(gaussian_velocity, x0, 20) - target).abs().max()
    e200 = (fb.sample_euler(gaussian_velocity, x0, 200) - target).abs().max()
    h20 = (fb.sample_heun(gaussian_velocity, x0, 20) - target).abs().max()
    assert e200 < 0.2 * e20  # first order: 10x steps, ~10x smaller error
    assert e200 < 0.02
    assert h20 < 0.05 * e20 and h20 < 5e-3  # second order (measured 0.0021 vs 0.147)


def test_shortcut_sampler_with_exact_average_velocity_is_exact_in_one_step():
    x0 = fb.make_noise((64, 2), 1)
    for steps in (1, 2, 4):
        out = fb.sample_shortcut(gaussian_mean_velocity, x0, steps)
        torch.testing.assert_close(out, exact_endpoint(x0), atol=1e-5, rtol=1e-5)


def test_diffusers_wrapper_matches_native_euler_trajectory():
    x0 = fb.make_noise((8, 4), 2)
    traj_d, traj_n = [], []
    fb.sample_diffusers(gaussian_velocity, x0, 8, shift=3.0, trajectory=traj_d)
    grid = fb.diffusers_t_grid(8, shift=3.0)
    fb.sample_euler(gaussian_velocity, x0, t_grid=grid, trajectory=traj_n)
    assert len(traj_d) == len(traj_n) == 9
    for a, b in zip(traj_d, traj_n, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # diffusers' grid runs from noise to data and the shift crowds it toward noise
    assert grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all()
    assert (grid[1:-1] < fb.diffusers_t_grid(8)[1:-1]).all()


def test_noise_from_seed_is_deterministic():
    a = fb.make_noise((3, 2), 7)
    b = fb.make_noise((3, 2), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    s1 = fb.sample_euler(gaussian_velocity, (3, 2), 4, generator=5)
    s2 = fb.sample_euler(gaussian_velocity, (3, 2), 4, generator=5)
    assert torch.equal(s1, s2)


def test_guidance_is_one_batched_forward_and_combines_correctly():
    calls = []

    def model(x, t, d, cond, keep):
        calls.append((x.shape[0], keep.clone()))
        # conditional rows pull toward cond, unconditional rows toward 0
        return torch.where(keep[:, None], cond - x, -x)

    cond = torch.full((3, 2), 4.0)
    x = torch.ones(3, 2)
    t, d = torch.full((3,), 0.5), torch.zeros(3)
    v = fb.conditioned(model, cond, guidance=2.5)(x, t, d)
    assert len(calls) == 1 and calls[0][0] == 6
    assert calls[0][1].tolist() == [True] * 3 + [False] * 3
    torch.testing.assert_close(v, -x + 2.5 * cond)  # v_u + w (v_c - v_u)
    calls.clear()
    fb.conditioned(model, cond)(x, t, d)
    assert calls[0][0] == 3 and calls[0][1].all()


def test_linear_guidance_schedule():
    sched = fb.GuidanceSchedule(4.0, "linear", end_scale=1.0)
    torch.testing.assert_close(sched(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([4.0, 2.5, 1.0]))
    assert fb.GuidanceSchedule(3.0)(torch.rand(5)).eq(3.0).all()
    with pytest.raises(fb.FlowInputError, match="steps"):
        fb.sample_euler(gaussian_velocity, (2, 2), 0)


class _PreparingToy(torch.nn.Module):
    """A toy model whose condition embedding can be computed once per run (like cached
    cross-attention keys/values); its forward accepts the raw or the prepared condition."""

    def __init__(self, toy):
        super().__init__()
        self.toy, self.calls = toy, []

    def prepare_condition(self, cond, keep):
        self.calls.append(keep.clone())
        return ("prepared", self.toy.embed_condition(cond, keep, keep.shape[0]))

    def forward(self, x, t, d, cond, keep):
        if isinstance(cond, tuple) and cond[0] == "prepared":
            c = cond[1]
        else:
            c = self.toy.embed_condition(cond, keep, x.shape[0])
        toy = self.toy
        ang = t[:, None] * toy.freqs
        h = toy.in_proj(torch.cat([x, ang.sin(), ang.cos(), d[:, None]], -1))
        for blk in toy.blocks:
            h = blk(h, c)
        return toy.out(toy.out_norm(h))


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_prepare_condition_runs_once_and_changes_nothing(guidance):
    torch.manual_seed(0)
    toy = ToyFlowMLP().eval()
    prep = _PreparingToy(toy)
    cond = toy_condition(6, torch.Generator().manual_seed(1))
    plain = fb.sample_euler(fb.conditioned(toy, cond, guidance=guidance), (6, 2), 5, generator=3)
    prepared = fb.sample_euler(
        fb.conditioned(prep, cond, guidance=guidance), (6, 2), 5, generator=3
    )
    torch.testing.assert_close(prepared, plain, rtol=0, atol=1e-6)
    assert len(prep.calls) == 1  # once for the run, not once per step
    # a guided run prepares the doubled batch: conditional rows, then null rows
    expected = [True] * 6 + ([False] * 6 if guidance != 1.0 else [])
    assert prep.calls[0].tolist() == expected
    prep.calls.clear()
    one = sample_consistency(OneStepGenerator(prep), (6, 2), cond, times=(0.5,), generator=4)
    ref = sample_consistency(OneStepGenerator(toy), (6, 2), cond, times=(0.5,), generator=4)
    torch.testing.assert_close(one, ref, rtol=0, atol=1e-6)
    assert len(prep.calls) == 1

"""Time convention, diffusers conversions, time samplers and loss weights."""

import math

import pytest
import torch

import flow_backbones as fb
from flow_backbones.flow import check_t, diffusers_timestep_to_t, t_to_diffusers_timestep


def test_path_endpoints_and_velocity():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert torch.equal(fb.interpolate(x0, x1, torch.zeros(5)), x0)
    assert torch.equal(fb.interpolate(x0, x1, torch.ones(5)), x1)
    t = torch.full((5,), 0.25)
    # the path is straight: x_t moves with v = x1 - x0
    dx = fb.interpolate(x0, x1, t + 0.5) - fb.interpolate(x0, x1, t)
    torch.testing.assert_close(dx, 0.5 * fb.velocity_target(x0, x1))


def test_diffusers_conversions_roundtrip_and_signs():
    t = torch.tensor([0.0, 0.3, 1.0])
    torch.testing.assert_close(fb.t_to_sigma(t), torch.tensor([1.0, 0.7, 0.0]))
    torch.testing.assert_close(fb.sigma_to_t(fb.t_to_sigma(t)), t)
    torch.testing.assert_close(t_to_diffusers_timestep(t), torch.tensor([1000.0, 700.0, 0.0]))
    torch.testing.assert_close(diffusers_timestep_to_t(t_to_diffusers_timestep(t)), t)
    # SD3 / diffusers velocity is noise - data
    x0, x1 = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(fb.velocity_to_diffusers(fb.velocity_target(x0, x1)), x0 - x1)
    torch.testing.assert_close(fb.velocity_from_diffusers(x0 - x1), x1 - x0)


def test_x1_prediction_conversion():
    x0, x1, t = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0.1, 0.5, 0.9])
    x_t = fb.interpolate(x0, x1, t)
    torch.testing.assert_close(fb.x1_to_velocity(x1, x_t, t), x1 - x0)


def test_shift_matches_sd3_formula_and_is_identity_at_one():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(fb.shift_t(t, 1.0), t)
    s, sigma = 3.0, 1 - t
    torch.testing.assert_close(1 - fb.shift_t(t, s), s * sigma / (1 + (s - 1) * sigma))
    # s > 1 spends more steps near noise: every interior time moves toward 0
    assert (fb.shift_t(t, 3.0)[1:-1] < t[1:-1]).all()


@pytest.mark.parametrize(
    ("kind", "mean"),
    [("uniform", 0.5), ("logit_normal", 0.5), ("beta", 2 / 3.2), ("cosmap", 0.5)],
)
def test_time_samplers_moments(kind, mean):
    t = fb.sample_t(kind, 40000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (40000,) and t.min() > 0 and t.max() < 1
    assert abs(t.mean().item() - mean) < 0.01


def test_beta_sampler_variance_and_determinism():
    a, b = 2.0, 1.2
    t = fb.sample_t("beta", 40000, generator=torch.Generator().manual_seed(1))
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(t.var().item() - var) < 0.003
    t2 = fb.sample_t("beta", 40000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, t2)


def test_loss_weights():
    t = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(fb.loss_weight("inv_t", t), torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(fb.loss_weight("none", t), torch.ones(2))
    sigma = 1 - t
    torch.testing.assert_close(
        fb.loss_weight("cosmap", t), 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
    )
    with pytest.raises(fb.FlowInputError, match="weighting"):
        fb.loss_weight("bogus", t)


def test_t_outside_unit_interval_is_rejected():
    check_t(torch.tensor([0.0, 1.0]))
    with pytest.raises(fb.FlowInputError, match=r"\[0, 1\]"):
        check_t(torch.tensor([0.5, 1.5]))
    with pytest.raises(fb.FlowInputError, match="kind"):
        fb.sample_t("gamma", 3)

"""One-step distillation of the toy teacher: endpoint regression, consistency distillation, APT.

The teacher is :func:`flow_backbones.testing.train_toy_teacher` (2-D, two classes of three
Gaussian modes each), sampled with guidance 2 and 16 Euler steps. Distances are
:func:`flow_backbones.testing.energy_distance` to 800 such teacher samples from other noise.
Everything is seeded and runs on one thread; the figures in the docstrings were measured on
torch 2.x CPU and the thresholds leave a factor of safety for other builds.
"""

import pytest
import torch

from flow_backbones.distillation import (
    APTConfig,
    ConsistencyConfig,
    ConsistencyDistillation,
    Discriminator,
    EndpointConfig,
    EndpointLoss,
    OneStepGenerator,
    TeacherODE,
    apt_optimizers,
    discriminator_step,
    generator_loss,
    generator_step,
    make_endpoint_pairs,
    sample_consistency,
    teacher_solution,
)
from flow_backbones.testing import energy_distance, toy_condition, toy_data, train_toy_teacher

ODE = TeacherODE(steps=16, guidance=2.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def teacher():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_toy_teacher(300, seed=0)
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(teacher):
    """Evaluation noise ``z`` and conditions, and the teacher's 16-step samples from other noise,
    with the teacher's own one-step distance (what a student has to beat)."""
    g = torch.Generator().manual_seed(123)
    cond = toy_condition(800, g)
    z_ref, z = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    ref = teacher_solution(teacher, z_ref, cond, ODE)
    one_step = energy_distance(
        teacher_solution(teacher, z, cond, TeacherODE(steps=1, guidance=2.0)), ref
    )
    return z, cond, ref, one_step


def test_endpoint_distillation_beats_the_teachers_one_step(teacher, reference):
    """Measured (1 thread): teacher 1-step Euler 0.542; student after 200 Adam steps on 1024
    pairs 0.0089; mean loss of the first 20 steps 0.256, of the last 20 0.048. Asserted: the
    student under a quarter of the 1-step distance and under 0.06 (6.7x the measurement), the
    loss at least halved (measured 0.19x)."""
    z, cond, ref, one_step = reference
    g = torch.Generator().manual_seed(1)
    pc, pn = toy_condition(1024, g), torch.randn(1024, 2, generator=g)
    pairs = make_endpoint_pairs(teacher, pn, pc, EndpointConfig(teacher=ODE, batch_size=512))
    assert pairs.sample.shape == (1024, 2)
    torch.manual_seed(0)
    student = OneStepGenerator.from_teacher(teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    objective = EndpointLoss()
    losses = []
    for _ in range(200):
        i = torch.randint(1024, (128,), generator=g)
        out = objective(student, pairs.noise[i], pairs.sample[i], pairs.cond[i])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    with torch.no_grad():
        dist = energy_distance(student.eval()(z, cond), ref)
    assert dist < 0.25 * one_step and dist < 0.06, (dist, one_step)


def test_consistency_distillation_loss_falls_and_one_step_beats_the_teacher(teacher, reference):
    """True consistency distillation on data points of the straight paths (Euler teacher step,
    guidance 2, N = 16, 300 Adam steps). Measured (1 thread): held-out consistency loss 0.0184
    before, 0.0025 after (0.14x); one-step student 0.0145 vs the teacher's one Euler step 0.542;
    two-step consistency sampling 0.0062. Asserted: the loss at least halved, one step under a
    quarter of the teacher's 1-step distance and under 0.1 (6.9x the measurement), two steps
    under a quarter of the 1-step distance."""
    z, cond, ref, one_step = reference
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    student = OneStepGenerator.from_teacher(teacher)
    config = ConsistencyConfig(intervals=16, guidance=2.0, solver="euler", ema_decay=0.95)
    cd = ConsistencyDistillation(student, teacher, config=config)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    c_eval = toy_condition(1024, g)
    x_eval = toy_data(c_eval, g)

    def held_out_loss():  # same data, noise and intervals each time
        with torch.no_grad():
            return cd.loss(x_eval, c_eval, generator=torch.Generator().manual_seed(7)).loss.item()

    first = held_out_loss()
    for _ in range(300):
        c = toy_condition(128, g)
        cd.step(opt, toy_data(c, g), c, generator=g)
    last = held_out_loss()
    assert last < 0.5 * first, (first, last)
    student.eval()
    with torch.no_grad():
        dist = energy_distance(student(z, cond), ref)
    two = energy_distance(sample_consistency(student, z, cond, times=(0.5,), generator=5), ref)
    assert dist < 0.25 * one_step and dist < 0.1, (dist, one_step)
    assert two < 0.25 * one_step, (two, one_step)


def test_consistency_boundary_and_ema_target(teacher):
    """``f(x, 1) = x`` for any weights; the target moves toward the student by ``1 - mu``."""
    student = OneStepGenerator.from_teacher(teacher)
    x = torch.randn(5, 2)
    c = toy_condition(5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(student.jump(x, torch.ones(5), c), x)
    cd = ConsistencyDistillation(student, teacher, config=ConsistencyConfig(ema_decay=0.9))
    before = cd.target.model.out.bias.clone()
    with torch.no_grad():
        student.model.out.bias.add_(1.0)
    cd.update_target()
    torch.testing.assert_close(cd.target.model.out.bias, before + 0.1)
    out = cd.loss(toy_data(c, torch.Generator().manual_seed(1)), c)
    out.loss.backward()
    assert all(p.grad is None for p in cd.target.parameters())  # stop-gradient target
    assert student.model.out.weight.grad is not None


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


def test_apt_steps_update_the_right_player(teacher):
    """The D step moves D (heads, hooked backbone blocks) and not G; the G step moves G and not
    D; R1 is finite and positive; after a few D steps real logits exceed fake ones, and a G step
    lowers the generator loss against the same D (the signs of both losses)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cond = toy_condition(64, g)
    real = teacher_solution(teacher, torch.randn(64, 2, generator=g), cond, ODE)
    G = OneStepGenerator.from_teacher(teacher)
    D = Discriminator(teacher, real[:2], cond[:2])
    assert D.layers == ["blocks.1", "blocks.2", "blocks.3"]
    cfg = APTConfig(lr_g=1e-3, lr_d=1e-3, r1_weight=1.0, r1_sigma=0.05, grad_clip=None)
    opt_g, opt_d = apt_optimizers(G, D, cfg)
    # G here starts as the teacher's one Euler step, far from the real samples
    with torch.no_grad():
        G.model.out.bias.add_(1.0)

    g0, d0 = _params(G), _params(D)
    m = discriminator_step(G, D, opt_d, real, cond, config=cfg, rng=g)
    assert not _changed(g0, G)
    moved = _changed(d0, D)
    assert {"out.weight", "heads.0.query", "backbone.blocks.1.fc1.weight"} <= moved
    assert "backbone.out.weight" not in moved  # past the deepest hooked block: never run
    assert (
        m["d_loss"] > 0 and m["r1"] > 0 and all(map(torch.isfinite, map(torch.tensor, m.values())))
    )
    for _ in range(5):
        m = discriminator_step(G, D, opt_d, real, cond, config=cfg, rng=g)
    assert m["d_real"] > m["d_fake"], m

    z = torch.randn(64, 2, generator=g)
    g_loss = generator_loss(G, D, z, cond, config=cfg, rng=torch.Generator().manual_seed(9)).loss
    g1, d1 = _params(G), _params(D)
    m = generator_step(G, D, opt_g, z, cond, config=cfg, rng=torch.Generator().manual_seed(9))
    assert not _changed(d1, D) and _changed(g1, G)
    assert m["g_grad_norm"] > 0 and abs(m["g_loss"] - g_loss.item()) < 1e-5
    assert all(p.requires_grad for p in D.parameters())  # flags restored
    after = generator_loss(G, D, z, cond, config=cfg, rng=torch.Generator().manual_seed(9)).loss
    assert after < g_loss, (g_loss.item(), after.item())

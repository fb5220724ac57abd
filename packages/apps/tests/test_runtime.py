"""The shared training loop: exact resume, EMA, checkpoints, logging."""

import json

import pytest
import torch
from torch import nn

from gesture_apps.runtime import EMA, TrainConfig, Trainer, rng_state
from motion_tokenizers.errors import CheckpointError


class Toy(nn.Module):
    """Dropout and a buffer so resume has RNG draws and non-parameter state to restore."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, batch):
        x, y = batch
        self.seen += len(x)
        noise = 0.01 * torch.randn_like(y)  # draws from the global RNG too
        return ((self.net(x) - y - noise) ** 2).mean()


def toy_loss(model, batch):
    loss = model(batch)
    return loss, {"mse": loss.detach()}


def make_trainer(out_dir=None, accelerator=None, **overrides):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(22, 4, generator=g)
    data = list(zip(x, x[:, :2] * 2 + 1, strict=True))
    cfg = dict(
        max_steps=9,
        batch_size=4,
        lr=1e-2,
        warmup_steps=2,
        milestones=(5,),
        gamma=0.5,
        ema_decay=0.9,
        log_every=2,
        seed=3,
        cpu=True,
    )
    cfg.update(overrides)
    return Trainer(
        model=Toy(),
        dataset=data,
        loss_fn=toy_loss,
        config=TrainConfig(**cfg),
        out_dir=out_dir,
        run_config={"recipe": "toy"},
        accelerator=accelerator,
        progress=False,
    )


def snapshot(t: Trainer):
    return {
        "model": {k: v.clone() for k, v in t.raw_model.state_dict().items()},
        "ema": {k: v.clone() for k, v in t.ema.shadow.items()},
        "optim": t.optimizer.state_dict()["state"],
        "lr": t.scheduler.get_last_lr(),
        "position": (t.step, t.epoch, t.cursor),
        "rng": rng_state()["torch"].clone(),
        "history": t.history,
    }


def assert_same(a, b):
    assert a["position"] == b["position"] and a["lr"] == b["lr"]
    assert a["history"] == b["history"]
    assert torch.equal(a["rng"], b["rng"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    for i, s in a["optim"].items():
        for k, v in s.items():
            assert torch.equal(v, b["optim"][i][k]), (i, k)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    full = make_trainer()
    full.train()
    # 22 items, 4 per step: 5 steps per pass, so 9 steps cross into the second pass
    assert (full.step, full.epoch, full.cursor) == (9, 1, 16)
    expected = snapshot(full)

    first = make_trainer(tmp_path / "run")
    result = first.train(steps=4)  # "interrupted" after 4 steps; checkpoint written at the end
    assert result.step == 4 and result.checkpoint.name == "step_0000004"
    torch.manual_seed(1234)  # whatever happens between the runs must not matter
    second = make_trainer(tmp_path / "run")
    assert second.load_checkpoint(tmp_path / "run").name == "step_0000004"
    second.train()
    assert_same(snapshot(second), expected)
    # the run's files: checkpoint at 4 and 9, pointer to the newest, TensorBoard events
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest.txt").read_text().strip() == "step_0000009"
    assert json.loads((ckpts / "step_0000009" / "run_config.json").read_text()) == {"recipe": "toy"}
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(tmp_path.rglob("*.tmp"))


def make_scaled_trainer(out_dir=None):
    """A trainer whose steps go through a grad scaler, as fp16 training does on a GPU.

    accelerate builds its scaler only for fp16 on an accelerator; here the same torch
    GradScaler is given to a CPU Accelerator before ``prepare``. Its initial scale is so large
    that scaled gradients overflow: those steps are skipped and the scale halves (it would grow
    back after 1000 good steps), so which steps update the weights depends on the scaler's
    state, exactly what an fp16 resume must restore."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
    return make_trainer(out_dir, accelerator=acc, grad_clip=None)


def test_resume_restores_the_grad_scaler(tmp_path):
    full = make_scaled_trainer()
    full.train()
    expected, expected_scaler = snapshot(full), full.accelerator.scaler.state_dict()
    assert expected_scaler["scale"] < 2.0**127  # overflowing steps did back the scale off

    first = make_scaled_trainer(tmp_path / "run")
    first.train(steps=4)
    saved = json.loads(
        (tmp_path / "run" / "checkpoints" / "step_0000004" / "trainer_state.json").read_text()
    )
    assert saved["scaler"] == first.accelerator.scaler.state_dict()
    second = make_scaled_trainer(tmp_path / "run")
    second.load_checkpoint(tmp_path / "run")
    assert second.accelerator.scaler.state_dict() == saved["scaler"]
    second.train()
    assert second.accelerator.scaler.state_dict() == expected_scaler
    assert_same(snapshot(second), expected)


def test_periodic_checkpoints_are_pruned(tmp_path):
    t = make_trainer(tmp_path, checkpoint_every=2, keep_checkpoints=2)
    t.train()
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_0000008", "step_0000009"]


def test_lr_schedule_warmup_and_decay():
    t = make_trainer()
    assert [t.lr_factor(s) for s in (0, 1, 4, 5, 8)] == [0.5, 1.0, 1.0, 0.5, 0.5]


def test_ema_averages_parameters_and_copies_buffers():
    m = nn.BatchNorm1d(2)
    ema = EMA(m, decay=0.75)
    with torch.no_grad():
        m.weight.fill_(5.0)
        m.running_mean.fill_(3.0)
    ema.update(m)
    assert torch.allclose(ema.shadow["weight"], torch.full((2,), 2.0))  # 0.75*1 + 0.25*5
    assert torch.equal(ema.shadow["running_mean"], torch.full((2,), 3.0))
    fresh = nn.BatchNorm1d(2)
    ema.copy_to(fresh)
    assert torch.allclose(fresh.weight, torch.full((2,), 2.0))


@pytest.mark.parametrize("damage", ["missing", "truncated_weights", "bad_json", "wrong_model"])
def test_bad_checkpoints_raise_checkpoint_error(tmp_path, damage):
    t = make_trainer(tmp_path)
    ckpt = t.train(steps=1).checkpoint
    if damage == "missing":
        ckpt = tmp_path / "nowhere"
    elif damage == "truncated_weights":
        w = ckpt / "model.safetensors"
        w.write_bytes(w.read_bytes()[:40])
    elif damage == "bad_json":
        (ckpt / "trainer_state.json").write_text("{not json")
    else:
        from safetensors.torch import save_file

        save_file({"other": torch.zeros(3)}, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError):
        make_trainer().load_checkpoint(ckpt)


def test_too_small_dataset_is_rejected():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_trainer(batch_size=64)


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a different precision needs a fresh one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_keeps_fp32_weights(fresh_accelerate_state):
    t = make_trainer(mixed_precision="bf16", max_steps=2)
    seen = []

    def loss_fn(model, batch):
        x, y = batch
        out = model.net(x)
        seen.append(out.dtype)
        loss = ((out.float() - y) ** 2).mean()
        return loss, {}

    t.loss_fn = loss_fn
    result = t.train()
    assert seen == [torch.bfloat16, torch.bfloat16]  # the forward ran under autocast
    assert result.step == 2 and torch.isfinite(torch.tensor(result.metrics["loss"]))
    assert all(p.dtype == torch.float32 for p in t.raw_model.parameters())

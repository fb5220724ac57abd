"""The tiny MMDiT trained with the shared Trainer, sharded (FSDP2) or not.

test_fsdp.py runs :func:`train_unsharded` in its own process (one process, the global batch)
and forks two gloo ranks into :func:`run_rank` (no re-import, which costs ~15 s a process on a
busy 2-core machine); they train the same steps sharded, save a checkpoint half-way, and a
second sharded Trainer resumes from it. Everything is float64 so that the sharded and the
unsharded run differ by summation order alone (see the test). The loss takes its noise and
times from the dataset items, not from the per-rank RNG, so that both runs see the same
numbers for the same items."""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from flow_backbones import MMDiT
from flow_backbones.mmdit import JointBlock
from gesture_apps.runtime import TrainConfig, Trainer

ITEMS, PER_RANK, STEPS, RESUME_AT = 16, 2, 4, 2
TOKENS = {"gesture": 6, "audio": 10}  # MMDiT.tiny(): gesture 8-d, audio 4-d


def make_model(seed: int) -> MMDiT:
    """MMDiT.tiny() (2 streams, width 32, 2 joint blocks) in float64."""
    with torch.random.fork_rng():  # building a model (e.g. for an export) moves no RNG
        torch.manual_seed(seed)
        return MMDiT.tiny().double()


def make_dataset() -> list[dict[str, Tensor]]:
    """Item i: data x1, noise x0 and a time per stream, fixed by i (not by the RNG)."""
    g = torch.Generator().manual_seed(7)
    dims = {n: s.in_dim for n, s in MMDiT.tiny().specs.items()}
    items = []
    for _ in range(ITEMS):
        item = {}
        for n, length in TOKENS.items():
            x1 = torch.randn(length, dims[n], generator=g, dtype=torch.float64)
            item[f"{n}.x1"] = torch.sin(x1) + 0.5  # some structure to fit
            item[f"{n}.x0"] = torch.randn(length, dims[n], generator=g, dtype=torch.float64)
            item[f"{n}.t"] = torch.rand((), generator=g, dtype=torch.float64)
        items.append(item)
    return items


def flow_loss(model, batch: dict[str, Tensor]):
    """Flow matching on both streams: x_t = t x1 + (1 - t) x0, target v = x1 - x0."""
    xt, ts, target = {}, {}, {}
    for n in TOKENS:
        x1, x0, t = batch[f"{n}.x1"], batch[f"{n}.x0"], batch[f"{n}.t"]
        xt[n] = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        ts[n], target[n] = t, x1 - x0
    v = model(xt, ts)
    losses = {n: ((v[n] - target[n]) ** 2).mean() for n in TOKENS}
    return sum(losses.values()) / len(losses), {f"mse_{n}": x.detach() for n, x in losses.items()}


def config(batch_size: int, **overrides) -> TrainConfig:
    # grad_clip 0.05 sits below every gradient norm of these runs (0.07-0.6), so clipping
    # acts on every step; EMA decay 0.5 moves the average visibly within a few steps
    cfg = dict(max_steps=STEPS, batch_size=batch_size, lr=3e-3, ema_decay=0.5, grad_clip=0.05)
    return TrainConfig(**(cfg | dict(log_every=1, cpu=True, warmup_steps=1) | overrides))


def export(trainer: Trainer, folder: Path) -> None:
    """A recipe's export: the EMA weights as a save_pretrained model folder."""
    model = make_model(0)
    trainer.ema.copy_to(model)
    model.save_pretrained(folder / "model")


def full_weights(trainer: Trainer) -> dict[str, Tensor]:
    """The full weights and EMA weights (a collective call when sharded)."""
    out = {}
    for k, v in trainer.raw_model.state_dict().items():
        out[k] = (v.full_tensor() if isinstance(v, DTensor) else v).detach().contiguous()
    for k, v in trainer.ema.shadow.items():
        out[f"ema.{k}"] = (v.full_tensor() if isinstance(v, DTensor) else v).contiguous()
    return out


def train_unsharded(out: Path) -> None:
    """The reference: one process, the global batch (2 ranks x PER_RANK). It runs in the
    test process, on one thread as the ranks do (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(
            model=make_model(100),
            dataset=make_dataset(),
            loss_fn=flow_loss,
            config=config(2 * PER_RANK),
            progress=False,
        )
        trainer.train(RESUME_AT)
        save_file(full_weights(trainer), str(out / "single_mid.safetensors"))
        trainer.train()
        save_file(full_weights(trainer), str(out / "single.safetensors"))
        averaged = trainer.unsharded_copy(ema=True).state_dict()
        save_file(averaged, str(out / "single_copy.safetensors"))
        (out / "single.json").write_text(json.dumps({"history": trainer.history}))
        trainer.close()
    finally:
        torch.set_num_threads(threads)


def run_rank(rank: int, world: int, port: int, out: Path) -> None:
    """Entry point of a forked rank: the sharded run, then a resume from its checkpoint."""
    _join(rank, world, port)
    torch.set_num_threads(1)
    data = make_dataset()
    # ranks start from different weights on purpose: the Trainer must give them rank 0's
    sharded = Trainer(
        model=make_model(100 + rank),
        dataset=data,
        loss_fn=flow_loss,
        config=config(PER_RANK, fsdp="default"),
        export_fn=export,
        progress=False,
    )
    blocks = [m for m in sharded.raw_model.modules() if isinstance(m, JointBlock)]
    report = {
        "world": sharded.accelerator.num_processes,
        "root_sharded": isinstance(sharded.raw_model, FSDPModule),
        "blocks_sharded": [isinstance(b, FSDPModule) for b in blocks],
        # (parameters this rank stores, parameters of the block) per joint block
        "block_numel": [
            [
                sum(p.to_local().numel() for p in b.parameters()),
                sum(p.numel() for p in b.parameters()),
            ]
            for b in blocks
        ],
        "all_dtensors": all(isinstance(p, DTensor) for p in sharded.raw_model.parameters()),
    }
    sharded.train(RESUME_AT)
    sharded.save_checkpoint(out / "checkpoint")
    sharded.train()
    weights = full_weights(sharded)
    averaged = sharded.unsharded_copy(ema=True)  # what a recipe's final export uses

    resumed = Trainer(
        model=make_model(200 + rank),
        dataset=data,
        loss_fn=flow_loss,
        config=config(PER_RANK, fsdp="default"),
        accelerator=sharded.accelerator,
        progress=False,
    )
    resumed.load_checkpoint(out / "checkpoint")
    resumed.train()
    weights_resumed = full_weights(resumed)
    report["copy_on_this_rank"] = averaged is not None
    if rank == 0:
        save_file(averaged.state_dict(), str(out / "unsharded_copy.safetensors"))
        save_file(weights, str(out / "sharded.safetensors"))
        save_file(weights_resumed, str(out / "resumed.safetensors"))
    report |= {"history": sharded.history, "resumed_history": resumed.history}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    resumed.close()


def _join(rank: int, world: int, port: int) -> None:
    """The torchrun environment of one rank and a fresh accelerate state."""
    from accelerate.state import AcceleratorState

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    # the parent's (single-process) accelerate singletons were copied by fork
    AcceleratorState._reset_state(reset_partial_state=True)

"""A few data-parallel steps with the shared Trainer; each rank then writes its final weights
and the items it saw. test_distributed.py forks two gloo ranks into :func:`run_rank` (no
re-import, which costs ~15 s a process on a busy 2-core machine); the same file also runs
under ``torchrun --standalone --nproc_per_node 2 ddp_worker.py OUT``."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn

from gesture_apps.runtime import TrainConfig, Trainer


def main(out: Path) -> None:
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    # different initial weights per rank on purpose: data parallel must start from rank 0's
    torch.manual_seed(100 + rank)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 2))
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    data = [(x[i], 2 * x[i, :2] + 1, i) for i in range(20)]
    seen: list[list[int]] = []

    def loss_fn(m, batch):
        xb, yb, idx = batch
        seen.append(idx.tolist())
        loss = ((m(xb) - yb) ** 2).mean()
        return loss, {"mse": loss.detach()}

    cfg = TrainConfig(max_steps=4, batch_size=3, lr=1e-2, ema_decay=0.9, log_every=2, cpu=True)
    trainer = Trainer(
        model=model,
        dataset=data,
        loss_fn=loss_fn,
        config=cfg,
        out_dir=out,
        accelerator=acc,
        progress=False,
    )
    trainer.train()
    tensors = {k: v.contiguous() for k, v in trainer.raw_model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in trainer.ema.shadow.items()}
    save_file(tensors, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"world": acc.num_processes, "seen": seen, "history": trainer.history})
    )
    acc.wait_for_everyone()
    acc.end_training()


def train_tokenizer(out: Path, overrides: list[str], tag: str) -> None:
    """The real tokenizer recipe at the tiny preset (it builds its own Accelerator, after the
    model, as `gesture train tokenizer` does); writes the tokenizers' weights and codebooks."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.tokenizer import train as tokenizer

    torch.set_num_threads(1)
    # float64: the single process and the ranks sum in different orders; in float32 that noise
    # (~1e-7) can flip a near-tied code choice and the runs drift apart for reasons unrelated
    # to the data-parallel logic under test. The single run happens in the test process: the
    # default dtype is restored for the tests that follow.
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cfg = load_config(tokenizer.TokenizerRecipeConfig, "tokenizer/tiny", overrides)
        run = tokenizer.prepare(cfg, None, progress=False)
        run.trainer.train()
        state = run.objective.tokenizer.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"{tag}.safetensors"))
        run.trainer.close()
    finally:
        torch.set_default_dtype(dtype)


def run_tokenizer_rank(rank: int, world: int, port: int, out: Path, overrides: list[str]) -> None:
    """Entry point of a forked rank that trains the tokenizer recipe."""
    _join(rank, world, port)
    train_tokenizer(out, overrides, f"rank{rank}")


def run_rank(rank: int, world: int, port: int, out: Path) -> None:
    """Entry point of a forked rank: the torchrun environment, a fresh accelerate state."""
    _join(rank, world, port)
    main(out)


def _join(rank: int, world: int, port: int) -> None:
    """The torchrun environment of one rank and a fresh accelerate state."""
    import os

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


if __name__ == "__main__":
    main(Path(sys.argv[1]))

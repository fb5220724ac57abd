"""Kill a checkpoint save at each of its file-system steps and report what a resume finds.

Run as ``python save_crash_worker.py BASE``. A toy trainer saves steps 1 and 2 under a run
folder, then trains to step 3. For crash point k = 1, 2, ... a forked copy saves step 3 into
a fresh copy of that run and stops just before its k-th rename/replace/mkdir/unlink/rmdir;
this process then kills it by pid with SIGKILL and inspects the run: which ``step_*``
folders are visible, whether each of them loads, what a resume picks, and whether the next
complete save clears the hidden leftovers. One JSON line per crash point; the last one is the
save that ran to the end.
"""

import json
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

from gesture_apps.runtime import TrainConfig, Trainer
from gesture_apps.runtime.checkpoint import resolve_checkpoint

HOOKED = ("rename", "replace", "mkdir", "unlink", "rmdir")


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean(), {}


def export(trainer, folder):
    # a recipe export inside each checkpoint folder, as ``gesture train lsm`` writes lsm/
    (folder / "export").mkdir()
    (folder / "export" / "step.txt").write_text(str(trainer.step))


def make_trainer() -> Trainer:
    torch.manual_seed(0)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    config = TrainConfig(
        max_steps=100, batch_size=4, lr=1e-2, log_every=100, cpu=True, keep_checkpoints=2
    )
    data = list(zip(x, x[:, :2], strict=True))
    # out_dir stays None while training (no TensorBoard thread to fork); set around saves
    return Trainer(
        model=nn.Linear(4, 2),
        dataset=data,
        loss_fn=loss_fn,
        config=config,
        export_fn=export,
        progress=False,
    )


def save_at(trainer: Trainer, run: Path) -> None:
    trainer.out_dir = run
    trainer.save_checkpoint()
    trainer.out_dir = None


def crash_during_save(trainer: Trainer, run: Path, k: int) -> bool:
    """Save into ``run`` in a forked child that pauses at its k-th file-system step; kill it
    there. False when the save finished before reaching step k."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            count = 0

            def hook(fn):
                def wrapped(*args, **kwargs):
                    nonlocal count
                    count += 1
                    if count == k:
                        os.write(w, b"k")
                        while True:
                            signal.pause()  # killed here, mid-save
                    return fn(*args, **kwargs)

                return wrapped

            for name in HOOKED:
                setattr(os, name, hook(getattr(os, name)))
            save_at(trainer, run)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    os.close(w)
    reached = os.read(r, 1) == b"k"
    os.close(r)
    if reached:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not reached and status != 0:
        raise SystemExit(f"crash point {k}: the save failed on its own (status {status})")
    return reached


def inspect(run: Path, fresh: Trainer) -> dict:
    checkpoints = run / "checkpoints"
    visible = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step_"))
    broken = []
    for name in visible:
        try:
            fresh.load_checkpoint(checkpoints / name)
            ok = fresh.step == int(name[5:])
            ok = ok and (checkpoints / name / "export" / "step.txt").read_text() == name[5:].lstrip(
                "0"
            )
        except Exception:
            ok = False
        if not ok:
            broken.append(name)
    try:
        resumed = fresh.load_checkpoint(run).name
        resumed_step = fresh.step
    except Exception as e:
        resumed, resumed_step = f"error: {type(e).__name__}: {e}", -1
    return {"visible": visible, "broken": broken, "resumed": resumed, "resumed_step": resumed_step}


def main(base: Path) -> None:
    trainer, fresh = make_trainer(), make_trainer()
    start = base / "start"
    for _ in range(2):
        trainer.train(1)
        save_at(trainer, start)
    trainer.train(1)  # step 3, in memory only
    assert resolve_checkpoint(start).name == "step_0000002"
    for k in range(1, 200):
        run = base / f"crash_{k:03d}"
        shutil.copytree(start, run)
        killed = crash_during_save(trainer, run, k)
        record = {"k": k, "killed": killed, **inspect(run, fresh)}
        # the next complete save reclaims whatever the killed one left behind
        save_at(trainer, run)
        record["left_over"] = sorted(p.name for p in (run / "checkpoints").glob(".*"))
        print(json.dumps(record), flush=True)
        shutil.rmtree(run)
        if not killed:
            return
    raise SystemExit("the save never finished")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""The training loop every recipe uses, built on ``accelerate``.

A recipe supplies a module, a map-style dataset and ``loss_fn(model, batch) -> (loss, metrics)``;
:class:`Trainer` does device placement, mixed precision, multi-process data parallel (each rank
takes its own slice of one shuffled order), AdamW with warm-up + multi-step decay, gradient
clipping, EMA weights, TensorBoard scalars, a progress bar and checkpoints that resume exactly:
the model, optimizer, scheduler, EMA, data position and every RNG of every rank are restored, so
an interrupted run continues as if it had never stopped.

``TrainConfig.fsdp`` shards the model instead (FSDP2 through accelerate's
``FullyShardedDataParallelPlugin``, one unit per transformer block, configured by an accelerate
config yaml): each rank then holds only its shard of every weight, gradient, Adam moment and
EMA weight. Checkpoints stay in the unsharded format: the full weights, optimizer state and EMA
are gathered to rank 0 and written as in a data-parallel run, so the exported model loads
without FSDP (a resume must use the same mode: sharded and unsharded runs store the optimizer
state differently).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    gather_object,
    send_to_device,
    set_seed,
)
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from gesture_apps.errors import one_line
from motion_tokenizers import lr_factor
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_directory, atomic_write, load_state, save_state

from ..errors import ConfigError, TrainingError
from .checkpoint import (
    FULL_EVERYWHERE,
    FULL_TO_RANK0,
    LATEST,
    STATE_NAME,
    check_finite_tensors,
    ema_of,
    materialize,
    meta_copy,
    resolve_checkpoint,
    rng_state,
    set_rng_state,
    write_latest,
)
from .config import read_fsdp_config
from .ema import EMA

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], tuple[Tensor, dict[str, Any]]]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every recipe (the ``train:`` section)."""

    max_steps: int = 1000
    batch_size: int = 32  # per process
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999  # null disables the EMA
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = False  # train on the CPU even when an accelerator is present
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end of each train() call
    keep_checkpoints: int = 2  # newest N step_* folders kept; 0 keeps all
    # shard the model (FSDP2) in a multi-process run: an accelerate config yaml, or "default"
    # for the shipped configs/omniges/fsdp.yaml; null trains data parallel (DDP)
    fsdp: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, found {self.lr}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or null, found {self.ema_decay}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0 or self.warmup_steps < 0:
            raise ValueError("checkpoint_every, keep_checkpoints and warmup_steps must be >= 0")


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    step: int
    metrics: dict[str, float]
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


def fsdp_plugin(spec: str) -> FullyShardedDataParallelPlugin:
    """accelerate's FSDP plugin from the accelerate config yaml ``train.fsdp`` names (see
    :func:`~gesture_apps.runtime.config.read_fsdp_config`); errors name the file."""
    path, kwargs = read_fsdp_config(spec)
    try:
        return FullyShardedDataParallelPlugin(**kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{path}: fsdp_config: {one_line(e, 300)}") from None


def build_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator a :class:`Trainer` uses by default: ``config``'s precision, the CPU when
    asked (or when launched without a GPU) and, with ``config.fsdp``, FSDP2 sharding."""
    # accelerate only joins a torchrun group on the CPU when told cpu=True; without a GPU, a
    # launched multi-process run would otherwise train N separate models
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = config.cpu or (launched and not torch.cuda.is_available())
    plugin = fsdp_plugin(config.fsdp) if config.fsdp else None  # a bad file fails at once
    if not launched:
        # one process has nothing to shard; and accelerate would export ACCELERATE_USE_FSDP
        # into this process's environment, where later Accelerators would pick it up
        plugin = None
    acc = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu, fsdp_plugin=plugin)
    if plugin is not None and acc.distributed_type == DistributedType.MULTI_CPU:
        # accelerate 1.15 turns the plugin on only for accelerator backends (MULTI_CPU is left
        # out of AcceleratorState's list) although torch's fully_shard runs on gloo; set the
        # fields it sets on a GPU, so that prepare(), clip_grad_norm_ and the state dicts
        # take the FSDP2 paths. CPU sharding is what the 2-process tests run. PartialState
        # too, as accelerate's own init does: every later AcceleratorState() copies its
        # distributed_type over ours.
        if acc.mixed_precision != "no":
            plugin.set_mixed_precision(acc.mixed_precision)
        acc.state.fsdp_plugin = plugin
        PartialState().distributed_type = DistributedType.FSDP
        acc.state.distributed_type = DistributedType.FSDP
        if not acc.is_fsdp2:
            raise RuntimeError("this accelerate version cannot enable FSDP2 on the CPU")
    return acc


class Trainer:
    """Runs ``loss_fn`` over ``dataset`` and updates ``model``.

    Args:
        model: the module to train (built identically on every rank).
        dataset: map-style; item ``i`` must not depend on global RNG state.
        loss_fn: ``(prepared_model, batch) -> (scalar loss, {name: float or 0-d tensor})``; the
            model it receives may be wrapped for data parallel, so call it, don't reach inside.
        config: :class:`TrainConfig`.
        out_dir: run folder (``checkpoints/``, ``tensorboard/``); ``None`` writes nothing.
        collate_fn: list of items -> batch (default ``torch.utils.data.default_collate``).
        run_config: json-able recipe config stored with each checkpoint.
        export_fn: ``(trainer, folder)`` adds recipe files (e.g. ``save_pretrained``) to each
            checkpoint folder before it is moved into place.
        accelerator: reuse one; by default :func:`build_accelerator` (``config``'s mixed
            precision, cpu and ``fsdp``).
        progress: show a progress bar on the main process.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        dataset: Dataset,
        loss_fn: LossFn,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        run_config: dict[str, Any] | None = None,
        export_fn: Callable[[Trainer, Path], None] | None = None,
        accelerator: Accelerator | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.accelerator = acc = accelerator or build_accelerator(config)
        # sharded: the weights are DTensors, each rank holds a slice of every wrapped block
        self.sharded = acc.distributed_type == DistributedType.FSDP
        if config.fsdp and acc.num_processes > 1 and not self.sharded:
            raise ConfigError(
                f"train.fsdp={config.fsdp!r} but the accelerator given to the Trainer was built "
                "without FSDP (build it with gesture_apps.runtime.trainer.build_accelerator)"
            )
        self.dataset, self.loss_fn = dataset, loss_fn
        self.collate_fn = collate_fn or default_collate
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_config = run_config or {}
        self.export_fn, self.progress = export_fn, progress
        global_batch = config.batch_size * acc.num_processes
        if len(dataset) < global_batch:
            raise ValueError(
                f"dataset has {len(dataset)} items, fewer than one global batch "
                f"({config.batch_size} x {acc.num_processes} processes)"
            )
        # ranks draw different dropout/noise, but one data order (seeded below, not by RNG)
        set_seed(config.seed + acc.process_index)
        # sharded rank 0 keeps a storage-less copy to rebuild exports from (unsharded_copy)
        self._skeleton: tuple[nn.Module, dict[str, Tensor]] | None = None
        if self.sharded and acc.is_main_process:
            self._skeleton = meta_copy(model)
        if config.fsdp:  # a typo in the block class shows in a one-process run too
            _check_wrap_classes(model, config.fsdp)
        if self.sharded:
            # DDP starts every rank from rank 0's weights; fully_shard keeps each rank's own
            # slice of its own weights, so ranks built with different seeds need this
            _broadcast_from_rank0(model, acc.device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # stepped by hand: accelerate's scheduler wrapper would step once per process
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, self.lr_factor)
        self.raw_model: nn.Module = acc.unwrap_model(self.model)
        self.ema = EMA(self.raw_model, decay=config.ema_decay) if config.ema_decay else None
        self.step = 0
        self.epoch, self.cursor = 0, 0  # data position: pass number, items consumed in it
        self.history: list[dict[str, float]] = []
        self._order_cache: tuple[int, Tensor] | None = None
        self._writer = None
        self._last_saved: int | None = None

    # ----- schedule and data -------------------------------------------------------------

    def lr_factor(self, step: int) -> float:
        """Linear warm-up to 1 over ``warmup_steps``, then x ``gamma`` at each milestone."""
        cfg = self.config
        return lr_factor(step, cfg.warmup_steps, cfg.milestones, cfg.gamma)

    def order(self, epoch: int) -> Tensor:
        """The shuffled item order of pass ``epoch``: a pure function of (seed, epoch)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._order_cache = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._order_cache[1]

    def next_indices(self) -> list[int]:
        """This rank's item indices for the next step (the incomplete tail of a pass is
        skipped, so every rank always gets a full batch)."""
        acc, bs = self.accelerator, self.config.batch_size
        need = bs * acc.num_processes
        if self.cursor + need > len(self.dataset):
            self.epoch, self.cursor = self.epoch + 1, 0
        start = self.cursor + acc.process_index * bs
        idx = self.order(self.epoch)[start : start + bs].tolist()
        self.cursor += need
        return idx

    def next_batch(self) -> Any:
        batch = self.collate_fn([self.dataset[i] for i in self.next_indices()])
        return send_to_device(batch, self.accelerator.device)

    # ----- one step ----------------------------------------------------------------------

    def training_step(self) -> dict[str, float]:
        acc, cfg = self.accelerator, self.config
        batch = self.next_batch()
        self.model.train()
        with acc.autocast():
            loss, metrics = self.loss_fn(self.model, batch)
        self._check_finite_loss(loss)  # before the update: the weights stay the last good ones
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip and self.sharded:
            # what accelerate's FSDP2 clip does for one device mesh, called directly: its own
            # clip_grad_norm_ looks the parameters up among every model prepared in the
            # process with list ==, which raises once a second model was prepared (a resume
            # or a later stage) and skips clipping when none matches. The norm of the
            # DTensor gradients is the global one (reduced over the shards).
            acc.unscale_gradients()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        elif cfg.grad_clip:
            acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        self.step += 1
        out = {"loss": float(loss.detach())}
        out.update({k: float(v) for k, v in metrics.items()})
        out["lr"] = self.scheduler.get_last_lr()[0]
        return out

    def _check_finite_loss(self, loss: Tensor) -> None:
        """Stop a diverged run (e.g. ``train.lr=1e12``, a NaN teacher) with one clear error
        instead of training on NaN and exporting NaN weights. Every rank takes part, so all
        stop together; nothing is saved, the last checkpoint written stays the newest."""
        bad = torch.logical_not(torch.isfinite(loss.detach().float())).float().reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() == 0:
            return
        raise TrainingError(
            f"step {self.step + 1}: the loss is {float(loss.detach())} (non-finite), training "
            f"diverged; stopped without saving (last good checkpoint: {self._newest_checkpoint()}"
            "); lower train.lr or check the data and the teacher"
        )

    def _newest_checkpoint(self) -> str:
        pointer = (self.out_dir or Path()) / "checkpoints" / "latest.txt"
        if self.out_dir is None or not pointer.is_file():
            return "none"
        return str(pointer.parent / pointer.read_text(encoding="utf-8").strip())

    def train(self, steps: int | None = None) -> TrainResult:
        """Train ``steps`` more steps (default: up to ``max_steps``); checkpoint at the end."""
        cfg, acc = self.config, self.accelerator
        end = cfg.max_steps if steps is None else min(cfg.max_steps, self.step + steps)
        bar = tqdm(
            total=end - self.step,
            disable=not (self.progress and acc.is_main_process),
            desc="train",
            dynamic_ncols=True,
        )
        metrics: dict[str, float] = {}
        checkpoint = None
        while self.step < end:
            metrics = self.training_step()
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == end:
                metrics = self._reduce(metrics)
                self._log(metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if self.out_dir and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                checkpoint = self.save_checkpoint()
        bar.close()
        if self.out_dir and self._last_saved != self.step:
            checkpoint = self.save_checkpoint()
        elif self.out_dir:
            checkpoint = self.out_dir / "checkpoints" / f"step_{self.step:07d}"
        if self._writer is not None:
            self._writer.flush()
        return TrainResult(self.step, metrics, checkpoint, list(self.history))

    def train_and_export(
        self, out_dir: str | Path, steps: int | None, write: Callable[[Path], None]
    ) -> TrainResult:
        """Train, let the main process fill ``out_dir`` atomically with ``write(tmp_dir)``,
        wait for every rank and close: the common ending of every recipe's ``run``.

        Each entry ``write`` makes (``lsm/``, ``tokenizer/``) replaces its namesake whole, so
        no file of an earlier export survives; ``checkpoints/`` and the rest stay."""
        result = self.train(steps)
        if self.accelerator.is_main_process:
            atomic_directory(Path(out_dir), write, per_entry=True)
        self.accelerator.wait_for_everyone()
        self.close()
        return result

    def close(self) -> None:
        """Close the TensorBoard writer; in a multi-process run also wait for every rank and
        leave the process group (gloo can abort at exit otherwise)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()

    def _reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """Mean of each metric over the processes (the learning rate is the same on all)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], device=acc.device, dtype=torch.float64)
        values = acc.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist(), strict=True))

    def _log(self, metrics: dict[str, float]) -> None:
        self.history.append({"step": self.step, **metrics})
        if not (self.out_dir and self.accelerator.is_main_process):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        for k, v in metrics.items():
            self._writer.add_scalar(f"train/{k}", v, self.step)

    # ----- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything but the model weights and the RNGs. Sharded, a collective call whose
        optimizer state and EMA are the full tensors (FQN-keyed optimizer state) on rank 0 only.
        """
        acc = self.accelerator
        if self.sharded:
            optimizer = get_optimizer_state_dict(
                self.model, self.optimizer.optimizer, options=FULL_TO_RANK0
            )
        else:
            optimizer = self.optimizer.state_dict()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "num_processes": acc.num_processes,
            "sharded": self.sharded,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "ema": self._ema_state(),
            # fp16: the loss scale and its growth tracker decide which steps are skipped, so an
            # exact resume needs them (None when no grad scaler is in use)
            "scaler": None if acc.scaler is None else acc.scaler.state_dict(),
            "history": self.history,
        }

    def _ema_state(self) -> dict[str, Any] | None:
        if self.ema is None:
            return None
        if not self.sharded:
            return self.ema.state_dict()
        # one tensor at a time: a rank never holds more than one full EMA weight besides its
        # shards; the full copies stay on rank 0, on the CPU
        main = self.accelerator.is_main_process
        shadow = {}
        for k, v in self.ema.shadow.items():
            full = v.full_tensor() if isinstance(v, DTensor) else v
            if main:
                shadow[k] = full.cpu()
        return {"decay": self.ema.decay, "shadow": shadow}

    def _check_finite_weights(self) -> None:
        """A finite loss can still come with an overflowing update; never write such weights.
        Sharded, every rank checks its slices and all raise together."""
        bad = ""
        for name, t in self.raw_model.state_dict().items():
            local = t.to_local() if isinstance(t, DTensor) else t
            if local.is_floating_point() and not torch.isfinite(local).all():
                bad = name
                break
        if self.sharded:
            bad = next((b for b in gather_object([bad]) if b), "")
        if bad:
            raise TrainingError(
                f"step {self.step}: weight {bad!r} is non-finite, training diverged; not "
                f"saved (last good checkpoint: {self._newest_checkpoint()})"
            )

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Write a checkpoint folder (default ``out_dir/checkpoints/step_XXXXXXX``); a
        collective call: every rank must make it. Sharded runs write the same files: the full
        weights, optimizer state and EMA are gathered to rank 0 first."""
        acc = self.accelerator
        if directory is None:
            if self.out_dir is None:
                raise ValueError("save_checkpoint: no directory and no out_dir")
            directory = self.out_dir / "checkpoints" / f"step_{self.step:07d}"
        directory = Path(directory)
        self._check_finite_weights()
        rngs = gather_object([rng_state()])  # one entry per rank, in rank order
        weights = None
        if self.sharded:
            weights = get_model_state_dict(self.model, options=FULL_TO_RANK0)
        state = self.state_dict()
        if acc.is_main_process:
            state["rng"] = rngs

            def write(tmp: Path) -> None:
                if weights is None:
                    save_model(self.raw_model, str(tmp / "model.safetensors"))
                else:
                    tensors = {k: v.contiguous() for k, v in weights.items()}
                    save_file(tensors, str(tmp / "model.safetensors"))
                save_state(state, tmp, STATE_NAME)
                text = json.dumps(self.run_config, indent=2)
                (tmp / "run_config.json").write_text(text, encoding="utf-8")
                if self.export_fn is not None:
                    if weights is None:
                        self.export_fn(self, tmp)
                    else:
                        self._export_unsharded(tmp, weights, state["ema"])

            atomic_directory(directory, write)
            if directory.parent == (self.out_dir or Path()) / "checkpoints":
                write_latest(directory.parent, directory.name)
                self._prune(directory.parent)
            logger.info("saved checkpoint at step %d to %s", self.step, directory)
        self._last_saved = self.step
        acc.wait_for_everyone()
        return directory

    def unsharded_copy(self, *, ema: bool = False) -> nn.Module | None:
        """A plain (unsharded) CPU copy of the model with the current weights, or the EMA
        weights with ``ema=True``, for a recipe's export; ``None`` on the other ranks.

        A collective call when sharded (the weights are gathered to rank 0): every rank must
        make it. Unsharded, a copy of the main process's model."""
        acc = self.accelerator
        if not self.sharded:
            if not acc.is_main_process:
                return None
            model = copy.deepcopy(self.raw_model).cpu()
            if ema and self.ema is not None:
                self.ema.copy_to(model)
            return model
        weights = get_model_state_dict(self.model, options=FULL_TO_RANK0)
        ema_state = self._ema_state() if ema else None
        if not acc.is_main_process:
            return None
        model = self._plain_model(weights)
        if ema_state is not None:
            ema_of(model, ema_state).copy_to(model)
        return model

    def _plain_model(self, weights: dict[str, Tensor]) -> nn.Module:
        """Rank 0: a new unsharded CPU model holding ``weights`` (a full state dict)."""
        if self._skeleton is None:
            raise RuntimeError("only rank 0 of a sharded run keeps the model's structure")
        return materialize(*self._skeleton, weights)

    def _export_unsharded(
        self, tmp: Path, weights: dict[str, Tensor], ema: dict[str, Any] | None
    ) -> None:
        """Run ``export_fn`` on rank 0 with ``raw_model`` / ``ema`` standing for an unsharded
        CPU model holding the gathered weights, so recipes export as they do unsharded."""
        plain = self._plain_model(weights)
        sharded_model, sharded_ema = self.raw_model, self.ema
        try:
            self.raw_model = plain
            if ema is not None:
                self.ema = ema_of(plain, ema)
            self.export_fn(self, tmp)  # type: ignore[misc]
        finally:
            self.raw_model, self.ema = sharded_model, sharded_ema

    def _prune(self, checkpoints: Path) -> None:
        # hidden leftovers of a save or prune killed earlier (only the main process of this
        # run writes here, and its own save has just finished): reclaim their space
        patterns = (".step_*.tmp-*", ".step_*.old-*", f".{LATEST}.tmp-*")
        for stale in [p for pattern in patterns for p in checkpoints.glob(pattern)]:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        steps = sorted(p for p in checkpoints.glob("step_*") if p.is_dir())
        for old in steps[:-keep]:
            # hide it with one rename first: a kill during the slow delete must not leave a
            # half-deleted folder that still looks like a checkpoint
            trash = old.with_name(f".{old.name}.old-{os.getpid()}")
            try:
                os.rename(old, trash)
            except OSError:
                continue  # another process pruned it
            shutil.rmtree(trash, ignore_errors=True)

    def load_checkpoint(self, path: str | Path) -> Path:
        """Restore model, optimizer, scheduler, EMA, data position and RNGs from ``path`` (a
        checkpoint folder or a run folder). Raises :class:`CheckpointError` if unreadable.
        Sharded, every rank reads the full files and keeps its slices."""
        directory = resolve_checkpoint(path)
        try:
            state = load_state(directory, STATE_NAME)
            sharded = bool(state.get("sharded", False))  # AttributeError: not a json object
        except CheckpointError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # or a tensor not stored
            raise CheckpointError(f"{directory}: unreadable trainer state ({e!r})") from None
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{weights}: file not found")
        if sharded != self.sharded:
            mode = {True: "sharded (train.fsdp)", False: "unsharded"}
            raise CheckpointError(
                f"{directory}: written by a {mode[sharded]} run, resuming "
                f"{mode[self.sharded]}: the optimizer states differ (its model.safetensors "
                "loads either way)"
            )
        try:
            if self.sharded:
                full = load_file(str(weights))
                check_finite_tensors(full, weights)
                set_model_state_dict(self.model, full, options=FULL_EVERYWHERE)
            else:
                device = str(self.accelerator.device)
                load_model(self.raw_model, str(weights), strict=True, device=device)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors/torch raise several types for bad files
            raise CheckpointError(
                f"{weights}: does not match the model ({one_line(e, 300)})"
            ) from e
        if not self.sharded:
            check_finite_tensors(self.raw_model.state_dict(), weights)  # it would train on NaN
        try:
            if self.sharded:
                set_optimizer_state_dict(
                    self.model,
                    self.optimizer.optimizer,
                    optim_state_dict=state["optimizer"],
                    options=FULL_EVERYWHERE,
                )
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                if state["ema"] is None:
                    raise KeyError("checkpoint has no EMA weights")
                self.ema.load_state_dict(self._local_ema(state["ema"]))
            # checkpoints from before the scaler was saved have no entry: the scale restarts
            if self.accelerator.scaler is not None and state.get("scaler"):
                self.accelerator.scaler.load_state_dict(state["scaler"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"])
            self.cursor = int(state["cursor"])
            self.history = list(state["history"])
            rngs = state["rng"]
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{directory}: trainer state does not match ({e})") from e
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        if int(state["num_processes"]) != world:
            logger.warning(
                "checkpoint was written by %s processes, resuming with %d: data order and "
                "random draws will not repeat the original run exactly",
                state["num_processes"],
                world,
            )
        if rank < len(rngs):
            set_rng_state(rngs[rank])
        self._last_saved = self.step
        logger.info("resumed from %s at step %d", directory, self.step)
        return directory

    def _local_ema(self, state: dict[str, Any]) -> dict[str, Any]:
        """A stored (full) EMA state with each sharded weight cut to this rank's slice."""
        if self.ema is None or not self.sharded:
            return state
        shadow = dict(state["shadow"])
        for k, mine in self.ema.shadow.items():
            if isinstance(mine, DTensor) and k in shadow:
                full = shadow[k].to(mine.device, mine.dtype)
                if full.shape != mine.shape:
                    raise ValueError(f"EMA {k!r}: expected {tuple(mine.shape)}, found {full.shape}")
                # every rank holds the full tensor already: slice locally, no communication
                shadow[k] = distribute_tensor(
                    full, mine.device_mesh, mine.placements, src_data_rank=None
                )
        return {**state, "shadow": shadow}


def _check_wrap_classes(model: nn.Module, spec: str) -> None:
    """Name the FSDP config file when its block class is not in the model (accelerate's own
    error, raised later on the ranks only, does not say which file to fix)."""
    path, kwargs = read_fsdp_config(spec)
    present = {type(m).__name__ for m in model.modules()}
    missing = [n for n in kwargs.get("transformer_cls_names_to_wrap") or [] if n not in present]
    if missing:
        raise ConfigError(
            f"{path}: fsdp_transformer_layer_cls_to_wrap: {missing} is not a module class of "
            f"{type(model).__name__} (its classes: {sorted(present)})"
        )


@torch.no_grad()
def _broadcast_from_rank0(model: nn.Module, device: torch.device) -> None:
    """Give every rank rank 0's parameters and buffers (before sharding)."""
    for t in [*model.parameters(), *model.buffers()]:
        moved = t.data.to(device)
        dist.broadcast(moved, src=0)
        t.data.copy_(moved)


def model_loss(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]:
    """The ``loss_fn`` of a model whose ``forward(batch)`` returns ``(loss, metrics)``: the
    whole loss runs inside one forward call, as DistributedDataParallel needs."""
    return model(batch)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(data, indent=2)
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))

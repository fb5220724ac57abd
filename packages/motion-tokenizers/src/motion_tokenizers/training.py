"""A tokenizer training loop usable from Python, with exact resume.

Recipe of T2M-GPT / MoMask / GestureLSM: smooth-L1 reconstruction + 0.02 x commitment (+ optional
velocity and acceleration terms), AdamW, linear warm-up then multi-step decay, gradient clipping.
A checkpoint folder holds the model (``model/``: config.json + model.safetensors, EMA codebooks
included as buffers) and the trainer state (optimizer, scheduler, data order, every RNG) in
safetensors + JSON, so resuming reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .base import MotionTokenizer, TokenizerOutput
from .errors import CheckpointError
from .io import atomic_directory, load_state, save_state
from .losses import acceleration_loss, reconstruction_loss, velocity_loss
from .multipart import TOKENIZER_CLASSES

logger = logging.getLogger(__name__)


# ----- the objective and the schedule (also used by gesture_apps' tokenizer recipe) ----------


class TokenizerLoss(NamedTuple):
    """The terms of :func:`tokenizer_loss`, each a 0-d tensor (``vel`` / ``acc`` are ``None``
    when their weight is 0, so nothing is computed for them)."""

    loss: Tensor  # the weighted total to backpropagate
    recon: Tensor
    commit: Tensor
    vel: Tensor | None
    acc: Tensor | None


def tokenizer_loss(
    out: TokenizerOutput,
    target: Tensor,
    *,
    recon: str = "smooth_l1",
    commit_weight: float = 0.02,
    vel_weight: float = 0.0,
    acc_weight: float = 0.0,
) -> TokenizerLoss:
    """T2M-GPT / MoMask / GestureLSM's tokenizer objective for one tokenizer's output.

    ``loss = recon(out.recon, target) + commit_weight * out.commit_loss (+ vel_weight * velocity
    loss + acc_weight * acceleration loss)``, with ``recon`` one of ``smooth_l1`` (default),
    ``l1``, ``l2``.

    Args:
        out: the tokenizer's forward output; ``out.recon`` is ``(B, T, C)``.
        target: the input windows ``(B, T, C)``. ``out.recon`` is cast to its dtype first, so
            a reconstruction made under bf16 autocast is compared in float32 (and a float64
            model's in float64).
    """
    pred = out.recon.to(target.dtype)
    rec = reconstruction_loss(pred, target, recon)
    loss = rec + commit_weight * out.commit_loss
    vel = acc = None
    if vel_weight > 0:
        vel = velocity_loss(pred, target, recon)
        loss = loss + vel_weight * vel
    if acc_weight > 0:
        acc = acceleration_loss(pred, target, recon)
        loss = loss + acc_weight * acc
    return TokenizerLoss(loss, rec, out.commit_loss, vel, acc)


def lr_factor(step: int, warmup_steps: int, milestones: Sequence[int], gamma: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based, as ``LambdaLR`` passes it):
    a linear warm-up from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps (none
    when 0), times ``gamma`` for every milestone already reached (MoMask's MultiStepLR)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * gamma ** sum(step >= m for m in milestones)


@dataclass
class TokenizerTrainConfig:
    """Defaults are GestureLSM's RVQ recipe (``train_rvq.sh``)."""

    max_steps: int = 300_000
    batch_size: int = 256
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 400
    milestones: tuple[int, ...] = (200_000,)
    gamma: float = 0.05
    recon_loss: str = "smooth_l1"
    commit_weight: float = 0.02
    vel_weight: float = 0.0
    acc_weight: float = 0.0
    grad_clip: float | None = 1.0
    precision: str = "fp32"  # "bf16": autocast the convolutions (quantizer stays fp32)
    log_every: int = 100
    usage_every: int = 1000
    checkpoint_every: int = 0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerTrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown tokenizer training options: {sorted(unknown)}")
        d = dict(d)
        for k in ("betas", "milestones"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class TokenizerTrainer:
    """Trains one :class:`MotionTokenizer` on motion windows.

    Args:
        model: the tokenizer (its device is the training device).
        data: a ``(N, T, C)`` tensor of windows, or a ``Dataset`` whose items are ``(T, C)``.
        config: :class:`TokenizerTrainConfig`.
        out_dir: where periodic checkpoints go (``out_dir/step_XXXXXXX``) when
            ``config.checkpoint_every > 0``; the final one is ``out_dir/last``.
        log_fn: called with ``(step, metrics)`` every ``log_every`` steps (e.g. TensorBoard).

    The constructor seeds torch/numpy/python RNGs with ``config.seed``.
    """

    def __init__(
        self,
        model: MotionTokenizer,
        data: Tensor | Dataset,
        config: TokenizerTrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        log_fn: Callable[[int, dict[str, float]], None] | None = None,
    ):
        self.model, self.config = model, config or TokenizerTrainConfig()
        self.data = data
        if len(data) == 0:
            raise ValueError("data: no training windows")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log_fn = log_fn
        cfg = self.config
        if cfg.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected 'fp32' or 'bf16', found {cfg.precision!r}")
        self._bf16 = cfg.precision == "bf16"
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.randperm(len(data), generator=self.data_generator)
        self.cursor = 0
        self.step = 0
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self._usage = torch.zeros(model.num_quantizers, model.codebook_size, dtype=torch.long)
        self.history: list[dict[str, float]] = []

    # ----- schedule and data -------------------------------------------------------------

    def lr_factor(self, step: int) -> float:
        """:func:`lr_factor` with this trainer's ``warmup_steps``, ``milestones``, ``gamma``."""
        cfg = self.config
        return lr_factor(step, cfg.warmup_steps, cfg.milestones, cfg.gamma)

    def next_batch(self) -> Tensor:
        """The next ``batch_size`` windows of a shuffled pass (reshuffled every epoch)."""
        bs, n = self.config.batch_size, len(self.data)
        picks = []
        while len(picks) < bs:
            if self.cursor >= n:
                self.order = torch.randperm(n, generator=self.data_generator)
                self.cursor = 0
            take = min(bs - len(picks), n - self.cursor)
            picks.extend(self.order[self.cursor : self.cursor + take].tolist())
            self.cursor += take
        if isinstance(self.data, Tensor):
            batch = self.data[picks]
        else:
            batch = torch.stack([torch.as_tensor(self.data[i]) for i in picks])
        device = next(self.model.parameters()).device
        return batch.to(device=device, dtype=torch.float32)

    # ----- one step ----------------------------------------------------------------------

    def training_step(self, batch: Tensor) -> dict[str, float]:
        cfg, model = self.config, self.model
        model.train()
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=self._bf16):
            out = model(batch)
        terms = tokenizer_loss(
            out,
            batch,
            recon=cfg.recon_loss,
            commit_weight=cfg.commit_weight,
            vel_weight=cfg.vel_weight,
            acc_weight=cfg.acc_weight,
        )
        loss = terms.loss
        metrics = {"recon": terms.recon.item(), "commit": terms.commit.item()}
        for name in ("vel", "acc"):
            value = getattr(terms, name)
            if value is not None:
                metrics[name] = value.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        idx = out.indices.detach().cpu()
        for q in range(idx.shape[-1]):
            layer = idx[..., q]
            layer = layer[layer >= 0]
            self._usage[q] += torch.bincount(layer, minlength=self._usage.shape[1])
        metrics.update(
            loss=loss.item(), perplexity=out.perplexity.item(), lr=self.scheduler.get_last_lr()[0]
        )
        return metrics

    def codebook_usage(self) -> list[float]:
        """Fraction of codes used per layer since the last report."""
        return (self._usage > 0).float().mean(dim=1).tolist()

    def train(self, steps: int | None = None, *, progress: bool = True) -> list[dict[str, float]]:
        """Run until ``steps`` more steps (default: until ``max_steps``); returns the log rows."""
        cfg = self.config
        end = cfg.max_steps if steps is None else min(cfg.max_steps, self.step + steps)
        bar = tqdm(total=end - self.step, disable=not progress, desc="tokenizer", leave=False)
        while self.step < end:
            metrics = self.training_step(self.next_batch())
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                row = {"step": self.step, **metrics}
                self.history.append(row)
                bar.set_postfix(recon=f"{metrics['recon']:.4f}", ppl=f"{metrics['perplexity']:.1f}")
                if self.log_fn:
                    self.log_fn(self.step, metrics)
            if cfg.usage_every and self.step % cfg.usage_every == 0:
                usage = self.codebook_usage()
                logger.info(
                    "step %d codebook usage per layer: %s",
                    self.step,
                    ", ".join(f"{u:.0%}" for u in usage),
                )
                if self.log_fn:
                    self.log_fn(self.step, {f"usage/layer{q}": u for q, u in enumerate(usage)})
                self._usage.zero_()
            if self.out_dir and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(self.out_dir / f"step_{self.step:07d}")
        bar.close()
        if self.out_dir:
            self.save_checkpoint(self.out_dir / "last")
        return self.history

    # ----- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "cursor": self.cursor,
            "order": self.order,
            "data_generator": self.data_generator.get_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "usage": self._usage,
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": list(np.random.get_state()),
            "rng_python": random.getstate(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.cursor = int(state["step"]), int(state["cursor"])
        self.order = state["order"]
        self.data_generator.set_state(state["data_generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._usage = state["usage"].clone()
        torch.set_rng_state(state["rng_torch"])
        np_state = state["rng_numpy"]
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
        random.setstate(_to_tuples(state["rng_python"]))
        self.history = list(state["history"])

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write ``model/`` + ``trainer_state.*`` + ``train_config.json`` into ``directory``."""
        state = self.state_dict()
        state["rng_numpy"][1] = torch.from_numpy(np.asarray(state["rng_numpy"][1]).astype(np.int64))
        meta = {"model_class": type(self.model).__name__, "config": asdict(self.config)}

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp / "model")
            save_state(state, tmp, "trainer_state")
            (tmp / "train_config.json").write_text(json.dumps(meta, indent=2))

        atomic_directory(directory, write)
        logger.info("saved tokenizer checkpoint at step %d to %s", self.step, directory)
        return Path(directory)

    @classmethod
    def resume(
        cls,
        directory: str | Path,
        data: Tensor | Dataset,
        *,
        out_dir: str | Path | None = None,
        log_fn: Callable[[int, dict[str, float]], None] | None = None,
        device: str | torch.device = "cpu",
    ) -> TokenizerTrainer:
        """Rebuild model, optimizer, scheduler, data order and RNGs from a checkpoint folder."""
        directory = Path(directory)
        meta_path = directory / "train_config.json"
        if not meta_path.is_file():
            raise CheckpointError(f"{meta_path}: file not found")
        try:
            meta = json.loads(meta_path.read_text())
            model_cls = TOKENIZER_CLASSES[meta["model_class"]]
            config = TokenizerTrainConfig.from_dict(meta["config"])
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{meta_path}: invalid trainer config ({e!r})") from e
        model = model_cls.from_pretrained(directory / "model").to(device)
        trainer = cls(model, data, config, out_dir=out_dir, log_fn=log_fn)
        trainer.load_state_dict(load_state(directory, "trainer_state"))
        return trainer


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list | tuple) else x

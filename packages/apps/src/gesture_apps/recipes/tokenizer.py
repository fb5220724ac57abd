"""``gesture train tokenizer``: RVQ-VAE motion tokenizers (one part or GestureLSM's four).

Objective of T2M-GPT / MoMask / GestureLSM per part: smooth-L1 reconstruction + 0.02 x
commitment (+ optional velocity / acceleration terms), summed over the parts. Motion is z-scored
per part (the face stays raw, as GestureLSM leaves it). The run folder gets
``checkpoints/step_*/`` (resumable) and ``tokenizer/`` with ``model/`` (``save_pretrained``) and
``normalizer.npz``.

The tokenizer is not weight-averaged by default (``train.ema_decay: null``), as GestureLSM and
MoMask train it: an average of the convolutions alone would be paired with codebooks fitted to
the live encoder's latents, which the averaged encoder does not produce. With
``train.ema_decay`` set, the export adds ``model_ema/`` in which the codebooks are averaged over
the same steps as the weights (see :func:`prepare`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from motion_tokenizers import BEAT2_PART_DIMS, RVQVAE, MultiPartTokenizer
from motion_tokenizers.losses import acceleration_loss, reconstruction_loss, velocity_loss

from ..runtime import EMA, TrainConfig, Trainer, TrainResult, to_dict
from .data import DataConfig, PartWindows, fit_normalizer, load_windows

logger = logging.getLogger(__name__)

# the tokenizer's part names -> gesture_data's window keys
DATA_KEYS = {"upper": "upper", "hands": "hands", "lower_trans": "lower", "face": "face"}
UNNORMALISED = ("face",)


@dataclass
class TokenizerModelConfig:
    """The ``model:`` section. Unset sizes take the ``size`` preset's value."""

    kind: Literal["multipart", "rvqvae"] = "multipart"
    size: Literal["gesturelsm", "tiny"] = "gesturelsm"
    parts: tuple[str, ...] = ("upper", "hands", "lower_trans", "face")
    quantizer: Literal["rvq", "vq", "fsq", "rfsq", "lfq"] = "rvq"
    nb_code: int | None = None
    code_dim: int | None = None
    num_quantizers: int | None = None
    width: int | None = None
    depth: int | None = None
    down_t: int | None = None
    # unset: the RVQ-VAE's defaults (MoMask's 0.2 residual-block dropout, Gumbel code sampling
    # at temperature 0.5); 0 / false make a run a deterministic function of the data and seed
    dropout: float | None = None
    stochastic_sample_codes: bool | None = None
    quantize_dropout_prob: float | None = None  # unset: MoMask's 0.2
    latent_scale: float = 5.0

    def __post_init__(self) -> None:
        bad = [p for p in self.parts if p not in BEAT2_PART_DIMS]
        if bad or not self.parts:
            raise ValueError(f"parts: expected names from {list(BEAT2_PART_DIMS)}, found {bad}")
        if self.kind == "rvqvae" and len(self.parts) != 1:
            raise ValueError(f"parts: kind 'rvqvae' trains one part, found {list(self.parts)}")


@dataclass
class LossConfig:
    recon: Literal["smooth_l1", "l1", "l2"] = "smooth_l1"
    commit_weight: float = 0.02
    vel_weight: float = 0.0
    acc_weight: float = 0.0


@dataclass
class TokenizerTrainConfig(TrainConfig):
    """The ``train:`` section; as every recipe's, but without weight EMA unless asked for."""

    ema_decay: float | None = None


@dataclass
class TokenizerRecipeConfig:
    recipe: Literal["tokenizer"] = "tokenizer"
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)


def build_tokenizer(cfg: TokenizerModelConfig) -> RVQVAE | MultiPartTokenizer:
    keys = ("nb_code", "code_dim", "num_quantizers", "width", "depth", "down_t", "dropout")
    keys += ("stochastic_sample_codes", "quantize_dropout_prob")
    overrides: dict[str, Any] = {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
    overrides["quantizer"] = cfg.quantizer
    make = RVQVAE.tiny if cfg.size == "tiny" else RVQVAE
    toks = {p: make(BEAT2_PART_DIMS[p], **overrides) for p in cfg.parts}
    if cfg.kind == "rvqvae":
        return toks[cfg.parts[0]]
    return MultiPartTokenizer(toks, latent_scale=cfg.latent_scale)


class TokenizerObjective(nn.Module):
    """Wraps the tokenizer so the whole loss runs inside ``forward`` (one DDP call).

    ``forward({part: (B, T, C)}) -> (loss, {metric: 0-d tensor})``."""

    def __init__(self, tokenizer: RVQVAE | MultiPartTokenizer, parts: tuple[str, ...], loss):
        super().__init__()
        self.tokenizer = tokenizer
        self.part_names = tuple(parts)
        self.loss_cfg = loss

    def part(self, name: str) -> RVQVAE:
        if isinstance(self.tokenizer, MultiPartTokenizer):
            return self.tokenizer.parts[name]
        return self.tokenizer

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.loss_cfg
        total, metrics = 0.0, {}
        dtype = next(self.parameters()).dtype  # a float64 model (parity checks) gets float64 data
        for name in self.part_names:
            x = batch[DATA_KEYS[name]].to(dtype)
            out = self.part(name)(x)
            recon = reconstruction_loss(out.recon, x, cfg.recon)
            loss = recon + cfg.commit_weight * out.commit_loss
            if cfg.vel_weight > 0:
                loss = loss + cfg.vel_weight * velocity_loss(out.recon, x, cfg.recon)
            if cfg.acc_weight > 0:
                loss = loss + cfg.acc_weight * acceleration_loss(out.recon, x, cfg.recon)
            total = total + loss
            metrics[f"recon/{name}"] = recon.detach()
            metrics[f"commit/{name}"] = out.commit_loss.detach()
            metrics[f"perplexity/{name}"] = out.perplexity.detach()
        return total, metrics


def _objective_loss(model: nn.Module, batch: dict[str, Tensor]):
    return model(batch)


@dataclass
class TokenizerRun:
    """Everything :func:`run` built, for callers that want to keep training or inspect."""

    trainer: Trainer
    objective: TokenizerObjective
    normalizer: Any
    config: TokenizerRecipeConfig


def prepare(
    cfg: TokenizerRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> TokenizerRun:
    """Build data, model and trainer (and restore ``resume``); writes nothing yet."""
    data_parts = [DATA_KEYS[p] for p in cfg.model.parts]
    windows, _ = load_windows(cfg.data)
    normalizer = fit_normalizer(windows, [p for p in data_parts if p not in UNNORMALISED], cfg.data)
    dataset = PartWindows(windows, data_parts, normalizer)
    # the model's initial weights depend only on the seed, identically on every rank
    torch.manual_seed(cfg.train.seed)
    objective = TokenizerObjective(build_tokenizer(cfg.model), cfg.model.parts, cfg.loss)
    from gesture_data.datasets.windows import collate

    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=_objective_loss,
        config=cfg.train,
        out_dir=out_dir,
        collate_fn=collate,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(t, folder, normalizer),
        progress=progress,
    )
    if trainer.ema is not None:
        # average consistently: the codebooks (float buffers) move with the weights, so the
        # averaged encoder is paired with codebooks averaged over the same steps, not with the
        # live ones (integer state such as k-means' `initted` is still copied)
        trainer.ema = EMA(trainer.raw_model, decay=cfg.train.ema_decay, average_buffers=True)
    if resume is not None:
        trainer.load_checkpoint(resume)
    n_params = sum(p.numel() for p in objective.parameters())
    logger.info("tokenizer: %d parameters, %d training windows", n_params, len(dataset))
    return TokenizerRun(trainer, objective, normalizer, cfg)


def export(trainer: Trainer, folder: Path, normalizer) -> None:
    """Write ``folder/tokenizer/model/`` (+ ``model_ema/`` when training keeps an EMA) and
    ``normalizer.npz``."""
    objective: TokenizerObjective = trainer.raw_model  # type: ignore[assignment]
    objective.tokenizer.save_pretrained(folder / "tokenizer" / "model")
    if trainer.ema is not None:
        averaged = copy.deepcopy(objective)
        trainer.ema.copy_to(averaged)
        averaged.tokenizer.save_pretrained(folder / "tokenizer" / "model_ema")
    normalizer.save(folder / "tokenizer" / "normalizer.npz")


def run(
    cfg: TokenizerRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/tokenizer/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(
        out_dir, steps, lambda tmp: export(r.trainer, tmp, r.normalizer)
    )

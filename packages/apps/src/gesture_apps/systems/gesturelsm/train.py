"""``gesture train lsm``: GestureLSM audio-to-gesture on frozen multi-part tokenizer latents.

Liu et al., "GestureLSM" (ICCV 2025). The motion of every training window is encoded once by the
frozen per-part RVQ-VAEs of a ``gesture train tokenizer`` export (continuous latents divided by
the tokenizer's ``latent_scale``); a :class:`~flow_backbones.SpatialTemporalDenoiser` learns the
shortcut objective on them (:class:`~flow_backbones.ShortcutLoss`: flow matching on 3/4 of the
batch with 10% condition dropout, self-consistency on 1/4 with 80%), conditioned on

* audio: GestureLSM's ``onset+amplitude`` (16 kHz, 2 channels) through a strided conv encoder
  (total stride 540 ~ 16000/30) whose output is fitted to the motion frames;
* words: per-frame vocabulary indices through a learned embedding. While training, each spoken
  word is replaced by ``<unk>`` with probability ``model.word_drop`` (whole words, never
  silence), so the ``<unk>`` embedding that every out-of-vocabulary word maps to at inference is
  trained rather than left at its random initial value;
* both fused by a linear layer and average-pooled to the latent frame rate, so feature ``n``
  covers latent frame ``n`` (the denoiser's cross-attention is frame-aligned);
* seed frames: the first ``seed_frames`` latents of the window (at inference: the last latents
  of the previous window). They are zeroed with probability ``seed_drop`` so that the first
  window of a recording, which has no predecessor, is in distribution.

Deviation from the reference: the audio encoder uses no BatchNorm (a batch statistic would make
data-parallel runs and resumes depend on the batch split); the word embedding is learned from
scratch instead of FastText (no FastText vectors ship with any package here).

The run folder gets ``checkpoints/step_*/`` (resumable; each holds an ``lsm/`` bundle) and the
bundle ``lsm/`` (see :mod:`gesture_apps.systems.gesturelsm.export`): generator config and
weights (+ EMA), the frozen tokenizers, the normaliser and the vocabulary, everything
``gesture generate --checkpoint`` needs.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow_backbones import ShortcutLoss
from gesture_apps.data.codec import load_tokenizer_bundle
from gesture_apps.data.latents import LatentWindows, encode_windows
from gesture_apps.data.windows import PartWindows, load_windows
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import Trainer, TrainResult, model_loss, to_dict
from gesture_apps.systems.gesturelsm.config import EXPORT, LSMRecipeConfig
from gesture_apps.systems.gesturelsm.export import write_lsm_bundle
from gesture_apps.systems.gesturelsm.model import LSMGenerator, build_spec
from gesture_data.datasets.beat2 import Vocabulary
from motion_tokenizers import MultiPartTokenizer

logger = logging.getLogger(__name__)


# ----- model -------------------------------------------------------------------------------


def drop_words(words: Tensor, p: float, unk: int = 1, pad: int = 0) -> Tensor:
    """``(B, L)`` per-frame word indices with each spoken word replaced by ``unk`` with
    probability ``p`` (torch's RNG, so resumes repeat it).

    A word is a run of equal indices: all of its frames are dropped together, as an unknown
    word at inference covers all of its frames. Silence (``pad``) stays silence."""
    if p <= 0.0:
        return words
    starts = torch.ones_like(words, dtype=torch.bool)
    starts[:, 1:] = words[:, 1:] != words[:, :-1]
    run = starts.long().cumsum(1) - 1  # (B, L) index of each frame's word, < L
    drop = torch.rand(words.shape, device=words.device).gather(1, run) < p
    return torch.where(drop & (words != pad), torch.full_like(words, unk), words)


class LSMObjective(nn.Module):
    """``forward(batch) -> (loss, metrics)``; the whole shortcut loss in one call (DDP)."""

    def __init__(
        self,
        generator: LSMGenerator,
        loss: ShortcutLoss,
        seed_drop: float,
        word_drop: float = 0.0,
    ):
        super().__init__()
        self.generator = generator
        self.loss = loss
        self.seed_drop = seed_drop
        self.word_drop = word_drop

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x1 = batch["latents"]
        g = self.generator
        words = batch["words"]
        if self.training:
            words = drop_words(words, self.word_drop, Vocabulary.UNK, Vocabulary.PAD)
        feats = g.encoder(batch["audio"], words)
        cond: dict[str, Tensor] = {"features": feats}
        s = g.seed_frames
        if s:
            keep = (torch.rand(x1.shape[0], device=x1.device) >= self.seed_drop).to(x1.dtype)
            cond["seed"] = x1[:, :s] * keep[:, None, None]
        out = self.loss(g.denoiser, x1, cond)
        return out.loss, {"flow": out.flow, "consistency": out.consistency}


# ----- data --------------------------------------------------------------------------------


# ----- run ---------------------------------------------------------------------------------


@dataclass
class LSMRun:
    trainer: Trainer
    objective: LSMObjective
    tokenizer: MultiPartTokenizer
    normalizer: Any
    vocab: Any
    spec: dict
    config: LSMRecipeConfig


def prepare(
    cfg: LSMRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> LSMRun:
    """Load the frozen tokenizers, encode the training windows, build model and trainer."""
    if not cfg.tokenizer:
        raise ConfigError(
            "tokenizer: pass the folder of a `gesture train tokenizer` run "
            "(--tokenizer DIR or tokenizer=DIR)"
        )
    tok, normalizer, _ = load_tokenizer_bundle(
        cfg.tokenizer, cfg.model.parts, cfg.tokenizer_weights
    )
    if cfg.data.pose_length % tok.downsample_factor:  # before the windows are encoded with it
        raise ConfigError(
            f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
            f"downsampling factor {tok.downsample_factor}"
        )
    windows, vocab = load_windows(cfg.data)
    data_parts = list(cfg.model.parts)
    latents = encode_windows(tok, PartWindows(windows, data_parts, normalizer))
    dataset = LatentWindows(windows, latents)
    spec = build_spec(cfg, tok, len(vocab))
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    loss = ShortcutLoss(**asdict(cfg.loss))
    objective = LSMObjective(LSMGenerator(spec), loss, cfg.model.seed_drop, cfg.model.word_drop)
    from gesture_data.datasets.windows import collate

    run_state: dict[str, Any] = {}
    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        collate_fn=collate,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(run_state["run"], folder),
        progress=progress,
    )
    run = LSMRun(trainer, objective, tok, normalizer, vocab, spec, cfg)
    run_state["run"] = run
    if resume is not None:
        trainer.load_checkpoint(resume)
    n_params = sum(p.numel() for p in objective.parameters())
    logger.info(
        "lsm: %d parameters, %d training windows of %d latent frames x %d",
        n_params,
        len(dataset),
        latents.shape[1],
        latents.shape[2],
    )
    return run


def export(run: LSMRun, folder: Path) -> None:
    """Write the bundle ``folder/lsm/``: generator (+ EMA), tokenizers, normaliser, vocabulary."""
    averaged = None
    if run.trainer.ema is not None:
        averaged = copy.deepcopy(run.trainer.raw_model)
        run.trainer.ema.copy_to(averaged)
    write_lsm_bundle(
        folder / EXPORT,
        spec=run.spec,
        generator=run.trainer.raw_model.generator,  # type: ignore[union-attr]
        ema_generator=None if averaged is None else averaged.generator,
        tokenizer=run.tokenizer,
        normalizer=run.normalizer,
        vocab=run.vocab,
    )


def run(
    cfg: LSMRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/lsm/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))

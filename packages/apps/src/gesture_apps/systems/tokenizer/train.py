"""``gesture train tokenizer``: RVQ-VAE motion tokenizers (one part or GestureLSM's four), or
T2M-GPT's VQ-VAE on a HumanML3D-layout folder (``model.kind: vqvae``, ``data.source:
humanml3d``; its loss adds ``loss.local_pos_weight`` x the root-relative positions term).

Objective of T2M-GPT / MoMask / GestureLSM per part: smooth-L1 reconstruction + 0.02 x
commitment (+ optional velocity / acceleration terms), summed over the parts. Motion is z-scored
per part (the face stays raw, as GestureLSM leaves it). The run folder gets
``checkpoints/step_*/`` (resumable) and the bundle ``tokenizer/`` with the components
``tokenizer/`` (``save_pretrained``) and ``normalizer/``.

The tokenizer is not weight-averaged by default (``train.ema_decay: null``), as GestureLSM and
MoMask train it: an average of the convolutions alone would be paired with codebooks fitted to
the live encoder's latents, which the averaged encoder does not produce. With
``train.ema_decay`` set, the bundle adds ``tokenizer_ema/`` in which the codebooks are averaged over
the same steps as the weights (see :func:`prepare`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gesture_apps.data.codec import UNNORMALISED, normalizer_config
from gesture_apps.data.humanml3d import MOTION, MotionWindows, load_clips, open_reader
from gesture_apps.data.windows import PartWindows, fit_normalizer, load_windows
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import EMA, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.runtime.bundle import write_bundle
from gesture_apps.systems.tokenizer.config import TokenizerRecipeConfig
from gesture_apps.systems.tokenizer.model import TokenizerObjective, build_tokenizer
from motion_tokenizers import VQVAE

logger = logging.getLogger(__name__)

EXPORT = "tokenizer"  # the bundle folder in the run


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
    if cfg.model.kind == "vqvae":
        dataset, normalizer = _humanml3d_windows(cfg)
    else:
        data_parts = list(cfg.model.parts)
        windows, _ = load_windows(cfg.data)
        unnormalised = [p for p in data_parts if p not in UNNORMALISED]
        normalizer = fit_normalizer(windows, unnormalised, cfg.data)
        dataset = PartWindows(windows, data_parts, normalizer)
    # the model's initial weights depend only on the seed, identically on every rank
    torch.manual_seed(cfg.train.seed)
    objective = TokenizerObjective(build_tokenizer(cfg.model), cfg.model.parts, cfg.loss)
    from gesture_data.datasets.windows import collate

    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
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


def _humanml3d_windows(cfg: TokenizerRecipeConfig):
    """(windows of the folder's train split, the folder's Mean/Std as a ``motion``
    normaliser): T2M-GPT's VQ-VAE data, z-scored with the dataset's own statistics."""
    from gesture_data import Normalizer

    if cfg.data.source != "humanml3d":
        raise ConfigError(
            f"data.source: model.kind 'vqvae' reads a HumanML3D-layout folder (data.source="
            f"humanml3d, data.root=DIR), found {cfg.data.source!r}"
        )
    d = cfg.data
    clips = load_clips(d.root, d.split or "train", min_frames=d.pose_length, captions=False)
    reader = open_reader(d.root)
    normalizer = Normalizer({MOTION: (reader.mean, reader.std)}, path=reader.root / "Std.npy")
    return MotionWindows(clips, d.pose_length, d.stride), normalizer


def export(trainer: Trainer, folder: Path, normalizer) -> None:
    """Write the bundle ``folder/tokenizer/``: ``tokenizer/`` (+ ``tokenizer_ema/`` when
    training keeps an EMA) and ``normalizer/``."""
    objective: TokenizerObjective = trainer.raw_model  # type: ignore[assignment]
    components = {"tokenizer": (None, objective.tokenizer.save_pretrained)}
    if trainer.ema is not None:
        averaged = copy.deepcopy(objective)
        trainer.ema.copy_to(averaged)
        components["tokenizer_ema"] = (None, averaged.tokenizer.save_pretrained)
    components["normalizer"] = (
        normalizer_config(normalizer),
        lambda sub: normalizer.save(sub / "normalizer.npz"),
    )
    if isinstance(objective.tokenizer, VQVAE):  # HumanML3D features: 20 fps, no BEAT2 layout
        write_bundle(
            folder / EXPORT, system="tokenizer", components=components, layout="humanml3d", fps=20
        )
    else:
        write_bundle(folder / EXPORT, system="tokenizer", components=components)


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

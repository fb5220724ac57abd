"""``gesture train t2m-gpt``: T2M-GPT's GPT stage over a frozen VQ-VAE, from utterances.

Every training clip of a HumanML3D-layout folder (KTubeUM: a Korean utterance per clip) is
encoded once into motion codes by the tokenizer (``--tokenizer``: a ``gesture train tokenizer
--preset tokenizer/t2m_gpt`` run), every caption once into a sentence embedding (``text.encoder``,
multilingual-e5 by default), standardised with the training captions' statistics. The GPT
(``motion_tokenizers.priors.T2MGPT``) then learns T2M-GPT's objective: input codes corrupted with
probability ``1 - pkeep``, cross-entropy over the codes and End. As the reference's
``dataset_TM_train``, a third of the rows drop one code at the head or the tail (enumerated
here, so that an item is a function of its index and a resume repeats the run exactly).

The run folder gets ``checkpoints/step_*/`` (resumable) and the bundle ``t2m_gpt/`` (prior,
tokenizer, normaliser, text encoder spec and caption statistics; 20 fps) that
``gesture generate --bundle`` and :func:`.pipeline.generate_from_bundle` read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gesture_apps.data.humanml3d import open_reader
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import Trainer, TrainResult, model_loss, to_dict
from gesture_apps.runtime.bundle import write_bundle
from gesture_apps.systems.t2m_gpt.config import EXPORT, FPS, T2MRecipeConfig
from gesture_apps.systems.t2m_gpt.model import (
    MOTION,
    MotionCodec,
    T2MObjective,
    caption_stats,
    load_codec,
)
from gesture_apps.systems.t2m_gpt.text import TextCondition
from motion_tokenizers.priors import T2MGPT, pad_codes

logger = logging.getLogger(__name__)

# T2M-GPT's crop: 2 in 3 rows keep the whole sequence, 1 in 6 drops the first code, 1 in 6
# the last one (its coin flips, as a fixed cycle of variants per clip and caption)
VARIANTS = ("whole", "whole", "whole", "whole", "head", "tail")


@dataclass
class T2MRun:
    trainer: Trainer
    objective: T2MObjective
    codec: MotionCodec
    text: TextCondition
    stats: tuple[np.ndarray, np.ndarray]
    config: T2MRecipeConfig


def encode_clips(codec: MotionCodec, root: Path, split: str, min_frames: int, max_frames: int):
    """``[(clip id, codes (L,), captions)]`` of every clip of ``split`` with at least
    ``min_frames`` frames, cut to at most ``max_frames`` and to whole codes."""
    reader = open_reader(root)
    unit = codec.tokenizer.downsample_factor
    out = []
    for cid in reader.ids(split):
        feats = reader.features(cid)  # DataError naming the file for a broken array
        if len(feats) < min_frames:
            continue
        n = min(len(feats), max_frames) // unit * unit
        caps = [c.caption for c in reader.texts(cid) if c.caption.strip()]
        if caps:
            out.append((cid, codec.encode(feats[:n]), caps))
    if not out:
        raise ConfigError(
            f"{root}: no captioned clip of split {split!r} has {min_frames} or more frames"
        )
    return out


class CodeRows(Dataset):
    """Item ``{"codes": (block_size,), "lengths": int, "cond": (D,)}`` for every (clip,
    caption, crop variant)."""

    def __init__(self, clips, cond: dict[str, np.ndarray], prior: T2MGPT):
        self.clips, self.cond, self.prior = clips, cond, prior
        self.index = [
            (c, k, v)
            for c, (_, _, caps) in enumerate(clips)
            for k in range(len(caps))
            for v in VARIANTS
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        c, k, variant = self.index[i]
        _, codes, caps = self.clips[c]
        if len(codes) > 1 and variant == "head":
            codes = codes[1:]
        elif len(codes) > 1 and variant == "tail":
            codes = codes[:-1]
        p = self.prior
        row, length = pad_codes([codes], end_id=p.end_id, pad_id=p.pad_id, length=p.block_size)
        return {
            "codes": row[0],
            "lengths": int(length[0]),
            "cond": torch.from_numpy(self.cond[caps[k]]),
        }


def build_prior(cfg: T2MRecipeConfig, num_vq: int, clip_dim: int) -> T2MGPT:
    make = T2MGPT.tiny if cfg.model.size == "tiny" else T2MGPT.t2m_gpt
    return make(num_vq=num_vq, clip_dim=clip_dim, **cfg.model.overrides())


def prepare(
    cfg: T2MRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> T2MRun:
    """Encode the data, build the GPT and the trainer (and restore ``resume``)."""
    if not cfg.tokenizer:
        raise ConfigError("tokenizer: pass the VQ-VAE run folder (--tokenizer DIR)")
    codec = load_codec(cfg.tokenizer)
    unit = codec.tokenizer.downsample_factor
    torch.manual_seed(cfg.train.seed)  # initial weights: a function of the seed alone
    text = TextCondition.get(cfg.text.encoder)
    prior = build_prior(cfg, codec.tokenizer.codebook_size, text.dim)
    most = (prior.block_size - 1) * unit
    if cfg.data.max_frames > most:
        raise ConfigError(
            f"data.max_frames: {cfg.data.max_frames} frames need more than block_size - 1 = "
            f"{prior.block_size - 1} codes of {unit} frames (at most {most})"
        )
    root = Path(cfg.data.source).expanduser()
    clips = encode_clips(codec, root, cfg.data.split, cfg.data.min_frames, cfg.data.max_frames)
    captions = sorted({c for _, _, caps in clips for c in caps})
    emb = text.embed(captions)
    mean, std = caption_stats(emb)
    cond = {c: ((e - mean) / std).astype(np.float32) for c, e in zip(captions, emb, strict=True)}
    dataset = CodeRows(clips, cond, prior)
    objective = T2MObjective(prior, cfg.loss.pkeep)
    from gesture_data.datasets.windows import collate

    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        collate_fn=collate,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(t, folder, codec, text, (mean, std)),
        progress=progress,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    n = sum(p.numel() for p in prior.parameters())
    logger.info("t2m-gpt: %d parameters, %d clips, %d rows", n, len(clips), len(dataset))
    return T2MRun(trainer, objective, codec, text, (mean, std), cfg)


def export(trainer: Trainer, folder: Path, codec: MotionCodec, text: TextCondition, stats) -> None:
    """Write the bundle ``folder/t2m_gpt/``: ``prior/`` (+ ``prior_ema/`` with an EMA),
    ``tokenizer/``, ``normalizer/`` and ``text/`` (encoder spec, caption statistics)."""
    from gesture_data import Normalizer

    prior: T2MGPT = trainer.raw_model.prior  # type: ignore[union-attr]
    components = {"prior": (None, prior.save_pretrained)}
    if trainer.ema is not None:
        averaged = trainer.unsharded_copy(ema=True)
        components["prior_ema"] = (None, averaged.prior.save_pretrained)  # type: ignore[union-attr]
    components["tokenizer"] = (None, codec.tokenizer.save_pretrained)
    norm = Normalizer({MOTION: (codec.mean, codec.std)})
    components["normalizer"] = (
        {"parts": {MOTION: len(codec.mean)}},
        lambda sub: norm.save(sub / "normalizer.npz"),
    )
    mean, std = stats

    def write_text(sub: Path) -> None:
        from motion_tokenizers.io import atomic_write

        atomic_write(sub / "caption_stats.npz", lambda p: _save_npz(p, mean=mean, std=std))

    components["text"] = ({"encoder": text.spec, "dim": int(text.dim)}, write_text)
    write_bundle(
        folder / EXPORT,
        system="t2m_gpt",
        components=components,
        layout="humanml3d",
        fps=FPS,
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def run(
    cfg: T2MRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/t2m_gpt/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(
        out_dir, steps, lambda tmp: export(r.trainer, tmp, r.codec, r.text, r.stats)
    )

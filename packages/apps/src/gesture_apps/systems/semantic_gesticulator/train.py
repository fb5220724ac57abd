"""``gesture train semantic-gesticulator rvq|coarse|fine``: Semantic Gesticulator's three
training stages on the synthetic corpus (default) or BEAT2 (``--data beat2:PATH``).

- ``rvq``: ``SGRVQVAE`` on ``data.pose_length``-frame motion windows (stride ``data.stride``),
  z-scored per channel with the training clips' statistics; SG's loss (commitment +
  reconstruction + velocity + acceleration, body and hands weighted).
- ``coarse`` (``--from`` the ``rvq`` run): every training clip is encoded once by the frozen
  tokenizer; ``SGCoarseGPT`` learns layer 0 of both parts on windows of ``block_size + 1``
  tokens with the clip's SG audio features (437-d, one row per token, z-scored with a scaler
  fitted on the training clips: SG's ``audio_feature_scaler``) by teacher forcing.
- ``fine`` (``--from`` the ``coarse`` run): the three ``SGFineGPT`` (layers 1, 2, 3) in one run,
  their losses summed, on windows of the fine block size.

Each stage writes ``OUT/checkpoints/step_*/`` (resumable) and the bundle
``OUT/semantic_gesticulator/`` with every model trained so far (the previous stage's are copied
in), so the ``fine`` run's bundle is the one ``gesture generate --checkpoint`` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError, GenerationError
from gesture_apps.runtime import Trainer, TrainResult, model_loss, to_dict
from gesture_apps.runtime.bundle import Bundle, write_bundle
from gesture_apps.systems.semantic_gesticulator.config import (
    EXPORT,
    FPS,
    MOTION_DIM,
    SYSTEM,
    SGDataConfig,
    SGRecipeConfig,
)
from gesture_apps.systems.semantic_gesticulator.model import (
    MOTION,
    MotionCodec,
    audio_features,
    build_tokenizer,
    load_codec,
    motion_array,
    open_sg_bundle,
    read_scaler,
    save_npz,
)
from gesture_data.features.sg_audio import SG_AUDIO_DIM, SGScaler
from motion_tokenizers import SGRVQVAE
from motion_tokenizers.priors import SGCoarseGPT, SGFineGPT

logger = logging.getLogger(__name__)


@dataclass
class Clip:
    """One training take: motion in our layout and its speech."""

    clip_id: str
    motion: np.ndarray  # (T, 168) un-normalised
    audio: np.ndarray  # (S,) float32
    sample_rate: int


def load_clips(cfg: SGDataConfig) -> list[Clip]:
    """The training clips: the synthetic corpus's train split (every clip when there are
    fewer than five) or a BEAT2 split."""
    if cfg.source == "synthetic":
        from gesture_data.datasets.synthetic import make_corpus, split_of

        corpus = make_corpus(cfg.num_clips, cfg.seconds, cfg.seed, languages=cfg.languages)
        keep = [c for i, c in enumerate(corpus) if len(corpus) < 5 or split_of(i) == "train"]
        return [clip_of(c) for c in keep]
    if cfg.source != "beat2" and not cfg.source.startswith("beat2:"):
        raise ConfigError(
            f"data.source: expected 'synthetic' or 'beat2:PATH', found {cfg.source!r}"
        )
    from gesture_data.datasets.beat2 import list_clips, load_clip

    root = Path(cfg.source.partition(":")[2]).expanduser()
    ids = list_clips(root, cfg.split, cfg.speakers)
    if not ids:
        raise ConfigError(f"{root}: no clips in split {cfg.split!r}")
    return [clip_of(load_clip(root, cid)) for cid in ids]


def clip_of(c) -> Clip:
    """A ``Beat2Clip`` (BEAT2 or synthetic) at 30 fps as a :class:`Clip`."""
    if abs(float(c.fps) - FPS) > 1e-6:
        raise ConfigError(f"clip {c.clip_id}: expected {FPS:g} fps motion, found {c.fps}")
    return Clip(c.clip_id, motion_array(c.poses, c.trans), c.audio, int(c.sample_rate))


class MotionWindows(Dataset):
    """Item ``{"motion": (L, 168)}`` normalised, every ``stride`` frames of every clip."""

    def __init__(self, clips: list[Clip], length: int, stride: int, mean, std):
        self.clips = [((c.motion - mean) / std).astype(np.float32) for c in clips]
        self.index = [
            (k, s) for k, m in enumerate(self.clips) for s in range(0, len(m) - length + 1, stride)
        ]
        self.length = length

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, s = self.index[i]
        return {"motion": torch.from_numpy(self.clips[k][s : s + self.length])}


class TokenWindows(Dataset):
    """Item ``{"body", "hands": (L, 4) long, "cond": (L, 437)}`` every ``stride`` tokens."""

    def __init__(self, rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], length, stride):
        self.rows, self.length = rows, length
        self.index = [
            (k, s)
            for k, (b, _, _) in enumerate(rows)
            for s in range(0, len(b) - length + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, s = self.index[i]
        body, hands, cond = self.rows[k]
        sl = slice(s, s + self.length)
        return {"body": body[sl], "hands": hands[sl], "cond": cond[sl]}


class RVQObjective(nn.Module):
    def __init__(self, tokenizer: SGRVQVAE):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, batch: dict):
        _, loss, metrics = self.tokenizer(batch["motion"])
        return loss, {k: v for k, v in metrics.items() if _scalar(v)}


class CoarseObjective(nn.Module):
    """SG's teacher forcing over layer 0: windows of ``block_size + 1`` tokens."""

    def __init__(self, coarse: SGCoarseGPT):
        super().__init__()
        self.coarse = coarse

    def forward(self, batch: dict):
        loss, metrics = self.coarse.loss(
            batch["body"][..., 0], batch["hands"][..., 0], batch["cond"]
        )
        return loss, {k: v for k, v in metrics.items() if _scalar(v)}


class FineObjective(nn.Module):
    """The three fine GPTs trained together: the sum of their losses (layer k sees 0..k-1)."""

    def __init__(self, fines: list[SGFineGPT]):
        super().__init__()
        self.fines = nn.ModuleList(fines)

    def forward(self, batch: dict):
        total, out = 0.0, {}
        for k, fine in enumerate(self.fines, start=1):
            loss, _ = fine.loss(
                batch["body"][..., : k + 1], batch["hands"][..., : k + 1], batch["cond"]
            )
            total = total + loss
            out[f"loss_{k}"] = loss.detach()
        return total, out


def _scalar(v) -> bool:
    return isinstance(v, int | float) or (torch.is_tensor(v) and v.numel() == 1)


def block_size(model: nn.Module) -> int:
    """The GPT's context length in tokens (its constructor's ``block_size``)."""
    size = getattr(model, "block_size", None)
    if size is None:
        size = getattr(model, "config", {}).get("block_size")
    return int(size)


def fit_motion_stats(
    clips: list[Clip], min_std: float, gain: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel statistics of the training motion: mean ``(168,)`` and the divisor
    ``max(std, min_std) / gain`` ``(168,)`` (``gain`` 1: SG's ``body_scaler`` z-score). The
    divisor is what the codec stores as ``std``, so decoding needs no extra setting."""
    x = np.concatenate([c.motion for c in clips]).astype(np.float64)
    std = np.maximum(x.std(0), min_std) / gain
    return x.mean(0).astype(np.float32), std.astype(np.float32)


def fit_audio_scaler(feats: list[np.ndarray]) -> SGScaler:
    x = np.concatenate(feats).astype(np.float64)
    return SGScaler(
        mean=x.mean(0).astype(np.float32), scale=np.maximum(x.std(0), 1e-4).astype(np.float32)
    )


def token_rows(codec: MotionCodec, clips: list[Clip], cfg: SGRecipeConfig, scaler: SGScaler | None):
    """Per clip: codes ``(N, 4)`` per part and audio features ``(N, 437)`` (cut to the
    shorter of the two); the scaler is fitted on these clips when not given."""
    raw = [
        audio_features(
            c.audio, c.sample_rate, fps=cfg.audio.fps, ds_rate=cfg.audio.ds_rate, scaler=None
        )
        for c in clips
    ]
    if scaler is None:
        scaler = fit_audio_scaler(raw)
    rows = []
    for c, f in zip(clips, raw, strict=True):
        codes = codec.encode(c.motion)
        n = min(codes["body"].shape[1], len(f))
        cond = torch.from_numpy(np.asarray(scaler.transform(f[:n]), np.float32))
        rows.append((codes["body"][0, :n], codes["hands"][0, :n], cond))
    return rows, scaler


@dataclass
class Previous:
    """What a GPT stage takes over from the stage before it."""

    bundle: Bundle
    codec: MotionCodec
    scaler: SGScaler | None
    coarse: SGCoarseGPT | None


def open_previous(cfg: SGRecipeConfig) -> Previous:
    need = {"coarse": "rvq", "fine": "coarse"}[cfg.stage]
    if not cfg.previous:
        raise ConfigError(f"previous: stage {cfg.stage} needs the {need} run (--from DIR)")
    try:
        bundle = open_sg_bundle(cfg.previous)
    except GenerationError as e:
        raise ConfigError(f"previous: {e}") from None
    stage = bundle.config("audio").get("stage")
    if STAGE_ORDER[stage] < STAGE_ORDER[need]:
        raise ConfigError(
            f"previous: {bundle.folder} is a {stage!r} stage bundle; stage {cfg.stage} needs "
            f"a {need!r} one"
        )
    codec = load_codec(bundle)
    for p in codec.tokenizer.parameters():
        p.requires_grad_(False)
    codec.tokenizer.eval()
    scaler = (
        read_scaler(bundle)
        if bundle.has("audio") and (bundle.path("audio") / "scaler.npz").is_file()
        else None
    )
    coarse = None
    if cfg.stage == "fine":
        coarse = SGCoarseGPT.from_pretrained(str(bundle.path("coarse")))
    return Previous(bundle, codec, scaler, coarse)


STAGE_ORDER = {"rvq": 0, "coarse": 1, "fine": 2}


def _gpt_kwargs(cfg: SGRecipeConfig, which: str, codec: MotionCodec) -> dict:
    # the GPTs' vocabulary is the tokenizer's codebook, their condition SG's audio features
    return {
        "cond_dim": SG_AUDIO_DIM,
        "vocab_size": int(codec.tokenizer.l_bins),
        **getattr(cfg.model, which),
    }


def check_rates(cfg: SGRecipeConfig, tokenizer: SGRVQVAE) -> None:
    """One audio feature row per token: ``audio.fps / audio.ds_rate`` must be the token rate
    (motion fps / the tokenizer's frames per token); SG's first codes must be codes."""
    rows, tokens = cfg.audio.fps / cfg.audio.ds_rate, FPS / tokenizer.downsample
    if abs(rows - tokens) > 1e-9:
        raise ConfigError(
            f"audio: fps {cfg.audio.fps:g} / ds_rate {cfg.audio.ds_rate} = {rows:g} feature rows "
            f"per second, but the tokens run at {FPS:g} / {tokenizer.downsample} = {tokens:g} Hz"
        )
    for key in ("body0", "hands0"):
        if not 0 <= getattr(cfg.sample, key) < tokenizer.l_bins:
            raise ConfigError(
                f"sample.{key}: {getattr(cfg.sample, key)} is not a code of the tokenizer's "
                f"{tokenizer.l_bins}-entry codebook"
            )


def prepare(
    cfg: SGRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    clips: list[Clip] | None = None,
) -> tuple[Trainer, callable]:
    """Build the stage's model, data and trainer; returns it with the export writer."""
    # the previous stage first: a missing --from fails before the data is read
    prev = open_previous(cfg) if cfg.stage != "rvq" else None
    torch.manual_seed(cfg.train.seed)  # initial weights: a function of the seed alone
    clips = clips if clips is not None else load_clips(cfg.data)
    size = cfg.model.size
    if cfg.stage == "rvq":
        tokenizer = build_tokenizer(size, cfg.model.tokenizer)
        check_rates(cfg, tokenizer)
        mean, std = fit_motion_stats(clips, cfg.data.min_std, cfg.data.motion_gain)
        if cfg.data.pose_length % tokenizer.downsample:
            raise ConfigError(
                f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
                f"{tokenizer.downsample} frames per token"
            )
        dataset = MotionWindows(clips, cfg.data.pose_length, cfg.data.stride, mean, std)
        objective: nn.Module = RVQObjective(tokenizer)
        codec = MotionCodec(tokenizer, mean, std)
        scaler, coarse, fines = None, None, None
    else:
        codec = prev.codec
        check_rates(cfg, codec.tokenizer)
        rows, scaler = token_rows(codec, clips, cfg, prev.scaler)
        make = SGCoarseGPT.tiny if size == "tiny" else SGCoarseGPT.sg
        if cfg.stage == "coarse":
            coarse = make(**_gpt_kwargs(cfg, "coarse", codec))
            fines = None
            objective = CoarseObjective(coarse)
            length = block_size(coarse) + 1
        else:
            coarse = prev.coarse
            fmake = SGFineGPT.tiny if size == "tiny" else SGFineGPT.sg
            fines = [fmake(level=k, **_gpt_kwargs(cfg, "fine", codec)) for k in (1, 2, 3)]
            objective = FineObjective(fines)
            length = block_size(fines[0])
        dataset = TokenWindows(rows, length, cfg.data.token_stride)
    if len(dataset) == 0:
        raise ConfigError(f"stage {cfg.stage}: no training window fits in {len(clips)} clips")
    if len(dataset) < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is more than the {len(dataset)} "
            f"training windows of stage {cfg.stage}"
        )

    def export(trainer: Trainer, folder: Path) -> None:
        trained = trainer.raw_model
        write_sg_bundle(
            folder / EXPORT,
            cfg,
            codec=codec,
            scaler=scaler,
            coarse=trained.coarse if cfg.stage == "coarse" else coarse,
            fines=list(trained.fines) if cfg.stage == "fine" else None,
        )

    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=export,
        progress=progress,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    n = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    logger.info("semantic-gesticulator %s: %d parameters, %d windows", cfg.stage, n, len(dataset))
    return trainer, export


def write_sg_bundle(
    folder: Path,
    cfg: SGRecipeConfig,
    *,
    codec: MotionCodec,
    scaler: SGScaler | None,
    coarse: SGCoarseGPT | None,
    fines: list[SGFineGPT] | None,
) -> Path:
    """The bundle: ``tokenizer/``, ``normalizer/``, ``audio/`` (+ ``coarse/``, ``fine_1..3/``)."""
    components = {"tokenizer": (None, codec.tokenizer.save_pretrained)}
    components["normalizer"] = (
        {"parts": {MOTION: MOTION_DIM}},
        lambda sub: save_npz(sub / "normalizer.npz", mean=codec.mean, std=codec.std),
    )
    audio = {
        "fps": cfg.audio.fps,
        "ds_rate": cfg.audio.ds_rate,
        "dim": SG_AUDIO_DIM,
        "body0": cfg.sample.body0,
        "hands0": cfg.sample.hands0,
        "stage": cfg.stage,
    }

    def write_audio(sub: Path) -> None:
        if scaler is not None:
            save_npz(
                sub / "scaler.npz", mean=np.asarray(scaler.mean), scale=np.asarray(scaler.scale)
            )

    components["audio"] = (audio, write_audio)
    if coarse is not None:
        components["coarse"] = (None, coarse.save_pretrained)
    for k, fine in enumerate(fines or [], start=1):
        components[f"fine_{k}"] = (None, fine.save_pretrained)
    return write_bundle(folder, system=SYSTEM, components=components, layout="sg168", fps=FPS)


def run(
    cfg: SGRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
    clips: list[Clip] | None = None,
) -> TrainResult:
    """Train (or continue) one stage and write ``out_dir/semantic_gesticulator/``."""
    trainer, export = prepare(cfg, out_dir, resume=resume, progress=progress, clips=clips)
    return trainer.train_and_export(out_dir, steps, lambda tmp: export(trainer, tmp))

"""``gesture train omniges``: any-to-any text / audio / gesture flow matching in one MMDiT.

Omniges (OmniFlow's training with the image stream replaced by gesture latents): every training
window gives three streams, encoded once by frozen codecs (the multi-part gesture tokenizer of a
``gesture train tokenizer`` run, the audio VAE and the text VAE; see :mod:`.data`), and the
MMDiT learns the six directions between them with OmniFlow's timestep roles
(:class:`~flow_backbones.MultiStreamFlowLoss`: the generated stream at a logit-normal time, the
condition clean with probability 0.8 else noise-augmented with its loss off, the third stream
pure noise, 15% of conditions dropped for guidance), tasks in round robin by default.

The run folder gets ``checkpoints/step_*/`` (resumable, each with an ``omniges/`` bundle) and
the bundle ``omniges/`` that ``gesture generate --checkpoint`` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gesture_apps.data.codec import load_tokenizer_bundle
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import Trainer, TrainResult, model_loss, to_dict
from gesture_apps.systems.omniges.audio import MEL, AudioCodec
from gesture_apps.systems.omniges.config import EXPORT, OmnigesRecipeConfig
from gesture_apps.systems.omniges.data import (
    StreamWindows,
    encode_streams,
    load_wave_windows,
    stream_stats,
    window_sources,
)
from gesture_apps.systems.omniges.model import (
    OmnigesObjective,
    StreamGeometry,
    build_mmdit,
    make_loss,
)
from gesture_apps.systems.omniges.pipeline import OmnigesPipeline, averaged_copy
from gesture_apps.systems.omniges.text_vae import TextVAE

logger = logging.getLogger(__name__)


@dataclass
class OmnigesRun:
    trainer: Trainer
    objective: OmnigesObjective
    pipeline: OmnigesPipeline  # the frozen codecs and the (live) trained MMDiT
    config: OmnigesRecipeConfig


def load_codecs(cfg: OmnigesRecipeConfig):
    """(tokenizer, normaliser, audio codec, text VAE) named by the recipe, all frozen."""
    for key in ("tokenizer", "audio_codec", "text_vae"):
        if not getattr(cfg, key):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{key}: pass the folder of its trained model ({flag} DIR)")
    tok, normalizer, _ = load_tokenizer_bundle(
        cfg.tokenizer, cfg.model.parts, cfg.tokenizer_weights
    )
    codec = AudioCodec.from_pretrained(cfg.audio_codec)
    text_vae = TextVAE.from_pretrained(cfg.text_vae)
    for m in (codec, text_vae):
        m.requires_grad_(False)
    return tok, normalizer, codec, text_vae


def prepare(
    cfg: OmnigesRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> OmnigesRun:
    """Load the frozen codecs, encode the training windows, build model and trainer."""
    tok, normalizer, codec, text_vae = load_codecs(cfg)
    if cfg.data.pose_length % tok.downsample_factor:
        raise ConfigError(
            f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
            f"downsampling factor {tok.downsample_factor}"
        )
    windows, vocab = load_wave_windows(cfg.data)
    sources = window_sources(windows, vocab)
    raw = encode_streams(
        windows,
        sources,
        tokenizer=tok,
        normalizer=normalizer,
        parts=cfg.model.parts,
        codec=codec,
        text_vae=text_vae,
    )
    fps, sr = float(windows.fps), int(windows.sample_rate)
    c, h, w = raw["audio"].shape[1:]
    patch = 2
    if h % patch or w % patch:
        raise ConfigError(f"audio latents {(c, h, w)} do not split into {patch}x{patch} patches")
    geo0 = StreamGeometry(
        gesture_tokens=raw["gesture"].shape[1],
        gesture_dim=raw["gesture"].shape[2],
        audio_latent=(c, h, w),
        audio_patch=patch,
        text_tokens=raw["text"].shape[1],
        text_dim=raw["text"].shape[2],
        gesture_token_seconds=tok.downsample_factor / fps,
        # the VAE halves time twice: one latent frame is 4 mel hops
        audio_row_seconds=4 * MEL.hop_length / MEL.sample_rate * patch,
        stats={},
    )
    tokens = {
        "gesture": raw["gesture"],
        "text": raw["text"],
        "audio": geo0.audio_to_tokens(raw["audio"]),
    }
    geo = StreamGeometry(**{**geo0.__dict__, "stats": stream_stats(tokens)})
    tokens = {k: geo.normalize(k, v).float() for k, v in tokens.items()}
    dataset = StreamWindows(tokens)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    mmdit = build_mmdit(cfg, geo)
    objective = OmnigesObjective(mmdit, geo, make_loss(cfg))
    spec = {
        "parts": list(cfg.model.parts),
        "pose_length": cfg.data.pose_length,
        "fps": fps,
        "sample_rate": sr,
        "tasks": list(cfg.loss.tasks),
        "text_predicts_x1": cfg.model.text_predicts_x1,
        "sample": to_dict(cfg.sample),
    }
    pipeline = OmnigesPipeline(
        mmdit=mmdit,
        geometry=geo,
        tokenizer=tok,
        normalizer=normalizer,
        codec=codec,
        text_vae=text_vae,
        spec=spec,
    )
    run_state: dict = {}
    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(run_state["run"], folder),
        progress=progress,
    )
    run = OmnigesRun(trainer, objective, pipeline, cfg)
    run_state["run"] = run
    if resume is not None:
        trainer.load_checkpoint(resume)
    logger.info(
        "omniges: %d parameters, %d windows (gesture %s, audio %s, text %s tokens)",
        mmdit.num_parameters(),
        len(dataset),
        tuple(tokens["gesture"].shape[1:]),
        tuple(tokens["audio"].shape[1:]),
        tuple(tokens["text"].shape[1:]),
    )
    return run


def export(run: OmnigesRun, folder: Path) -> None:
    """Write the bundle ``folder/omniges/``."""
    pipe = run.pipeline
    pipe.mmdit = run.trainer.raw_model.net.mmdit  # type: ignore[union-attr]
    pipe.save_pretrained(folder / EXPORT, ema_mmdit=averaged_copy(run.trainer))


def run(
    cfg: OmnigesRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/omniges/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))

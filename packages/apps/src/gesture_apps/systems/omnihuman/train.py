"""``gesture train omnihuman``: the omni-conditions video DiT, trained in stages.

OmniHuman-1's training strategy (Lin et al. 2025, arXiv:2502.01061, section 3.2): all
conditions are trained in one model, stronger conditions with lower ratios, in stages that add
conditions from weak to strong (text + reference, then audio, then pose). The stage manager is
:class:`flow_backbones.ConditionSchedule`: the ``stages:`` section gives each stage's steps and
per-condition keep probabilities, the trainer's step picks the stage, and the keep masks are a
pure function of (seed, step), so a run resumed inside any stage continues exactly. Dropping a
strong condition keeps the weaker ones (every condition is drawn on its own), which is the
paper's "weaker-condition data kept" rule.

The frozen VAE (``--vae``: a ``gesture train omnihuman-vae`` run, or a Wan2.1 ``vae/`` folder)
and text encoder run once over the data (:mod:`.data`); the run folder gets
``checkpoints/step_*/`` and the bundle ``omnihuman/`` that ``gesture generate`` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow_backbones import ConditionSchedule, FlowMatchingLoss
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import Trainer, TrainResult, to_dict
from gesture_apps.systems.omnihuman.conditions import audio_feature_dim, text_dim
from gesture_apps.systems.omnihuman.config import EXPORT, OmniHumanRecipeConfig
from gesture_apps.systems.omnihuman.data import Segments, build_segments, load_clips
from gesture_apps.systems.omnihuman.model import (
    CONDITIONS,
    DiTBackbone,
    OmniHumanConfig,
    OmniHumanModel,
)
from gesture_apps.systems.omnihuman.pipeline import OmniHumanPipeline, load_vae

logger = logging.getLogger(__name__)


class OmniHumanObjective(nn.Module):
    """Flow-matching loss of one batch of segments under the stage schedule.

    ``forward(batch, step) -> (loss, metrics)``: the keep masks of ``step`` (plus the extra
    classifier-free-guidance drop of text and audio) switch conditions off per row; the
    metrics report the stage and the share of rows that kept each condition."""

    def __init__(self, model: OmniHumanModel, schedule: ConditionSchedule, cfg) -> None:
        super().__init__()
        self.model, self.schedule = model, schedule
        self.cfg_drop = cfg.cfg_drop
        self.flow = FlowMatchingLoss(
            t_sampler="logit_normal",
            shift=cfg.shift,
            logit_mean=cfg.logit_mean,
            logit_std=cfg.logit_std,
        )

    def conditions(self, batch: dict[str, Tensor], step: int) -> dict[str, Any]:
        B, dev = batch["latents"].shape[0], batch["latents"].device
        use = self.schedule.sample(step, B, device=dev)
        use["motion"] = use["motion"] & batch["has_motion"]
        if self.cfg_drop:
            for name in ("text", "audio"):
                use[name] = use[name] & (torch.rand(B, device=dev) >= self.cfg_drop)
        return {
            "reference": batch["reference"],
            "motion": batch["motion"],
            "audio": batch["audio"],
            "audio_motion": batch["audio_motion"],
            "keypoints": batch["keypoints"],
            "confidence": batch["confidence"],
            "text": batch["text"],
            "text_mask": batch["text_mask"],
            "use": use,
        }

    def forward(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Any]]:
        cond = self.conditions(batch, step)
        out = self.flow(self.model, batch["latents"], cond)
        stage, _ = self.schedule.stage_at(step)
        metrics: dict[str, Any] = {"stage": float(stage)}
        for name in CONDITIONS:
            metrics[f"keep_{name}"] = cond["use"][name].float().mean().detach()
        return out.loss, metrics


@dataclass
class OmniHumanRun:
    trainer: Trainer
    objective: OmniHumanObjective
    pipeline: OmniHumanPipeline
    segments: Segments
    config: OmniHumanRecipeConfig


def build_model(cfg: OmniHumanRecipeConfig, latent_channels: int, keypoints: int) -> OmniHumanModel:
    """The backbone named by ``model:`` with its condition modules (random weights, or the
    Wan2.1 transformer read from ``model.wan_path``)."""
    m, d = cfg.model, cfg.data
    config = OmniHumanConfig(
        backbone=m.backbone,
        latent_channels=latent_channels,
        feat_dim=audio_feature_dim(d.audio_features),
        audio_kind=d.audio_features,
        audio_dim=m.audio_dim,
        audio_context=m.audio_context,
        keypoints=keypoints,
        latent_size=d.size // 8,
        heatmap_size=m.heatmap_size,
        pose_channels=m.pose_channels,
        text_dim=text_dim(m.text_encoder),
        text_encoder=m.text_encoder,
        text_tokens=m.text_tokens,
    )
    if m.backbone == "dit":
        backbone = DiTBackbone.build(
            latent_channels=latent_channels,
            extra_channels=config.extra_channels,
            text_dim=config.text_dim,
            audio_dim=m.audio_dim,
            size=m.size,
            patch_size=m.patch_size,
            **m.dit_overrides(),
        )
    else:
        from gesture_apps.systems.omnihuman.wan import WanBackbone

        kw = dict(extra_channels=config.extra_channels, audio_dim=m.audio_dim)
        if m.wan_path:
            backbone = WanBackbone.from_pretrained(m.wan_path, text_dim=config.text_dim, **kw)
        else:
            backbone = WanBackbone.tiny(
                latent_channels=latent_channels, text_dim=config.text_dim, **kw
            )
        if backbone.latent_channels != latent_channels:
            raise ConfigError(
                f"model.wan_path: the transformer takes {backbone.latent_channels} latent "
                f"channels, the VAE gives {latent_channels}"
            )
    return OmniHumanModel(backbone, config)


def prepare(
    cfg: OmniHumanRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> OmniHumanRun:
    """Load the frozen VAE, encode the segments, build model, schedule and trainer."""
    if not cfg.vae:
        raise ConfigError("vae: pass the folder of a trained video VAE (--vae DIR)")
    vae = load_vae(cfg.vae)
    clips = load_clips(cfg.data)
    if not clips:
        raise ConfigError(f"data: {cfg.data.source} holds no clips")
    size = clips[0].frames.shape[1:3]
    if tuple(size) != (cfg.data.size, cfg.data.size):
        raise ConfigError(f"data.size: {cfg.data.size}, but the clips are {size[0]}x{size[1]}")
    segments = build_segments(
        clips,
        vae,
        cfg.data,
        text_encoder=cfg.model.text_encoder,
        text_tokens=cfg.model.text_tokens,
    )
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg, vae.latent_channels, clips[0].keypoints.shape[1])
    schedule = cfg.schedule()
    objective = OmniHumanObjective(model, schedule, cfg.loss)
    spec = {
        "fps": float(cfg.data.fps),
        "size": int(cfg.data.size),
        "segment_frames": int(cfg.data.segment_frames),
        "sample": to_dict(cfg.sample),
        "stages": [to_dict(s) for s in cfg.stages],
    }
    pipeline = OmniHumanPipeline(vae=vae, model=model, spec=spec)
    run_state: dict = {}

    def loss_fn(module: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]:
        return module(batch, run_state["run"].trainer.step)

    trainer = Trainer(
        model=objective,
        dataset=segments.dataset,
        loss_fn=loss_fn,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(run_state["run"], folder),
        progress=progress,
    )
    run = run_state["run"] = OmniHumanRun(trainer, objective, pipeline, segments, cfg)
    if resume is not None:
        trainer.load_checkpoint(resume)
    n = sum(p.numel() for p in model.parameters())
    logger.info(
        "omnihuman: %d parameters, %d segments of %d frames, stages %s",
        n,
        len(segments.dataset),
        cfg.data.segment_frames,
        [f"{s.name}:{s.steps}" for s in cfg.stages],
    )
    return run


def export(run: OmniHumanRun, folder: Path) -> None:
    """Write the bundle ``folder/omnihuman/`` (live weights, and the EMA weights if any)."""
    live = run.trainer.raw_model.model  # type: ignore[union-attr]
    averaged = run.trainer.unsharded_copy(ema=True) if run.trainer.ema is not None else None
    run.pipeline.model = live
    run.pipeline.save_pretrained(
        folder / EXPORT, ema_model=averaged.model if averaged is not None else None
    )


def run(
    cfg: OmniHumanRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/omnihuman/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))

"""``gesture train omnihuman-vae``: OmniHuman's video VAE (Wan2.1's 3D causal VAE).

Wan (Wan Team, 2025, https://arxiv.org/abs/2503.20314) trains Wan-VAE with L1 reconstruction, a
small KL term and perceptual / adversarial terms; here the perceptual part is replaced by an
L1 on spatial and temporal finite differences (edges and motion), which costs nothing and keeps
the thin limbs of rendered figures sharp, with no pretrained network to load. Training windows
are every ``1 + 4k``-frame window of every clip (``data.frames`` long, ``data.stride`` apart),
visited in the shared :class:`~gesture_apps.runtime.Trainer`'s shuffled order, so a run's
windows are random but resume exactly.

The run folder gets ``checkpoints/step_*/`` (each with its ``video_vae/``) and the export
``video_vae/`` (:meth:`VideoVAE.save_pretrained`), whose ``latents_mean`` / ``latents_std`` are
measured per channel on the posterior means of the training windows (a VAE fine-tuned from
``model.pretrained`` keeps the loaded statistics instead: a pretrained video DiT was trained on
latents normalised by exactly those).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError
from gesture_apps.runtime import TrainConfig, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.systems.omnihuman.vae import EXPORT, VideoVAE

logger = logging.getLogger(__name__)


@dataclass
class VideoVAEModelConfig:
    """The ``model:`` section: ``tiny`` (``base_dim`` x [1, 2, 2, 2], ``z_dim`` channels) or
    ``wan`` (Wan2.1's architecture, 16 channels); ``pretrained``: a local Wan2.1 ``vae/``
    folder (or an export) to fine-tune instead of training from scratch."""

    size: Literal["tiny", "wan"] = "tiny"
    base_dim: int = 16  # tiny only
    z_dim: int = 8  # tiny only
    pretrained: str | None = None


@dataclass
class VideoVAEDataConfig:
    """The ``data:`` section: rendered clips of the synthetic corpus or a video folder."""

    source: str = "synthetic"  # or folder:PATH (gesture_data.video.load_video_folder)
    num_clips: int = 8  # synthetic corpus
    seconds: float = 4.0
    size: int = 64  # synthetic frames are size x size
    fps: float = 12.5
    seed: int = 0
    frames: int = 17  # window length, 1 + 4k
    stride: int = 1  # frames between window starts
    stat_windows: int = 32  # training windows whose posterior means set the latent statistics

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if kind not in ("synthetic", "folder") or (kind == "folder" and ":" not in self.source):
            raise ValueError(
                f"source: expected 'synthetic' or 'folder:PATH', found {self.source!r}"
            )
        if self.frames < 1 or (self.frames - 1) % VideoVAE.temporal_ratio:
            raise ValueError(f"frames: expected 1 + 4k (5, 9, 13, 17, ...), found {self.frames}")
        if (
            min(self.num_clips, self.stride, self.stat_windows) < 1
            or min(self.seconds, self.fps) <= 0
        ):
            raise ValueError(
                "num_clips, stride and stat_windows >= 1, seconds and fps > 0 required"
            )
        if self.size < 8 or self.size % VideoVAE.spatial_ratio:
            raise ValueError(f"size: expected a positive multiple of 8, found {self.size}")


@dataclass
class VideoVAELossConfig:
    kl_weight: float = 1e-4  # per latent element, against the per-pixel L1
    edge_weight: float = 0.5  # L1 of spatial and temporal finite differences


@dataclass
class VideoVAETrainConfig(TrainConfig):
    """The ``train:`` section; no weight EMA by default (the latent statistics are measured on
    the live VAE at export)."""

    ema_decay: float | None = None


@dataclass
class VideoVAERecipeConfig:
    recipe: Literal["omnihuman-vae"] = "omnihuman-vae"
    model: VideoVAEModelConfig = field(default_factory=VideoVAEModelConfig)
    data: VideoVAEDataConfig = field(default_factory=VideoVAEDataConfig)
    loss: VideoVAELossConfig = field(default_factory=VideoVAELossConfig)
    train: VideoVAETrainConfig = field(default_factory=VideoVAETrainConfig)


def load_frames(cfg: VideoVAEDataConfig) -> list[np.ndarray]:
    """Every clip's frames ``(T_i, H, W, 3)`` uint8 (the VAE needs no audio or keypoints)."""
    # gesture_data.video renders and reads video: imported here, as the data source is chosen
    from gesture_data import video

    if cfg.source == "synthetic":
        clips = video.synthetic_video_corpus(
            cfg.num_clips, cfg.seconds, size=cfg.size, fps=cfg.fps, seed=cfg.seed
        )
    else:
        root = Path(cfg.source.split(":", 1)[1]).expanduser()
        clips = video.load_video_folder(root)
        if not clips:
            raise ConfigError(f"{root}: no video clips found")
    return [np.asarray(c.frames) for c in clips]


class VideoWindows(Dataset):
    """Item ``i``: the ``i``-th ``(clip, start)`` window as ``(3, frames, H, W)`` float32 in
    [-1, 1] (a pure function of i). Clips shorter than a window are skipped."""

    def __init__(self, clips: list[np.ndarray], frames: int, stride: int = 1):
        shapes = set()
        for i, c in enumerate(clips):
            if c.ndim != 4 or c.shape[3] != 3 or c.dtype != np.uint8:
                raise ConfigError(
                    f"clip {i}: expected (T, H, W, 3) uint8 frames, found {c.shape} {c.dtype}"
                )
            shapes.add(c.shape[1:3])
        if len(shapes) > 1:
            raise ConfigError(f"clips differ in frame size {sorted(shapes)}: resize them to one")
        (h, w) = next(iter(shapes), (0, 0))
        if h % VideoVAE.spatial_ratio or w % VideoVAE.spatial_ratio:
            raise ConfigError(f"frames are {h} x {w}, expected multiples of 8 (the VAE's 8x)")
        self.clips = clips
        self.frames = frames
        self.index = [
            (i, s) for i, c in enumerate(clips) for s in range(0, len(c) - frames + 1, stride)
        ]
        if not self.index:
            longest = max((len(c) for c in clips), default=0)
            raise ConfigError(
                f"data.frames: every clip is shorter than one window ({frames} frames), "
                f"longest {longest}"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Tensor:
        clip, start = self.index[i]
        window = torch.from_numpy(self.clips[clip][start : start + self.frames])
        return window.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, T, H, W)


def edge_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean L1 between the finite differences of two videos ``(B, 3, T, H, W)`` along H, W and
    (when T > 1) T: edges and motion, which a per-pixel L1 alone lets blur."""
    terms = [(a.diff(dim=d) - b.diff(dim=d)).abs().mean() for d in (3, 4)]
    if a.shape[2] > 1:
        terms.append((a.diff(dim=2) - b.diff(dim=2)).abs().mean())
    return torch.stack(terms).mean()


class VideoVAEObjective(nn.Module):
    """L1 + ``kl_weight`` KL + ``edge_weight`` edge L1 of one batch ``(B, 3, T, H, W)``,
    decoding a posterior draw (the reparameterisation trick)."""

    def __init__(self, vae: VideoVAE, loss: VideoVAELossConfig):
        super().__init__()
        self.vae = vae
        self.kl_weight, self.edge_weight = loss.kl_weight, loss.edge_weight

    def forward(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        dist = self.vae.vae.encode(video).latent_dist
        rec = self.vae.vae.decode(dist.sample()).sample
        l1 = (rec - video).abs().mean()
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        edge = edge_l1(rec, video)
        loss = l1 + self.kl_weight * kl + self.edge_weight * edge
        return loss, {"l1": l1.detach(), "kl": kl.detach(), "edge": edge.detach()}


def build_vae(cfg: VideoVAEModelConfig, seed: int) -> VideoVAE:
    if cfg.pretrained:
        return VideoVAE.from_pretrained(Path(cfg.pretrained).expanduser()).train()
    if cfg.size == "wan":
        return VideoVAE.wan(seed)
    return VideoVAE.tiny(seed, base_dim=cfg.base_dim, z_dim=cfg.z_dim)


@dataclass
class VideoVAERun:
    trainer: Trainer
    objective: VideoVAEObjective
    stat_windows: Tensor  # (n, 3, T, H, W): the windows whose latents set the statistics
    config: VideoVAERecipeConfig


def prepare(
    cfg: VideoVAERecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    clips: list[np.ndarray] | None = None,
) -> VideoVAERun:
    """Read the clips (or take ``clips``), build VAE and trainer (and restore ``resume``);
    writes nothing yet."""
    clips = clips if clips is not None else load_frames(cfg.data)
    dataset = VideoWindows(clips, cfg.data.frames, cfg.data.stride)
    # a fixed, evenly spread subset: the same on every rank and after a resume
    pick = np.unique(
        np.linspace(0, len(dataset) - 1, min(cfg.data.stat_windows, len(dataset))).round()
    )
    stat_windows = torch.stack([dataset[int(i)] for i in pick])
    vae = build_vae(cfg.model, cfg.train.seed)
    if not cfg.model.pretrained:
        with torch.no_grad():
            # start the decoder at the corpus' mean colour: mostly background, which Adam
            # would otherwise spend its first hundred steps walking an output bias towards
            mean_rgb = stat_windows.mean(dim=(0, 2, 3, 4))
            vae.vae.decoder.conv_out.bias.copy_(mean_rgb.to(vae.vae.decoder.conv_out.bias))
    objective = VideoVAEObjective(vae, cfg.loss)
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
    run = run_state["run"] = VideoVAERun(trainer, objective, stat_windows, cfg)
    if resume is not None:
        trainer.load_checkpoint(resume)
    n_params = sum(p.numel() for p in objective.parameters())
    logger.info("omnihuman-vae: %d parameters, %d windows", n_params, len(dataset))
    return run


def exported_vae(run: VideoVAERun) -> VideoVAE:
    """A CPU copy of the trained VAE whose ``latents_mean`` / ``latents_std`` are the
    per-channel mean / std of the posterior means of the statistics windows (unless it was
    fine-tuned from a pretrained VAE, whose statistics it keeps)."""
    live: VideoVAE = run.trainer.raw_model.vae  # type: ignore[assignment]
    vae = copy.deepcopy(live).eval()  # measured on the training device, then moved
    if not run.config.model.pretrained:
        device = next(vae.parameters()).device
        with torch.no_grad():
            mus = [vae.vae.encode(w.to(device)).latent_dist.mean for w in run.stat_windows.split(4)]
        mu = torch.cat(mus).transpose(0, 1).flatten(1).double()  # (z, n * t * h * w)
        std = mu.std(dim=1).clamp_min(1e-6)
        vae.vae.register_to_config(latents_mean=mu.mean(dim=1).tolist(), latents_std=std.tolist())
    return vae.cpu()


def export(run: VideoVAERun, folder: Path) -> None:
    """Write ``folder/video_vae/``."""
    exported_vae(run).save_pretrained(folder / EXPORT)


def run(
    cfg: VideoVAERecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and write the export ``out_dir/video_vae/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))

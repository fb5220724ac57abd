"""OmniHuman training data: rendered video with speech, keypoints and captions, as segments.

A clip (``gesture_data.video.VideoClip``: the synthetic corpus rendered to small frames by
default, BEAT2 takes rendered the same way, or a user's folder of mp4 + wav + keypoint json) is
cut into segments of ``1 + 4k`` frames. Each segment carries what OmniHuman trains on: the VAE
latents of its frames, the latents of the five frames before it (motion frames; absent for a
segment that starts a clip), the reference image's latent, per-frame speech features, keypoints
(heatmaps are drawn on the fly, on the training device) and the caption's token features. The
frozen VAE and text encoder run once, here, not per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError
from gesture_apps.systems.omnihuman.conditions import (
    audio_features,
    encode_text,
    latent_frames,
)
from gesture_apps.systems.omnihuman.model import MOTION_FRAMES

logger = logging.getLogger(__name__)


@dataclass
class VideoDataConfig:
    """The ``data:`` section: ``synthetic``, ``beat2:PATH`` or ``folder:PATH`` clips."""

    source: str = "synthetic"
    num_clips: int = 8  # synthetic corpus
    seconds: float = 4.0
    seed: int = 0
    split: str | None = "train"  # BEAT2
    speakers: tuple[int, ...] | None = None
    max_clips: int | None = None  # BEAT2 / folder: the first N clips
    size: int = 64  # rendered frame side (synthetic, BEAT2)
    fps: float = 12.5
    segment_frames: int = 17  # 1 + 4k video frames per generated segment
    stride: int = 4  # video frames between training segments
    audio_features: Literal["mel", "whisper"] = "mel"

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if kind not in ("synthetic", "beat2", "folder") or (
            kind != "synthetic" and ":" not in self.source
        ):
            raise ValueError(
                f"source: expected 'synthetic', 'beat2:PATH' or 'folder:PATH', found "
                f"{self.source!r}"
            )
        latent_frames(self.segment_frames)  # 1 + 4k
        if self.stride < 1 or self.size % 16 or self.fps <= 0:
            raise ValueError("stride >= 1, size a multiple of 16 and fps > 0 required")


def load_clips(cfg: VideoDataConfig):
    """The ``VideoClip`` list ``cfg`` names (errors name the folder or file)."""
    from gesture_data import video

    if cfg.source == "synthetic":
        return video.synthetic_video_corpus(
            cfg.num_clips, cfg.seconds, size=cfg.size, fps=cfg.fps, seed=cfg.seed
        )
    kind, path = cfg.source.split(":", 1)
    root = Path(path).expanduser()
    if kind == "folder":
        clips = video.load_video_folder(root)
    else:
        from gesture_data.datasets.beat2 import list_clips, load_clip

        ids = list_clips(root, cfg.split, cfg.speakers)
        if not ids:
            raise ConfigError(f"{root}: no BEAT2 clips in split {cfg.split!r}")
        ids = ids[: cfg.max_clips] if cfg.max_clips else ids
        clips = [
            video.render_video_clip(load_clip(root, i), size=cfg.size, fps=cfg.fps) for i in ids
        ]
    return clips[: cfg.max_clips] if cfg.max_clips else clips


def to_video_tensor(frames: np.ndarray) -> Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float in ``[-1, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


def from_video_tensor(video: Tensor) -> np.ndarray:
    """``(3, T, H, W)`` in ``[-1, 1]`` -> ``(T, H, W, 3)`` uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def encode_frames(vae, frames: list[np.ndarray], batch: int = 8) -> Tensor:
    """VAE latents ``(N, C, n, h, w)`` of ``N`` equal-length frame stacks ``(T, H, W, 3)``."""
    dev = next(vae.parameters()).device
    out = []
    for s in range(0, len(frames), batch):
        x = torch.stack([to_video_tensor(f) for f in frames[s : s + batch]]).to(dev)
        out.append(vae.encode(x).float().cpu())
    return torch.cat(out)


class SegmentDataset(Dataset):
    """Item ``i``: a dict of one training segment's tensors (a pure function of ``i``)."""

    def __init__(self, items: dict[str, Tensor], clip_of: Tensor):
        self.items, self.clip_of = items, clip_of

    def __len__(self) -> int:
        return len(self.clip_of)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.items.items()}


@dataclass
class Segments:
    """Every segment of a clip list, ready for training or evaluation."""

    dataset: SegmentDataset
    frames: list[np.ndarray]  # per segment (L, H, W, 3) uint8, the ground truth
    clip_ids: list[str]
    starts: list[int]


def segment_starts(num_frames: int, length: int, stride: int) -> list[int]:
    return list(range(0, num_frames - length + 1, stride))


def build_segments(
    clips,
    vae,
    cfg: VideoDataConfig,
    *,
    text_encoder: str = "minilm",
    text_tokens: int = 32,
    starts: dict[str, list[int]] | None = None,
) -> Segments:
    """Cut ``clips`` into segments and encode them (VAE latents, audio features, text).

    ``starts`` (clip id -> first frames) overrides the regular stride (evaluation picks its
    own segments)."""
    L = cfg.segment_frames
    texts, masks = encode_text(
        [c.caption for c in clips], encoder=text_encoder, max_tokens=text_tokens
    )
    refs = encode_frames(vae, [c.reference[None] for c in clips])  # (N, C, 1, h, w)
    seg_frames, motion_frames, rows = [], [], []
    for ci, clip in enumerate(clips):
        T = clip.frames.shape[0]
        feats = audio_features(clip.audio, clip.sample_rate, clip.fps, T, kind=cfg.audio_features)
        picks = starts.get(clip.clip_id) if starts is not None else None
        for s in picks if picks is not None else segment_starts(T, L, cfg.stride):
            if s + L > T or s < 0:
                raise ConfigError(f"{clip.clip_id}: segment {s}..{s + L} outside {T} frames")
            seg_frames.append(clip.frames[s : s + L])
            has_motion = s >= MOTION_FRAMES
            motion_frames.append(clip.frames[s - MOTION_FRAMES : s] if has_motion else None)
            am = (
                feats[s - MOTION_FRAMES : s] if has_motion else np.zeros_like(feats[:MOTION_FRAMES])
            )
            rows.append(
                dict(
                    clip=ci,
                    start=s,
                    has_motion=has_motion,
                    audio=feats[s : s + L],
                    audio_motion=am,
                    keypoints=clip.keypoints[s : s + L],
                    confidence=clip.confidence[s : s + L],
                )
            )
        if picks is None and T < L:
            logger.warning("%s: %d frames, shorter than one segment (%d)", clip.clip_id, T, L)
    if not rows:
        raise ConfigError(
            f"data: no segment of {L} frames in {len(clips)} clip(s) (use longer clips or a "
            "shorter data.segment_frames)"
        )
    latents = encode_frames(vae, seg_frames)
    present = [m for m in motion_frames if m is not None]
    motion = torch.zeros(
        len(rows), latents.shape[1], latent_frames(MOTION_FRAMES), *latents.shape[3:]
    )
    if present:
        enc = encode_frames(vae, present)
        idx = [i for i, m in enumerate(motion_frames) if m is not None]
        motion[idx] = enc
    clip_of = torch.tensor([r["clip"] for r in rows])
    items = {
        "latents": latents,
        "motion": motion,
        "has_motion": torch.tensor([r["has_motion"] for r in rows]),
        "reference": refs[clip_of],
        "audio": torch.from_numpy(np.stack([r["audio"] for r in rows])),
        "audio_motion": torch.from_numpy(np.stack([r["audio_motion"] for r in rows])),
        "keypoints": torch.from_numpy(np.stack([r["keypoints"] for r in rows])).float(),
        "confidence": torch.from_numpy(np.stack([r["confidence"] for r in rows])).float(),
        "text": texts[clip_of],
        "text_mask": masks[clip_of],
    }
    return Segments(
        SegmentDataset(items, clip_of),
        seg_frames,
        [clips[r["clip"]].clip_id for r in rows],
        [r["start"] for r in rows],
    )

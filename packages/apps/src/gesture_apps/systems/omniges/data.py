"""Omniges training data: every window as gesture, audio and text latents of frozen codecs.

A window of ``pose_length`` frames gives the three streams of one training row: the motion
through the frozen multi-part tokenizer, its speech (16 kHz) through the audio VAE, and its
transcript (the words spoken in it, in order) through the text VAE. They are encoded once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gesture_apps.data.latents import encode_windows
from gesture_apps.data.windows import DataConfig, PartWindows

logger = logging.getLogger(__name__)


def load_wave_windows(cfg: DataConfig):
    """Windows whose ``audio`` is the waveform ``(L_a, 1)``: (WindowDataset, vocabulary)."""
    from pathlib import Path

    from gesture_data.datasets.windows import beat2_windows, synthetic_windows

    common = dict(pose_length=cfg.pose_length, stride=cfg.stride, audio_rep="wave")
    if cfg.source == "synthetic":
        return synthetic_windows(
            cfg.num_clips, cfg.seconds, cfg.seed, languages=cfg.languages, **common
        )
    root = Path(cfg.source.split(":", 1)[1]).expanduser()
    return beat2_windows(root, split=cfg.split, speakers=cfg.speakers, **common)


def transcript(word_ids: np.ndarray, vocab) -> str:
    """The words of a window's per-frame indices ``(L,)``, in order (0 = silence)."""
    ids = np.asarray(word_ids)
    if ids.size == 0:
        return ""
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return " ".join(vocab.itos[int(i)] for i in ids[starts] if i != 0)


@dataclass
class WindowSources:
    """The raw side of every window: waveform ``(S,)`` and transcript, for evaluation."""

    waves: list[np.ndarray]
    texts: list[str]
    clip: np.ndarray  # (N,) clip index of every window


def window_sources(windows, vocab) -> WindowSources:
    waves, texts, clip = [], [], []
    for i in range(len(windows)):
        item = windows[i]
        waves.append(item["audio"][:, 0].numpy())
        texts.append(transcript(item["words"].numpy(), vocab))
        clip.append(int(item["clip"]))
    return WindowSources(waves, texts, np.asarray(clip))


@torch.no_grad()
def encode_streams(
    windows, sources: WindowSources, *, tokenizer, normalizer, parts, codec, text_vae
) -> dict[str, Tensor]:
    """``{"gesture": (N, Ng, Dg), "audio": (N, C, H, W), "text": (N, n, dv)}`` raw latents."""
    gesture = encode_windows(tokenizer, PartWindows(windows, list(parts), normalizer))
    audio = []
    for s in range(0, len(sources.waves), 16):
        batch = torch.from_numpy(np.stack(sources.waves[s : s + 16]))
        audio.append(codec.encode(batch))
    text = []
    for s in range(0, len(sources.texts), 64):
        text.append(text_vae.encode(sources.texts[s : s + 64]))
    return {"gesture": gesture, "audio": torch.cat(audio), "text": torch.cat(text)}


def stream_stats(latents: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """One scalar (mean, std) per stream over all training tokens and channels."""
    out = {}
    for k, v in latents.items():
        v = v.double()
        out[k] = (float(v.mean()), max(float(v.std()), 1e-6))
    return out


class StreamWindows(Dataset):
    """Item ``{"gesture": (Ng, Dg), "text": (n, dv), "audio": (La, p*p*C), "index": i}``,
    standardised tokens of the window ``i``."""

    def __init__(self, tokens: dict[str, Tensor]):
        n = {len(v) for v in tokens.values()}
        if len(n) != 1:
            raise ValueError(f"streams have different window counts: {n}")
        self.tokens = tokens
        self.n = n.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.tokens.items()}, "index": i}

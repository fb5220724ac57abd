"""GestureLSM's trained networks: audio+word condition encoder and spatial-temporal denoiser."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow_backbones import SpatialTemporalDenoiser
from gesture_apps.errors import ConfigError
from gesture_apps.systems.gesturelsm.config import AUDIO_STRIDES, SIZES, LSMRecipeConfig
from motion_tokenizers import MultiPartTokenizer


class AudioWordEncoder(nn.Module):
    """``audio (B, L_a, 2)`` at 16 kHz + ``words (B, L)`` -> ``(B, L / factor, cond_dim)``.

    Strided convolutions (strides 5, 6, 6, 3) bring the audio to ~30 steps per second; the
    result is cut or padded (repeating the last step) to the ``L`` motion frames, concatenated
    with the projected word embeddings, fused to ``cond_dim`` and average-pooled by the
    tokenizer's downsampling ``factor`` to the latent frame rate."""

    def __init__(
        self,
        *,
        vocab_size: int,
        cond_dim: int,
        factor: int,
        audio_in: int = 2,
        audio_channels: tuple[int, ...] = (64, 64, 128, 256),
        audio_dim: int = 256,
        word_dim: int = 256,
    ) -> None:
        super().__init__()
        self.factor = factor
        layers: list[nn.Module] = []
        c_in = audio_in
        for c, s in zip(audio_channels, AUDIO_STRIDES, strict=True):
            layers += [nn.Conv1d(c_in, c, 15, stride=s, padding=7), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv1d(c_in, audio_dim, 3, padding=1))
        self.audio = nn.Sequential(*layers)
        self.words = nn.Embedding(vocab_size, word_dim)
        self.word_proj = nn.Linear(word_dim, audio_dim)
        self.fuse = nn.Linear(2 * audio_dim, cond_dim)

    def forward(self, audio: Tensor, words: Tensor) -> Tensor:
        return self.combine(self.encode_audio(audio), words)

    def encode_audio(self, audio: Tensor) -> Tensor:
        """``audio (B, L_a, 2)`` -> the convolution stack's steps ``(B, ~L, audio_dim)``."""
        return self.audio(audio.transpose(1, 2)).transpose(1, 2)

    def audio_span(self, step: int) -> tuple[int, int]:
        """The audio samples ``[lo, hi]`` (padding included) that step ``step`` of
        :meth:`encode_audio` reads."""
        lo = hi = step
        for m in reversed(self.audio):
            if isinstance(m, nn.Conv1d):
                s, p, k = m.stride[0], m.padding[0], m.kernel_size[0]
                lo, hi = s * lo - p, s * hi - p + k - 1
        return lo, hi

    def combine(self, a: Tensor, words: Tensor) -> Tensor:
        """Audio steps ``(B, ~L, audio_dim)`` + ``words (B, L)`` -> ``(B, L / factor,
        cond_dim)``."""
        L = words.shape[1]
        if a.shape[1] >= L:
            a = a[:, :L]
        else:
            a = torch.cat([a, a[:, -1:].expand(-1, L - a.shape[1], -1)], dim=1)
        w = self.word_proj(self.words(words))
        h = self.fuse(torch.cat([a, w], dim=-1))  # (B, L, cond_dim)
        return F.avg_pool1d(h.transpose(1, 2), self.factor).transpose(1, 2)


class LSMGenerator(nn.Module):
    """The trained part of GestureLSM: condition encoder + spatial-temporal denoiser.

    ``spec`` is the saved config (the bundle's ``generator`` component): its ``denoiser`` entry
    holds every constructor argument, so the network is rebuilt from it alone."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        self.encoder = AudioWordEncoder(
            vocab_size=spec["vocab_size"],
            cond_dim=spec["denoiser"]["cond_dim"],
            factor=spec["factor"],
            audio_channels=tuple(spec["audio_channels"]),
            audio_dim=spec["audio_dim"],
            word_dim=spec["word_dim"],
        )
        self.denoiser = SpatialTemporalDenoiser(**denoiser_config(spec))

    @property
    def seed_frames(self) -> int:
        return self.denoiser.seed_frames


def denoiser_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The denoiser's full constructor arguments; a first-release config (version 1) stored
    only the arguments that differ from the preset it names in ``denoiser_size``."""
    if spec.get("version", 1) >= 2:
        return dict(spec["denoiser"])
    size = "tiny" if spec.get("denoiser_size") == "tiny" else "gesturelsm"
    return SpatialTemporalDenoiser.preset_config(size, **spec["denoiser"])


def build_spec(cfg: LSMRecipeConfig, tokenizer: MultiPartTokenizer, vocab_size: int) -> dict:
    """Everything needed to rebuild :class:`LSMGenerator` and run it (the saved config)."""
    m = cfg.model
    size = SIZES[m.size]
    dims = set(tokenizer.latent_dims.values())
    if len(dims) != 1:
        raise ConfigError(f"model.parts: tokenizer parts have different latent sizes {dims}")
    factor = tokenizer.downsample_factor
    if cfg.data.pose_length % factor:
        raise ConfigError(
            f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
            f"downsampling factor {factor}"
        )
    n_lat = cfg.data.pose_length // factor
    keys = ("latent_dim", "ff_size", "num_layers", "num_heads", "cross_layers", "seed_frames")
    overrides = {k: getattr(m, k) for k in (*keys, "dropout") if getattr(m, k) is not None}
    den = SpatialTemporalDenoiser.preset_config(
        m.size,
        num_parts=len(m.parts),
        part_dim=dims.pop(),
        cond_dim=size["cond"],
        max_cond_len=n_lat,
        **overrides,
    )
    if den["seed_frames"] >= n_lat:
        raise ConfigError(
            f"model.seed_frames: {den['seed_frames']} must be fewer than the {n_lat} latent "
            "frames of a window"
        )
    return {
        "version": 2,
        "parts": list(m.parts),
        "pose_length": cfg.data.pose_length,
        "factor": factor,
        "vocab_size": vocab_size,
        "audio_channels": list(m.audio_channels or size["audio_channels"]),
        "audio_dim": m.audio_dim or size["audio_dim"],
        "word_dim": m.word_dim or size["word_dim"],
        "denoiser": den,
        "sample": asdict(cfg.sample),
    }

"""OmniHuman's omni-condition encoders: audio tokens per latent frame, the pose guider, text.

Lin et al. 2025, "OmniHuman-1: Rethinking the Scaling-Up of One-Stage Conditioned Human
Animation Models" (arXiv:2502.01061), section 3.1:

* audio: speech features per video frame, each concatenated with its neighbours' (temporal
  context), an MLP, then injected into the backbone by cross-attention, every latent frame
  attending to the tokens of its own video frames only (``frame_tokens``);
* pose: a keypoint-heatmap sequence through a small convolutional pose guider, concatenated with
  the noisy latents on channels; the guider sees the heatmaps of all video frames one latent
  frame covers (adjacent-frame context);
* text: the backbone's text branch, fed per-token features of a frozen sentence encoder.

The causal video VAE maps ``1 + 4k`` video frames to ``1 + k`` latent frames (the first latent
frame encodes the first video frame alone, every later one four frames), and every per-frame
condition is grouped the same way by :func:`group_frames`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from gesture_apps.errors import GenerationError

TEMPORAL_RATIO = 4  # video frames per latent frame of the Wan VAE (after the first)
SUBFRAMES = 4  # audio feature vectors per video frame


def latent_frames(frames: int) -> int:
    """Latent frames of ``frames = 1 + 4k`` video frames."""
    if frames < 1 or (frames - 1) % TEMPORAL_RATIO:
        raise GenerationError(
            f"frames: expected 1 + {TEMPORAL_RATIO}k video frames, found {frames}"
        )
    return 1 + (frames - 1) // TEMPORAL_RATIO


def group_frames(x: Tensor) -> Tensor:
    """``(B, T, ...)`` per video frame, ``T = 1 + 4k`` -> ``(B, 1 + k, 4, ...)`` per latent frame.

    Latent frame 0 holds video frame 0 four times (the causal VAE encodes it alone); latent
    frame ``j >= 1`` holds video frames ``4j - 3 .. 4j``."""
    B, T = x.shape[:2]
    n = latent_frames(T)
    first = x[:, :1].unsqueeze(2).expand(B, 1, TEMPORAL_RATIO, *x.shape[2:])
    rest = x[:, 1:].reshape(B, n - 1, TEMPORAL_RATIO, *x.shape[2:])
    return torch.cat([first, rest], 1)


# ----- audio ---------------------------------------------------------------------------------


def audio_features(
    audio: np.ndarray,
    sample_rate: int,
    fps: float,
    frames: int,
    *,
    kind: Literal["mel", "whisper"] = "mel",
) -> np.ndarray:
    """Speech features of ``frames`` video frames at ``fps``: ``(frames, 4 * D)``.

    Each video frame gets :data:`SUBFRAMES` feature vectors (log-mel, 80 bands, or Whisper tiny's
    encoder states from the shipped model), concatenated, so the 80 ms frame of a 12.5 fps video
    keeps 20 ms detail. Audio shorter than the video is zero-padded."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or not np.isfinite(audio).all():
        raise GenerationError(f"audio: expected a finite mono wave (S,), found {audio.shape}")
    need = int(np.ceil(frames / fps * sample_rate)) + 1
    if audio.size < need:
        audio = np.pad(audio, (0, need - audio.size))
    n = frames * SUBFRAMES
    if kind == "mel":
        from gesture_data.features.audio import log_mel

        f = log_mel(audio, sample_rate, fps * SUBFRAMES, n_mels=80, n_frames=n)
    elif kind == "whisper":
        from gesture_data.features.whisper import Whisper

        f = Whisper().encoder_features(audio, sample_rate, fps * SUBFRAMES, n_frames=n)
    else:
        raise GenerationError(f"audio_features: expected kind 'mel' or 'whisper', found {kind!r}")
    return f.reshape(frames, -1).astype(np.float32)


def audio_feature_dim(kind: str) -> int:
    return SUBFRAMES * (80 if kind == "mel" else 384)


class AudioProjector(nn.Module):
    """Per-video-frame speech features -> audio tokens per latent frame.

    ``(B, T, feat_dim)`` -> ``(B, 1 + (T-1)/4, 4, audio_dim)``: every frame's features are
    concatenated with those of its ``context`` neighbours on each side (edge frames repeat),
    standardised, then an MLP (OmniHuman's adjacent-timestamp audio tokens)."""

    def __init__(self, *, feat_dim: int, audio_dim: int, context: int = 1, hidden: int = 256):
        super().__init__()
        self.feat_dim, self.audio_dim, self.context = feat_dim, audio_dim, context
        width = feat_dim * (2 * context + 1)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, audio_dim))

    def forward(self, feats: Tensor) -> Tensor:
        if feats.ndim != 3 or feats.shape[-1] != self.feat_dim:
            raise GenerationError(
                f"audio features: expected (B, T, {self.feat_dim}), found {tuple(feats.shape)}"
            )
        c = self.context
        if c:
            padded = torch.cat(
                [feats[:, :1].expand(-1, c, -1), feats, feats[:, -1:].expand(-1, c, -1)], 1
            )
            feats = padded.unfold(1, 2 * c + 1, 1).transpose(2, 3).flatten(2)
        return group_frames(self.mlp(self.norm(feats)))


# ----- pose ----------------------------------------------------------------------------------


class PoseGuider(nn.Module):
    """Keypoint heatmaps per video frame -> features on the latent grid.

    ``(B, T, K, H, W)`` -> ``(B, out_channels, 1 + (T-1)/4, H / 2^downsample, W / 2^downsample)``:
    the heatmaps of the four video frames a latent frame covers are stacked on channels
    (adjacent-frame context), then strided convolutions. The last convolution starts at zero, so
    an untrained guider adds nothing to the latents it is concatenated with (ControlNet's
    trick: conditioning is learned without first disturbing the backbone)."""

    def __init__(self, *, keypoints: int, out_channels: int, hidden: int = 32, downsample: int = 2):
        super().__init__()
        self.keypoints, self.out_channels, self.downsample = keypoints, out_channels, downsample
        layers: list[nn.Module] = [nn.Conv2d(TEMPORAL_RATIO * keypoints, hidden, 3, padding=1)]
        for _ in range(downsample):
            layers += [nn.SiLU(), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(hidden, out_channels, 3, padding=1)]
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(self, heatmaps: Tensor) -> Tensor:
        if heatmaps.ndim != 5 or heatmaps.shape[2] != self.keypoints:
            raise GenerationError(
                f"pose heatmaps: expected (B, T, {self.keypoints}, H, W), found "
                f"{tuple(heatmaps.shape)}"
            )
        g = group_frames(heatmaps)  # (B, n, 4, K, H, W)
        B, n = g.shape[:2]
        y = self.net(g.flatten(2, 3).flatten(0, 1))  # (B n, C, h, w)
        return y.unflatten(0, (B, n)).transpose(1, 2)


# ----- text ----------------------------------------------------------------------------------

_TEXT_ENCODERS: dict[str, object] = {}


def text_encoder(name: str = "minilm"):
    """The frozen sentence encoder (``"minilm"``: all-MiniLM-L6-v2 from its PyPI wheel, or a
    local transformers folder), one read-only copy per process."""
    from gesture_data.features.text import TextEncoder

    if name not in _TEXT_ENCODERS:
        enc = TextEncoder.default() if name == "minilm" else TextEncoder(name)
        enc.model.requires_grad_(False)
        _TEXT_ENCODERS[name] = enc
    return _TEXT_ENCODERS[name]


@torch.no_grad()
def encode_text(texts: list[str], *, encoder: str = "minilm", max_tokens: int = 32):
    """Per-token features ``(B, S, D)`` (float32, CPU) and their mask ``(B, S)`` bool.

    Features are standardised per token over channels so the text branch sees unit scale
    whatever encoder is used."""
    enc = text_encoder(encoder)
    batch = enc.tokenizer(
        [t or "" for t in texts],
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    dev = next(enc.model.parameters()).device
    h = enc.model(**{k: v.to(dev) for k, v in batch.items()}).last_hidden_state.float().cpu()
    h = (h - h.mean(-1, keepdim=True)) / h.std(-1, keepdim=True).clamp_min(1e-6)
    return h, batch["attention_mask"].bool()


def text_dim(encoder: str = "minilm") -> int:
    return int(text_encoder(encoder).dim)

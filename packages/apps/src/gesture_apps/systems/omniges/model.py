"""The Omniges network: one :class:`~flow_backbones.MMDiT` over gesture, text and audio tokens.

Omniges (OmniFlow's recipe with the image stream replaced by gesture) joins three token streams
in every block:

* ``gesture``: the frozen four-part RVQ-VAE latents (``MultiPartTokenizer.encode_continuous``,
  512-d at T/4 for BEAT2's parts), rotary positions on the latent frame clock;
* ``audio``: the audio VAE's ``(8, T_mel/4, 16)`` mel latents in 2x2 patches (OmniFlow's patch
  embedding as a linear layer on :func:`flow_backbones.omniflow.patchify` tokens), rotary
  positions on the same clock as gesture (a patch row spans 0.08 s, a gesture token 0.133 s), so
  that "this sound, this movement" is a short distance in both;
* ``text``: the text VAE's ``n_tokens`` latent tokens, sin-cos positions (they are an ordered
  code, not a time line).

Each stream is standardised by one scalar mean and std measured on the training windows, so
that every stream enters the flow at unit scale whatever codec made it; the statistics travel
with the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flow_backbones import MMDiT, MultiStreamFlowLoss, StreamSpec, omniges_tasks
from flow_backbones.omniflow import patchify, unpatchify
from gesture_apps.systems.omniges.config import STREAMS, OmnigesRecipeConfig


@dataclass(frozen=True)
class StreamGeometry:
    """Token counts and widths of one window, the clock of each stream, and its statistics."""

    gesture_tokens: int
    gesture_dim: int
    audio_latent: tuple[int, int, int]  # (channels, mel frames / 4, mel bins / 4)
    audio_patch: int
    text_tokens: int
    text_dim: int
    gesture_token_seconds: float
    audio_row_seconds: float
    stats: dict[str, tuple[float, float]]

    @property
    def audio_tokens(self) -> int:
        _, h, w = self.audio_latent
        return (h // self.audio_patch) * (w // self.audio_patch)

    @property
    def audio_dim(self) -> int:
        return self.audio_latent[0] * self.audio_patch**2

    def to_dict(self) -> dict[str, Any]:
        return {
            "gesture_tokens": self.gesture_tokens,
            "gesture_dim": self.gesture_dim,
            "audio_latent": list(self.audio_latent),
            "audio_patch": self.audio_patch,
            "text_tokens": self.text_tokens,
            "text_dim": self.text_dim,
            "gesture_token_seconds": self.gesture_token_seconds,
            "audio_row_seconds": self.audio_row_seconds,
            "stats": {k: list(v) for k, v in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamGeometry:
        return cls(
            **{
                **d,
                "audio_latent": tuple(d["audio_latent"]),
                "stats": {k: (float(v[0]), float(v[1])) for k, v in d["stats"].items()},
            }
        )

    # ----- stream tensors <-> model tokens --------------------------------------------------

    def normalize(self, name: str, x: Tensor) -> Tensor:
        mean, std = self.stats[name]
        return (x - mean) / std

    def denormalize(self, name: str, x: Tensor) -> Tensor:
        mean, std = self.stats[name]
        return x * std + mean

    def audio_to_tokens(self, latents: Tensor) -> Tensor:
        """``(B, C, H, W)`` audio-VAE latents -> ``(B, H/p * W/p, p*p*C)`` tokens."""
        return patchify(latents, self.audio_patch)

    def tokens_to_audio(self, tokens: Tensor, rows: int | None = None) -> Tensor:
        """Inverse of :meth:`audio_to_tokens` (``rows``: latent frames, default the window's)."""
        c, h, w = self.audio_latent
        return unpatchify(tokens, c, rows if rows is not None else h, w, self.audio_patch)

    def positions(self, lengths: dict[str, int], device=None) -> dict[str, Tensor]:
        """Rotary positions of the gesture and audio tokens on one clock (gesture tokens)."""
        out = {}
        if "gesture" in lengths:
            out["gesture"] = torch.arange(lengths["gesture"], device=device, dtype=torch.float32)
        if "audio" in lengths:
            per_row = self.audio_latent[2] // self.audio_patch
            rows = torch.arange(lengths["audio"], device=device) // per_row
            out["audio"] = rows.float() * (self.audio_row_seconds / self.gesture_token_seconds)
        return out


def build_mmdit(cfg: OmnigesRecipeConfig, geo: StreamGeometry) -> MMDiT:
    """The untrained network of a recipe for windows of geometry ``geo``."""
    sizes = cfg.model.sizes()
    return MMDiT(
        streams={
            "gesture": StreamSpec(geo.gesture_dim, max_len=geo.gesture_tokens),
            "text": StreamSpec(geo.text_dim, max_len=geo.text_tokens, pos="sincos"),
            "audio": StreamSpec(geo.audio_dim, max_len=geo.audio_tokens),
        },
        qk_norm=cfg.model.qk_norm,
        per_stream_time=cfg.model.per_stream_time,
        **sizes,
    )


def make_loss(cfg: OmnigesRecipeConfig) -> MultiStreamFlowLoss:
    lc = cfg.loss
    tasks = {k: v for k, v in omniges_tasks().items() if k in lc.tasks}
    return MultiStreamFlowLoss(
        list(STREAMS),
        tasks,
        task_probs=lc.task_probs,
        schedule=lc.schedule,
        task_loss_weights=lc.task_loss_weights,
        p_clean=lc.p_clean,
        cond_drop=lc.cond_drop,
        x1_streams=("text",) if cfg.model.text_predicts_x1 else (),
        logit_mean=lc.logit_mean,
        logit_std=lc.logit_std,
    )


class PositionedMMDiT(nn.Module):
    """An MMDiT called with the streams' rotary positions filled in (``model(streams, t,
    masks)`` as the objective and the sampler call it)."""

    def __init__(self, mmdit: MMDiT, geo: StreamGeometry):
        super().__init__()
        self.mmdit, self.geo = mmdit, geo

    def forward(self, streams, timesteps, masks=None, **kwargs):
        lengths = {n: x.shape[1] for n, x in streams.items()}
        device = next(iter(streams.values())).device
        pos = {k: v for k, v in self.geo.positions(lengths, device).items() if k in streams}
        return self.mmdit(streams, timesteps, masks, positions=pos, **kwargs)


class OmnigesObjective(nn.Module):
    """``forward(batch) -> (loss, metrics)``: the any-to-any loss in one call (DDP)."""

    def __init__(self, mmdit: MMDiT, geo: StreamGeometry, loss: MultiStreamFlowLoss):
        super().__init__()
        self.net = PositionedMMDiT(mmdit, geo)
        self.loss = loss

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x1 = {s: batch[s] for s in STREAMS}
        out = self.loss(self.net, x1)
        metrics = {f"loss_{s}": v.detach() for s, v in out.per_stream.items()}
        return out.loss, metrics

"""OmniHuman: one flow-matching video DiT driven by omni-conditions.

Lin et al. 2025, "OmniHuman-1: Rethinking the Scaling-Up of One-Stage Conditioned Human
Animation Models" (arXiv:2502.01061). The backbone sees one token sequence along time:

    [ reference image (1 latent frame) | motion frames (M latent frames) | noisy segment ]

The reference latent and the previous segment's last five frames (two latent frames) are clean;
three flag channels (reference / motion frames present / noisy) tell the backbone which is which,
and the reference gets temporal RoPE position 0 (``reference_frames=1``) so it reads as an
appearance, not as a moment of the clip. Pose-guider features join the noisy frames on channels,
audio tokens are attended per latent frame, text through the backbone's text branch. Every
condition can be switched off per row (``use``), which is how the training stages' keep ratios
and classifier-free guidance are both expressed: a dropped condition becomes its learned null
(text, audio) or zeros (pose, reference, motion frames).

The backbone is anything with the ``VideoBackbone`` call (:class:`DiTBackbone` here, the Wan2.1
adapter in :mod:`.wan`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flow_backbones import DiT
from gesture_apps.errors import ConfigError, GenerationError
from gesture_apps.systems.omnihuman.conditions import AudioProjector, PoseGuider

CONDITIONS = ("text", "reference", "audio", "pose", "motion")
FLAGS = 3  # reference present, motion frames present, noisy
MOTION_FRAMES = 5  # video frames carried over from the previous segment (two latent frames)

# DiT sizes: "wan1.3b" has Wan2.1-T2V-1.3B's transformer shape (1536 wide, 30 blocks, 12 heads,
# FFN 8960), the base model the OmniHuman seed adapts; with per-block AdaLN-Zero (Wan shares
# one time projection) and the audio branch it holds 1.96 B parameters, not Wan's 1.42 B
DIT_SIZES = {
    "wan1.3b": dict(dim=1536, depth=30, num_heads=12, ff_mult=8960 / 1536),
    "small": dict(dim=256, depth=6, num_heads=4, ff_mult=4.0),
    "tiny": dict(dim=64, depth=2, num_heads=4, ff_mult=4.0),
}


class DiTBackbone(nn.Module):
    """``flow_backbones.DiT`` behind the ``VideoBackbone`` call: video latents cut into
    ``patch_size`` patches (1x2x2 by default; one latent frame per temporal position, which
    the frame-aligned audio attention needs), extra channels concatenated, text by
    cross-attention, audio by frame-aligned cross-attention."""

    def __init__(self, dit: DiT):
        super().__init__()
        self.dit = dit

    @classmethod
    def build(
        cls,
        *,
        latent_channels: int,
        extra_channels: int,
        text_dim: int,
        audio_dim: int,
        size: str = "tiny",
        patch_size: tuple[int, int, int] = (1, 2, 2),
        **overrides: Any,
    ) -> DiTBackbone:
        if size not in DIT_SIZES:
            raise ConfigError(f"model.size: expected one of {sorted(DIT_SIZES)}, found {size!r}")
        cfg = {**DIT_SIZES[size], **overrides}
        return cls(
            DiT(
                in_channels=latent_channels,
                concat_channels=extra_channels,
                cond_dim=text_dim,
                frame_cond_dim=audio_dim,
                video=True,
                patch_size=tuple(patch_size),
                **cfg,
            )
        )

    @property
    def latent_channels(self) -> int:
        return self.dit.in_channels

    @property
    def extra_channels(self) -> int:
        return self.dit.concat_channels

    @property
    def text_dim(self) -> int:
        return int(self.dit.cond_dim)

    @property
    def audio_dim(self) -> int | None:
        return self.dit.frame_cond_dim

    def block_names(self) -> list[str]:
        """Dotted names of the transformer blocks (for Seaweed-APT's discriminator hooks)."""
        return [f"dit.blocks.{i}" for i in range(len(self.dit.blocks))]

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        *,
        channels: Tensor | None,
        text: Tensor,
        text_mask: Tensor | None,
        frame_tokens: Tensor | None,
        reference_frames: int = 0,
    ) -> Tensor:
        cond: dict[str, Tensor] = {"tokens": text}
        if text_mask is not None:
            cond["tokens_mask"] = text_mask
        if channels is not None:
            cond["channels"] = channels
        if frame_tokens is not None:
            cond["frame_tokens"] = frame_tokens
        return self.dit(x, t, None, cond, None, reference_frames=reference_frames)

    def save_pretrained(self, folder: str | Path) -> None:
        self.dit.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DiTBackbone:
        return cls(DiT.from_pretrained(str(folder)))


@dataclass
class OmniHumanConfig:
    """What the condition modules need (saved as the model's ``config.json``)."""

    backbone: Literal["dit", "wan"] = "dit"
    latent_channels: int = 16
    feat_dim: int = 320  # audio features per video frame (see conditions.audio_features)
    audio_kind: str = "mel"
    audio_dim: int = 64
    audio_context: int = 1
    keypoints: int = 32
    latent_size: int = 8  # latent grid side (video side / 8)
    heatmap_size: int = 32  # heatmap side: latent_size x a power of two
    pose_channels: int = 8
    text_dim: int = 384
    text_encoder: str = "minilm"
    text_tokens: int = 32
    extra: dict = field(default_factory=dict)  # backbone-specific details for the bundle

    def __post_init__(self) -> None:
        ratio = self.heatmap_size // max(self.latent_size, 1)
        if (
            self.latent_size < 1
            or ratio * self.latent_size != self.heatmap_size
            or ratio & (ratio - 1)
        ):
            raise ConfigError(
                f"heatmap_size: expected latent_size ({self.latent_size}) times a power of two, "
                f"found {self.heatmap_size}"
            )

    @property
    def extra_channels(self) -> int:
        return self.pose_channels + FLAGS

    @property
    def pose_downsample(self) -> int:
        return (self.heatmap_size // self.latent_size).bit_length() - 1


class OmniHumanModel(nn.Module):
    """Backbone + condition modules as a ``ConditionalModel`` of the noisy segment latents.

    ``model(x, t, d, cond, keep) -> v``: ``x`` ``(B, C, n, h, w)`` the segment's latents at time
    ``t`` ``(B,)`` (``d`` ignored). ``cond`` is a dict:

    * ``"reference"`` ``(B, C, 1, h, w)``: the reference image's latent;
    * ``"motion"`` ``(B, C, 2, h, w)``: the latents of the previous segment's last five frames;
    * ``"audio_motion"`` ``(B, 5, feat_dim)`` and ``"audio"`` ``(B, 1 + 4(n-1), feat_dim)``:
      speech features of those five frames and of the segment's video frames;
    * ``"keypoints"`` ``(B, 1 + 4(n-1), K, 2)`` in ``[0, 1]`` and ``"confidence"``
      ``(B, 1 + 4(n-1), K)`` of the segment's frames (optional: without them no pose), drawn
      as Gaussian heatmaps here, on the model's device;
    * ``"text"`` ``(B, S, text_dim)`` and ``"text_mask"`` ``(B, S)`` bool;
    * ``"use"``: ``{condition: (B,) bool}`` for the conditions in :data:`CONDITIONS` (missing:
      all True).

    ``keep`` ``(B,)`` (classifier-free guidance's flag) False additionally drops text and audio.
    """

    def __init__(self, backbone: nn.Module, config: OmniHumanConfig):
        super().__init__()
        self.backbone, self.config = backbone, config
        if backbone.extra_channels != config.extra_channels:
            raise ConfigError(
                f"backbone: {backbone.extra_channels} extra channels, the conditions need "
                f"{config.extra_channels} (pose {config.pose_channels} + {FLAGS} flags)"
            )
        self.audio = AudioProjector(
            feat_dim=config.feat_dim, audio_dim=config.audio_dim, context=config.audio_context
        )
        self.pose = PoseGuider(
            keypoints=config.keypoints,
            out_channels=config.pose_channels,
            downsample=config.pose_downsample,
        )
        self.null_text = nn.Parameter(torch.zeros(1, 1, config.text_dim))
        self.null_audio = nn.Parameter(torch.zeros(config.audio_dim))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def _use(self, cond: dict, name: str, B: int, device) -> Tensor:
        use = cond.get("use", {}).get(name)
        if use is None:
            return torch.ones(B, dtype=torch.bool, device=device)
        if use.shape != (B,) or use.dtype != torch.bool:
            raise GenerationError(
                f"cond['use'][{name!r}]: expected a bool tensor of shape ({B},), found "
                f"{tuple(use.shape)} {use.dtype}"
            )
        return use

    def _pose(self, cond: dict, use: Tensor, grid: tuple[int, int, int], dt) -> Tensor:
        """Pose-guider features ``(B, P, n, h, w)`` of ``cond["keypoints"]`` (zeros on rows
        that do not use pose, and everywhere when no keypoints are given)."""
        from gesture_data.video import keypoint_heatmaps

        kp = cond.get("keypoints")
        B, P = use.shape[0], self.config.pose_channels
        if kp is None:
            return torch.zeros(B, P, *grid, device=use.device, dtype=dt)
        # the guider runs even when no row keeps pose (stages 1 and 2): data-parallel training
        # needs every parameter in every step's graph
        K, size = self.config.keypoints, self.config.heatmap_size
        if kp.ndim != 4 or kp.shape[0] != B or kp.shape[2:] != (K, 2):
            raise GenerationError(
                f"cond['keypoints']: expected ({B}, L, {K}, 2), found {tuple(kp.shape)}"
            )
        conf = cond.get("confidence")
        conf = torch.ones(kp.shape[:3], device=kp.device) if conf is None else conf
        heat = keypoint_heatmaps(kp.flatten(0, 1).float(), size, confidence=conf.flatten(0, 1))
        pose = self.pose(heat.unflatten(0, kp.shape[:2]).to(dt))
        if pose.shape[2:] != grid:
            raise GenerationError(
                f"cond['keypoints']: pose features of shape {tuple(pose.shape[2:])} do not "
                f"match the latents {grid}"
            )
        return pose * use.view(B, 1, 1, 1, 1).to(dt)

    def _tokens(self, feats: Tensor, use: Tensor) -> Tensor:
        tok = self.audio(feats)  # (B, n, 4, audio_dim)
        return torch.where(use[:, None, None, None], tok, self.null_audio.to(tok.dtype))

    def forward(
        self, x: Tensor, t: Tensor, d: Tensor | None, cond: dict[str, Any], keep: Tensor | None
    ) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.latent_channels:
            raise GenerationError(
                f"x: expected (B, {self.latent_channels}, n, h, w) latents, found {tuple(x.shape)}"
            )
        B, _, n, h, w = x.shape
        dev, dt = x.device, x.dtype
        keep = torch.ones(B, dtype=torch.bool, device=dev) if keep is None else keep
        use = {k: self._use(cond, k, B, dev) for k in CONDITIONS}
        use["text"] = use["text"] & keep
        use["audio"] = use["audio"] & keep

        ref = cond["reference"] * use["reference"].view(B, 1, 1, 1, 1).to(dt)
        motion = cond["motion"] * use["motion"].view(B, 1, 1, 1, 1).to(dt)
        M = motion.shape[2]
        seq = torch.cat([ref, motion, x], 2)  # (B, C, 1 + M + n, h, w)

        flags = torch.zeros(B, FLAGS, 1 + M + n, h, w, device=dev, dtype=dt)
        flags[:, 0, 0] = use["reference"].to(dt).view(B, 1, 1)
        flags[:, 1, 1 : 1 + M] = use["motion"].to(dt).view(B, 1, 1, 1)
        flags[:, 2, 1 + M :] = 1.0
        pose = self._pose(cond, use["pose"], (n, h, w), dt)
        pose = torch.cat([pose.new_zeros(B, pose.shape[1], 1 + M, h, w), pose], 2)
        channels = torch.cat([pose, flags], 1)

        a_motion = self._tokens(cond["audio_motion"].to(dt), use["audio"] & use["motion"])
        a_seg = self._tokens(cond["audio"].to(dt), use["audio"])
        if a_seg.shape[1] != n or a_motion.shape[1] != M:
            raise GenerationError(
                f"cond['audio']: {a_seg.shape[1]} + {a_motion.shape[1]} latent frames of audio "
                f"for {n} + {M} latent frames"
            )
        a_ref = self.null_audio.to(dt).expand(B, 1, a_seg.shape[2], -1)
        frame_tokens = torch.cat([a_ref, a_motion, a_seg], 1)

        text = cond["text"].to(dt)
        mask = cond.get("text_mask")
        drop = ~use["text"]
        text = torch.where(drop[:, None, None], self.null_text.to(dt), text)
        if mask is not None:
            mask = mask | drop[:, None]  # a dropped row sees only null tokens, all visible
        v = self.backbone(
            seq,
            t,
            channels=channels,
            text=text,
            text_mask=mask,
            frame_tokens=frame_tokens,
            reference_frames=1,
        )
        return v[:, :, 1 + M :]

    # ----- saving ------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        """``config.json`` + ``model.safetensors`` (condition modules) + ``backbone/``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        own = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        own = {k: v for k, v in own.items() if not k.startswith("backbone.")}
        save_file(own, str(folder / "model.safetensors"))
        self.backbone.save_pretrained(folder / "backbone")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> OmniHumanModel:
        folder = Path(folder)
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = OmniHumanConfig(**raw)
        except FileNotFoundError:
            raise GenerationError(f"{folder / 'config.json'}: not found") from None
        except (ValueError, TypeError) as e:
            raise GenerationError(f"{folder / 'config.json'}: unreadable config: {e}") from None
        backbone = load_backbone(config.backbone, folder / "backbone")
        model = cls(backbone, config)
        try:
            weights = load_file(str(folder / "model.safetensors"))
        except FileNotFoundError:
            raise GenerationError(f"{folder / 'model.safetensors'}: not found") from None
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise GenerationError(f"{folder / 'model.safetensors'}: unreadable: {e}") from None
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise GenerationError(
                f"{folder / 'model.safetensors'}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}"
            )
        return model


def load_backbone(kind: str, folder: Path) -> nn.Module:
    if kind == "dit":
        return DiTBackbone.from_pretrained(folder)
    if kind == "wan":
        from gesture_apps.systems.omnihuman.wan import WanBackbone

        return WanBackbone.from_pretrained(folder)
    raise GenerationError(f"{folder}: unknown backbone kind {kind!r} (expected 'dit' or 'wan')")

"""OmniHuman's pretrained-base adapter: Wan2.1's video DiT with the omni-condition modules.

Wan: Open and Advanced Large-Scale Video Generative Models (Wan Team, 2025,
https://arxiv.org/abs/2503.20314), diffusers' ``WanTransformer3DModel``; the conditions follow
OmniHuman-1 (Lin et al., 2025, https://arxiv.org/abs/2502.01061). :class:`WanBackbone` wraps a
tiny transformer for tests or a user's local Wan2.1-T2V-1.3B ``transformer/`` folder, keeps its
text-to-video path untouched and adds, all zero-initialised so that the adapted model starts as
exactly the pretrained one:

* **extra input channels** (pose-guider features, a clean-frame flag): the patch embedding
  ``Conv3d`` gains ``extra_channels`` zero input channels, as Wan's own image-to-video model
  widens it (16 -> 36) for its mask and image latents;
* **frame-aligned audio cross-attention**: after every block (a forward hook, so the transformer
  and its saved files stay diffusers' own), the tokens of latent frame k attend to the F audio
  tokens of frame k only. Wan patches 1 x 2 x 2, so latent frame k is token row k of the
  ``(T, H/2, W/2)`` grid;
* **text**: Wan's own text branch (``text_embedder`` + cross-attention) reads features of
  ``text_dim``; a learned projection maps our sentence features (384-d by default) to Wan's
  width (4096, umT5) when they differ.

The reference image enters as the first latent frame of ``x`` (``reference_frames=1``): Wan's 3D
RoPE numbers latent frames from 0, so the reference already sits at temporal position 0, before
the video, as OmniHuman asks; the clean-frame flag in ``channels`` tells the model it is clean.

Conventions: Wan is trained on diffusers' flow, ``x_sigma = (1 - sigma) x0 + sigma noise`` at
``timestep = 1000 sigma`` predicting ``noise - x0``; :meth:`WanBackbone.forward` takes our ``t``
(``sigma = 1 - t``) and returns our velocity ``v = data - noise`` (the conversions of
:mod:`flow_backbones.flow`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_model
from torch import Tensor, nn

from flow_backbones.flow import t_to_diffusers_timestep, velocity_from_diffusers
from motion_tokenizers.io import atomic_directory

from ...errors import GenerationError, one_line

__all__ = ["FrameCrossAttention", "VideoBackbone", "WanBackbone", "WanConditions"]

logger = logging.getLogger(__name__)

TRANSFORMER = "transformer"  # the diffusers subfolder of a saved WanBackbone


class VideoBackbone(Protocol):
    """What OmniHuman's model calls: :class:`WanBackbone` and the DiT backbone implement it."""

    latent_channels: int
    extra_channels: int
    text_dim: int
    audio_dim: int | None

    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        *,
        channels: Tensor | None,
        text: Tensor,
        text_mask: Tensor | None,
        frame_tokens: Tensor | None,
        reference_frames: int = 0,
    ) -> Tensor: ...


class WidenedConv3d(nn.Conv3d):
    """Wan's patch embedding with extra input channels after the latent ones.

    Computed as ``conv(latents, W[:, :C]) + conv(extra, W[:, C:])`` rather than one conv over
    the concatenation: with zero extra weights the second term is exactly zero and the first is
    the pretrained conv itself, so the adapted model equals the pretrained one bit for bit (one
    wide conv sums the products in another order). The weight is one ``(D, C + E, 1, 2, 2)``
    tensor, so the saved transformer is a plain ``WanTransformer3DModel`` with
    ``in_channels = C + E``."""

    def __init__(self, conv: nn.Conv3d, extra: int):
        super().__init__(
            conv.in_channels + extra,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.latent_channels = conv.in_channels
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, : conv.in_channels].copy_(conv.weight)
            self.bias.copy_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        c = self.latent_channels
        out = F.conv3d(x[:, :c], self.weight[:, :c], self.bias, self.stride)
        return out + F.conv3d(x[:, c:], self.weight[:, c:], None, self.stride)


class FrameCrossAttention(nn.Module):
    """Video tokens of latent frame k attend to the audio tokens of frame k only.

    ``forward(hidden (B, T*h*w, D), tokens (B, T, F, A), frames=T) -> (B, T*h*w, D)``: the
    residual to add to a block's output. The output projection starts at zero, so an untrained
    branch changes nothing."""

    def __init__(self, dim: int, audio_dim: int, num_heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_kv = nn.LayerNorm(audio_dim, eps=1e-6)  # speech features come unnormalised
        self.attn = nn.MultiheadAttention(
            dim, num_heads, kdim=audio_dim, vdim=audio_dim, batch_first=True
        )
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, hidden: Tensor, tokens: Tensor, frames: int, skip: int = 0) -> Tensor:
        b, n, d = hidden.shape
        f = tokens.shape[2]
        # token rows are frame-major (Wan flattens the (T, h, w) grid): one attention per frame
        q = self.norm_q(hidden).reshape(b * frames, n // frames, d)
        kv = self.norm_kv(tokens.to(hidden.dtype)).reshape(b * frames, f, tokens.shape[3])
        out = self.attn(q, kv, kv, need_weights=False)[0].reshape(b, frames, n // frames, d)
        if skip:  # the reference frame(s) have no speech of their own
            out = torch.cat([torch.zeros_like(out[:, :skip]), out[:, skip:]], dim=1)
        return out.reshape(b, n, d)


class WanConditions(nn.Module, PyTorchModelHubMixin):
    """The adapter's own modules and sizes (saved beside the transformer as ``config.json`` +
    ``model.safetensors``): the text projection and the per-block audio attention.

    Args:
        dim: Wan's inner width (heads x head dim), num_layers: its blocks.
        latent_channels: channels of the latents (Wan's ``out_channels``).
        extra_channels: channels appended to the latents at the patch embedding.
        text_dim: width of the text features given to :meth:`WanBackbone.forward`.
        wan_text_dim: width Wan's text branch reads (its config's ``text_dim``).
        audio_dim: width of the frame tokens, ``None`` for no audio branch.
        audio_heads: heads of each audio attention.
        audio_layers: blocks followed by an audio attention (``None``: all).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_layers: int,
        latent_channels: int,
        extra_channels: int = 0,
        text_dim: int,
        wan_text_dim: int,
        audio_dim: int | None = None,
        audio_heads: int = 8,
        audio_layers: Sequence[int] | None = None,
    ):
        super().__init__()
        if extra_channels < 0 or (audio_dim is not None and audio_dim < 1):
            raise GenerationError(
                f"extra_channels must be >= 0 and audio_dim >= 1 or None, found "
                f"{extra_channels}, {audio_dim}"
            )
        layers = list(range(num_layers)) if audio_layers is None else sorted(set(audio_layers))
        if audio_dim is not None and (not layers or layers[0] < 0 or layers[-1] >= num_layers):
            raise GenerationError(
                f"audio_layers: expected block indices in [0, {num_layers}), found {audio_layers}"
            )
        if audio_dim is not None and dim % audio_heads:
            raise GenerationError(f"audio_heads: {audio_heads} does not divide the width {dim}")
        self.dim, self.num_layers = dim, num_layers
        self.latent_channels, self.extra_channels = latent_channels, extra_channels
        self.text_dim, self.wan_text_dim, self.audio_dim = text_dim, wan_text_dim, audio_dim
        # identity when the widths agree, so Wan's own text encoder features pass untouched
        self.text_proj = nn.Linear(text_dim, wan_text_dim) if text_dim != wan_text_dim else None
        self.audio_layers = layers if audio_dim is not None else []
        self.audio = nn.ModuleList(
            FrameCrossAttention(dim, audio_dim, audio_heads) for _ in self.audio_layers
        )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise GenerationError(f"{path}: config.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GenerationError(f"{path}: unreadable JSON ({one_line(e, 200)})") from None
    if not isinstance(data, dict):
        raise GenerationError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _load_transformer(folder: Path, torch_dtype: torch.dtype | None) -> WanTransformer3DModel:
    config = _read_json(folder / "config.json")
    name = config.get("_class_name", "WanTransformer3DModel")
    if name != "WanTransformer3DModel":
        raise GenerationError(
            f"{folder / 'config.json'}: _class_name must be WanTransformer3DModel, found {name}"
        )
    try:
        return WanTransformer3DModel.from_pretrained(
            folder, local_files_only=True, torch_dtype=torch_dtype
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise GenerationError(
            f"{folder}: cannot load the transformer ({one_line(e, 300)})"
        ) from None


class WanBackbone(nn.Module):
    """Wan2.1's ``WanTransformer3DModel`` (``.transformer``) + :class:`WanConditions`
    (``.conditions``) behind the :class:`VideoBackbone` interface.

    Use :meth:`tiny` (tests), :meth:`wan_1_3b` (the architecture of Wan2.1-T2V-1.3B, untrained)
    or :meth:`from_pretrained` (a local Wan2.1 ``transformer/`` folder, or our export).

    Example:
        >>> net = WanBackbone.tiny(extra_channels=2, audio_dim=16, text_dim=24)
        >>> x = torch.randn(1, 8, 3, 4, 4)  # (B, C, T, H, W) latents
        >>> v = net(x, torch.tensor([0.5]), channels=torch.zeros(1, 2, 3, 4, 4),
        ...         text=torch.randn(1, 5, 24), text_mask=None,
        ...         frame_tokens=torch.randn(1, 3, 4, 16))
        >>> v.shape
        torch.Size([1, 8, 3, 4, 4])
    """

    def __init__(self, transformer: WanTransformer3DModel, conditions: WanConditions):
        super().__init__()
        c = transformer.config
        if c.out_channels + conditions.extra_channels != c.in_channels:
            raise GenerationError(
                f"transformer in_channels must be out_channels + extra_channels = "
                f"{c.out_channels} + {conditions.extra_channels}, found {c.in_channels}"
            )
        if c.patch_size[0] != 1 or c.image_dim is not None:
            raise GenerationError(
                f"expected a text-to-video Wan2.1 transformer (temporal patch 1, no image "
                f"branch), found patch_size {tuple(c.patch_size)}, image_dim {c.image_dim}"
            )
        dim = c.num_attention_heads * c.attention_head_dim
        if (conditions.dim, conditions.num_layers, conditions.wan_text_dim) != (
            dim,
            c.num_layers,
            c.text_dim,
        ):
            raise GenerationError(
                f"conditions are for width {conditions.dim}, {conditions.num_layers} blocks, "
                f"text {conditions.wan_text_dim}; the transformer has {dim}, {c.num_layers}, "
                f"{c.text_dim}"
            )
        self.transformer, self.conditions = transformer, conditions
        self._frame_context: tuple[Tensor, int, int] | None = None
        for pos, layer in enumerate(conditions.audio_layers):
            transformer.blocks[layer].register_forward_hook(partial(self._add_audio, pos))

    # ----- the VideoBackbone sizes ---------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return int(self.conditions.latent_channels)

    @property
    def extra_channels(self) -> int:
        return int(self.conditions.extra_channels)

    @property
    def text_dim(self) -> int:
        return int(self.conditions.text_dim)

    @property
    def audio_dim(self) -> int | None:
        return self.conditions.audio_dim

    # ----- construction --------------------------------------------------------------------

    @classmethod
    def adapt(
        cls,
        transformer: WanTransformer3DModel,
        *,
        extra_channels: int = 0,
        audio_dim: int | None = None,
        text_dim: int | None = None,
        audio_heads: int | None = None,
        audio_layers: Sequence[int] | None = None,
    ) -> WanBackbone:
        """Give a plain text-to-video transformer the omni-condition modules (in place)."""
        c = transformer.config
        out = c.out_channels or c.in_channels
        if c.in_channels != out:
            raise GenerationError(
                f"expected a text-to-video transformer (in_channels == out_channels), found "
                f"{c.in_channels} != {out}: an image-to-video checkpoint is not supported"
            )
        if extra_channels:
            transformer.patch_embedding = WidenedConv3d(transformer.patch_embedding, extra_channels)
            transformer.register_to_config(in_channels=out + extra_channels, out_channels=out)
        dim = c.num_attention_heads * c.attention_head_dim
        with torch.device(transformer.patch_embedding.weight.device):
            conditions = WanConditions(
                dim=dim,
                num_layers=c.num_layers,
                latent_channels=out,
                extra_channels=extra_channels,
                text_dim=text_dim or c.text_dim,
                wan_text_dim=c.text_dim,
                audio_dim=audio_dim,
                audio_heads=audio_heads or c.num_attention_heads,
                audio_layers=audio_layers,
            )
        return cls(transformer, conditions.to(transformer.dtype))

    @classmethod
    def tiny(
        cls,
        *,
        latent_channels: int = 8,
        extra_channels: int = 0,
        audio_dim: int | None = None,
        text_dim: int | None = None,
        num_layers: int = 2,
        seed: int = 0,
        **adapt_kw,
    ) -> WanBackbone:
        """A CPU-test size (about 40 k parameters): width 24 (2 heads of 12), 2 blocks, Wan
        text width 32 (``text_dim=None`` reads that width directly)."""
        with torch.random.fork_rng(devices=[]):  # diffusers initialises from the global RNG
            torch.manual_seed(seed)
            transformer = cls.tiny_transformer(latent_channels, num_layers)
            return cls.adapt(
                transformer,
                extra_channels=extra_channels,
                audio_dim=audio_dim,
                text_dim=text_dim,
                **adapt_kw,
            )

    @staticmethod
    def tiny_transformer(latent_channels: int = 8, num_layers: int = 2) -> WanTransformer3DModel:
        """The plain tiny ``WanTransformer3DModel`` of :meth:`tiny` (Wan2.1's block layout)."""
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=latent_channels,
            out_channels=latent_channels,
            text_dim=32,
            freq_dim=32,
            ffn_dim=48,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=64,
        )

    @classmethod
    def wan_1_3b(cls, **adapt_kw) -> WanBackbone:
        """The architecture of Wan2.1-T2V-1.3B (untrained): width 1536 (12 x 128), 30 blocks,
        FFN 8960, umT5 text width 4096, 16 latent channels; build it under
        ``torch.device("meta")`` to inspect its size."""
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
        return cls.adapt(transformer, **adapt_kw)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        extra_channels: int | None = None,
        audio_dim: int | None = None,
        text_dim: int | None = None,
        torch_dtype: torch.dtype | None = None,
        **adapt_kw,
    ) -> WanBackbone:
        """Load a user's local Wan2.1 ``transformer/`` folder as it is (or a Wan pipeline root
        holding one) and adapt it (``extra_channels`` default 0, no audio branch unless
        ``audio_dim``, ``text_dim`` default Wan's own); or load a folder
        :meth:`save_pretrained` wrote, whose sizes are saved (an explicit argument must then
        agree with them). Local paths only: a missing folder fails at once."""
        root = Path(folder)
        if not root.is_dir():
            raise GenerationError(f"{root}: Wan transformer folder not found")
        own = root / "config.json"
        if own.is_file() and (root / TRANSFORMER).is_dir():
            return cls._load_export(
                root,
                dict(extra_channels=extra_channels, audio_dim=audio_dim, text_dim=text_dim),
                torch_dtype,
            )
        if not own.is_file() and (root / TRANSFORMER / "config.json").is_file():
            root = root / TRANSFORMER  # a Wan2.1 pipeline root
        transformer = _load_transformer(root, torch_dtype)
        return cls.adapt(
            transformer,
            extra_channels=extra_channels or 0,
            audio_dim=audio_dim,
            text_dim=text_dim,
            **adapt_kw,
        )

    @classmethod
    def _load_export(cls, root: Path, asked: dict, torch_dtype) -> WanBackbone:
        config = _read_json(root / "config.json")
        for key, value in asked.items():
            if value is not None and config.get(key) != value:
                raise GenerationError(
                    f"{root / 'config.json'}: {key} is {config.get(key)}, asked for {value}"
                )
        transformer = _load_transformer(root / TRANSFORMER, torch_dtype)
        try:
            conditions = WanConditions(**config)
        except TypeError as e:
            raise GenerationError(f"{root / 'config.json'}: {one_line(e, 200)}") from None
        extra = conditions.extra_channels
        if extra:  # the saved weight is already wide: rebuild the split conv around it
            pe = transformer.patch_embedding
            narrow = nn.Conv3d(pe.in_channels - extra, pe.out_channels, pe.kernel_size, pe.stride)
            widened = WidenedConv3d(narrow.to(pe.weight.dtype), extra)
            widened.load_state_dict(pe.state_dict())
            transformer.patch_embedding = widened
        weights = root / "model.safetensors"
        if not weights.is_file():
            raise GenerationError(f"{weights}: file not found")
        try:
            load_model(conditions, str(weights), strict=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise GenerationError(f"{weights}: cannot load ({one_line(e, 300)})") from None
        return cls(transformer, conditions.to(transformer.dtype)).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``folder/transformer/`` (diffusers' ``save_pretrained``: a plain
        ``WanTransformer3DModel`` with ``in_channels = C + extra_channels``) and the adapter's
        ``config.json`` + ``model.safetensors``; filled in a temporary sibling, swapped whole."""

        def write(tmp: Path) -> None:
            self.transformer.save_pretrained(tmp / TRANSFORMER, safe_serialization=True)
            PyTorchModelHubMixin.save_pretrained(self.conditions, tmp)

        atomic_directory(Path(folder), write)

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    # ----- forward -------------------------------------------------------------------------

    def _add_audio(self, pos: int, module: nn.Module, args, output: Tensor) -> Tensor:
        if self._frame_context is None:
            return output
        tokens, frames, skip = self._frame_context
        return output + self.conditions.audio[pos](output, tokens, frames, skip)

    def _check(self, x, t, channels, text, text_mask, frame_tokens, reference_frames):
        """The inputs as tensors on the model's device and dtype, or a GenerationError naming
        the argument and its expected vs found shape."""
        p = self.transformer.patch_embedding.weight
        if x.ndim != 5 or x.shape[1] != self.latent_channels:
            raise GenerationError(
                f"x: expected shape (B, {self.latent_channels}, T, H, W), found {tuple(x.shape)}"
            )
        b, _, frames, h, w = x.shape
        if h % 2 or w % 2:
            raise GenerationError(f"x: H x W = {h} x {w}, expected even sizes (Wan patches 2x2)")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        if t.shape != (b,):
            raise GenerationError(f"t: expected shape ({b},), found {tuple(t.shape)}")
        want = {"channels": (b, self.extra_channels, frames, h, w)}
        if self.extra_channels == 0 and channels is not None and channels.shape[1] == 0:
            channels = None
        if self.extra_channels and channels is None:
            raise GenerationError(
                f"channels: required, shape {want['channels']} (zeros for no pose / flag)"
            )
        if channels is not None and tuple(channels.shape) != want["channels"]:
            raise GenerationError(
                f"channels: expected shape {want['channels']}, found {tuple(channels.shape)}"
            )
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.text_dim:
            raise GenerationError(
                f"text: expected shape ({b}, S, {self.text_dim}), found {tuple(text.shape)}"
            )
        if text_mask is not None and tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise GenerationError(
                f"text_mask: expected shape {tuple(text.shape[:2])}, found {tuple(text_mask.shape)}"
            )
        if frame_tokens is not None:
            if self.audio_dim is None:
                raise GenerationError("frame_tokens: this backbone has no audio branch")
            ft = frame_tokens
            if ft.ndim != 4 or ft.shape[:2] != (b, frames) or ft.shape[3] != self.audio_dim:
                raise GenerationError(
                    f"frame_tokens: expected shape ({b}, {frames}, F, {self.audio_dim}), found "
                    f"{tuple(ft.shape)}"
                )
        if not 0 <= reference_frames < frames:
            raise GenerationError(
                f"reference_frames: expected 0 <= r < T = {frames}, found {reference_frames}"
            )
        named = {"x": x, "t": t, "channels": channels, "text": text, "frame_tokens": frame_tokens}
        for name, value in named.items():
            if value is not None and not torch.isfinite(value).all():
                raise GenerationError(f"{name}: contains NaN or infinite values")
        return t.to(p.device, torch.float32), channels

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        *,
        channels: Tensor | None = None,
        text: Tensor,
        text_mask: Tensor | None = None,
        frame_tokens: Tensor | None = None,
        reference_frames: int = 0,
    ) -> Tensor:
        """Velocity (ours: ``data - noise``) of noisy latents.

        Args:
            x: ``(B, C, T, H, W)`` noisy latents at time ``t`` (the first ``reference_frames``
                latent frames hold the clean reference), H and W even.
            t: ``(B,)`` in [0, 1], 0 = noise, 1 = data.
            channels: ``(B, extra_channels, T, H, W)`` pose features + clean-frame flag.
            text: ``(B, S, text_dim)`` text features; text_mask: ``(B, S)`` bool, True = token.
            frame_tokens: ``(B, T, F, audio_dim)`` audio tokens per latent frame, or ``None``.
            reference_frames: leading latent frames that are the reference (no audio).

        Returns:
            ``(B, C, T, H, W)`` velocity.
        """
        t, channels = self._check(x, t, channels, text, text_mask, frame_tokens, reference_frames)
        p = self.transformer.patch_embedding.weight
        hidden = x.to(p.dtype) if channels is None else torch.cat([x, channels], 1).to(p.dtype)
        text = text.to(p.dtype)
        if self.conditions.text_proj is not None:
            text = self.conditions.text_proj(text)
        if text_mask is not None:
            # Wan's cross-attention has no mask: its pipeline feeds zero vectors past the
            # prompt's end, so padded positions get exactly those
            text = text * text_mask[..., None].to(text.dtype)
        timestep = t_to_diffusers_timestep(t)  # 1000 * sigma, sigma = 1 - t
        if frame_tokens is not None and self.conditions.audio_layers:
            self._frame_context = (frame_tokens.to(p.dtype), x.shape[2], reference_frames)
        try:
            out = self.transformer(hidden, timestep, text, return_dict=False)[0]
        finally:
            self._frame_context = None
        return velocity_from_diffusers(out)  # Wan predicts noise - x0

"""GestureLSM as released: the reference network, to run its published checkpoints exactly.

Liu et al., "GestureLSM: Latent Shortcut based Co-Speech Gesture Generation with Spatial-Temporal
Modeling" (ICCV 2025); the authors' code ycyentropy/GestureLSM at commit ``fe124e0``
(``models/denoiser.py``, ``models/layers/{transformer,utils,layer,modality_encoder}.py``,
``models/LSM.py``). Our own denoiser (:class:`flow_backbones.SpatialTemporalDenoiser`) fixes the
reference's frame alignment, so the released weights do not fit it; this module reproduces the
released computation, quirks included, under the released parameter names:

* the cross-attention tokens are a raw ``view(B, N, P * D)`` of a ``(B, P, N, D)`` tensor (token
  ``j`` holds ``P`` consecutive frames of one part), viewed back afterwards;
* rotary embedding over frames is applied to the whole token (queries = keys = values), and each
  attention's residual adds the *rotated* input;
* the spatial-temporal blocks normalise with ``norm2`` before attention and ``norm3`` before the
  MLP (``norm1`` is never used, so it is not loaded);
* ``t`` and the step size ``d`` enter diffusers-style flip-sin-to-cos sinusoids unscaled;
* the classifier-free-guidance null condition is ``null_cond_embed``;
* the output reshape hard-codes 128 channels per part, so ``input_dim`` must be 128.

Tensors follow our conventions: latents ``(B, N, P * C)`` with the parts concatenated on the
channels (the reference's ``(B, P * C, 1, N)`` transposed), audio ``(B, S, 2)``.
Computation differs only where the result is the same up to float rounding: attention runs
through ``F.scaled_dot_product_attention`` (the reference asks ``nn.MultiheadAttention`` for
its attention weights, which forces the slow path), and the cross-attention keys and values
can be computed once per condition (:meth:`ReferenceGestureDenoiser.cross_kv`).
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from gesture_apps.errors import ConfigError

# ----- rotary embedding, the reference's "rotate half" form ---------------------------------


def _rope_table(n: int, dim: int, device, dtype) -> tuple[Tensor, Tensor]:
    """cos and sin ``(n, dim)`` of positions ``0..n-1``: frequencies ``10000^(-2i/dim)``,
    the table repeated (not interleaved) across the two halves."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).float() / dim))
    ang = torch.outer(torch.arange(n, device=device).float(), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x (..., n, dim)`` rotated: ``x cos + [-x2, x1] sin`` with ``x1, x2`` its halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ----- denoiser ------------------------------------------------------------------------------


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _CrossAttention(nn.Module):
    """timm-style cross-attention, no bias on ``q`` / ``kv`` (the reference's ``qkv_bias``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, M, dim)`` -> keys and values ``(B, heads, M, dim / heads)``."""
        B, M, C = context.shape
        kv = self.kv(context).view(B, M, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.heads, C // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, *kv)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class _CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = _CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, hidden)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.cross_attn(self.norm1(x), kv)
        return x + self.mlp(self.norm2(x))


class _JointAttention(nn.Module):
    """Temporal attention (per part, over frames), then spatial attention (per frame, over
    parts); each on its rotated input, each adding that rotated input back."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # nn.MultiheadAttention only for its parameter names (in_proj_*, out_proj); the
        # computation below is its math through scaled_dot_product_attention
        self.temporal_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.spatial_attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def _attend(self, mha: nn.MultiheadAttention, x: Tensor, rope) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        x = _rotate(x.view(b, n, h, d // h).transpose(1, 2), *rope)  # (b, h, n, d/h)
        x = x.transpose(1, 2).reshape(b, n, d)  # the rotated input: attended and added back
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (a.view(b, n, h, d // h).transpose(1, 2) for a in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias) + x

    def forward(self, x: Tensor, rope_t, rope_s) -> Tensor:
        B, P, N, D = x.shape
        x = self._attend(self.temporal_attention, x.reshape(B * P, N, D), rope_t)
        x = x.view(B, P, N, D).transpose(1, 2).reshape(B * N, P, D)
        x = self._attend(self.spatial_attention, x, rope_s)
        return x.view(B, N, P, D).transpose(1, 2)


class _SpatialTemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        # the reference also builds an unused norm1; the importer drops its weights
        self.norm2 = nn.LayerNorm(dim)
        self.spatial_temporal_attn = _JointAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, hidden)

    def forward(self, x: Tensor, rope_t, rope_s) -> Tensor:
        x = x + self.spatial_temporal_attn(self.norm2(x), rope_t, rope_s)
        return x + self.mlp(self.norm3(x))


class ReferenceGestureDenoiser(nn.Module):
    """The released ``GestureDenoiser`` (``models/denoiser.py``) under its parameter names.

    Args (the reference yaml's ``model.denoiser.params``):
        input_dim: latent channels per part (must be 128: the output reshape hard-codes it).
        latent_dim: token width ``D`` (256).
        ff_size: MLP width; the blocks use ``latent_dim * (ff_size // latent_dim)`` (1024).
        num_layers: spatial-temporal blocks (8); the 3 cross-attention blocks are fixed.
        num_heads: heads of every attention (4).
        seq_len: latent frames per window ``N`` (32).
        activation: the time MLP's activation (``"gelu"``; the release uses SiLU otherwise).
        flip_sin_to_cos, freq_shift: the time sinusoid (True, 0).
        cond_proj_dim: step-size embedding width (must equal ``latent_dim``), or None for a
            model without step-size conditioning.
        use_exp: a fourth (face) part.
        embed_context_multiplier: seed frames read from the previous window (4).

    ``forward(x, t, d, cond, keep_cond, seed=, cross_kv=)`` has
    :class:`flow_backbones.SpatialTemporalDenoiser`'s signature, so the same sampler and
    generation pipeline run either network.
    """

    def __init__(
        self,
        *,
        input_dim: int = 128,
        latent_dim: int = 256,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 4,
        seq_len: int = 32,
        activation: str = "gelu",
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
        cond_proj_dim: int | None = 256,
        use_exp: bool = False,
        embed_context_multiplier: int = 4,
    ) -> None:
        super().__init__()
        if input_dim != 128:
            raise ConfigError(
                f"denoiser.input_dim: the released network hard-codes 128 channels per part in "
                f"its output reshape, found {input_dim}"
            )
        if cond_proj_dim is not None and cond_proj_dim != latent_dim:
            raise ConfigError(
                f"denoiser.cond_proj_dim: must equal latent_dim={latent_dim} (the step-size "
                f"sinusoid has latent_dim channels), found {cond_proj_dim}"
            )
        if latent_dim % num_heads or (latent_dim // num_heads) % 2:
            raise ConfigError(
                f"denoiser.num_heads: latent_dim={latent_dim} must split into {num_heads} "
                "even-width heads"
            )
        P = 4 if use_exp else 3
        self.num_parts, self.part_dim, self.latent_dim = P, input_dim, latent_dim
        self.seq_len, self.num_heads = seq_len, num_heads
        self.seed_frames = embed_context_multiplier
        self.step_size_cond = cond_proj_dim is not None
        hidden = latent_dim * (ff_size // latent_dim)  # the reference's integer mlp_ratio

        self.cross_attn_blocks = nn.ModuleList(
            [_CrossAttentionBlock(latent_dim * P, num_heads, hidden * P) for _ in range(3)]
        )
        self.mytimmblocks = nn.ModuleList(
            [_SpatialTemporalBlock(latent_dim, num_heads, hidden) for _ in range(num_layers)]
        )
        self.embed_text = nn.Linear(input_dim * P * embed_context_multiplier, latent_dim)
        self.output_process = nn.Module()
        self.output_process.poseFinal = nn.Linear(latent_dim, input_dim)
        self.input_process = nn.Module()
        self.input_process.poseEmbedding = nn.Linear(input_dim, latent_dim)
        self.input_process2 = nn.Linear(2 * latent_dim, latent_dim)
        # the release's time MLP takes GELU for "gelu" and SiLU for anything else
        act = "gelu" if activation == "gelu" else "silu"
        self.time_embedding = TimestepEmbedding(
            latent_dim, latent_dim, act, cond_proj_dim=cond_proj_dim
        )
        self.time_proj = Timesteps(latent_dim, flip_sin_to_cos, freq_shift)
        self.cond_proj = Timesteps(latent_dim, flip_sin_to_cos, freq_shift)
        self.null_cond_embed = nn.Parameter(torch.zeros(seq_len, latent_dim * P))

    def _check(self, x: Tensor) -> None:
        want = (self.seq_len, self.num_parts * self.part_dim)
        if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != want:
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (B, {want[0]}, {want[1]}), found {found}")

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        d: Tensor | float | None = None,
        cond: Tensor | None = None,
        keep_cond: Tensor | None = None,
        *,
        seed: Tensor | None = None,
        cross_kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """Velocity ``(B, N, P * C)`` for latents ``x (B, N, P * C)`` at time ``t`` ((B,) or a
        scalar), step size ``d`` ((B,), a scalar or None), features ``cond (B, N, P * D)``
        (None: the null condition; rows with ``keep_cond`` False too) and ``seed
        (B, seed_frames, P * C)`` (the reference has no default; None here means zeros)."""
        self._check(x)
        B, N, _ = x.shape
        P, C, D = self.num_parts, self.part_dim, self.latent_dim
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
        emb = self.time_proj(t).to(x.dtype)
        if d is not None and self.step_size_cond:
            d = torch.as_tensor(d, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
            glob = self.time_embedding(emb, self.cond_proj(d).to(x.dtype))
        else:
            glob = self.time_embedding(emb)
        if seed is None:
            seed = x.new_zeros(B, self.seed_frames, P * C)
        if seed.shape != (B, self.seed_frames, P * C):
            raise ValueError(
                f"seed: expected shape {(B, self.seed_frames, P * C)}, found {tuple(seed.shape)}"
            )
        glob = glob + self.embed_text(seed.reshape(B, -1))

        h = self.input_process.poseEmbedding(x.view(B, N, P, C).transpose(1, 2))  # (B,P,N,D)
        h = self.input_process2(torch.cat([glob[:, None, None].expand_as(h), h], dim=-1))
        h = _rotate(h, *self._rope(N, D, h))  # over frames, on the whole token

        if cross_kv is None:
            cross_kv = self.cross_kv(cond, keep_cond, batch=B)
        tokens = h.reshape(B, N, P * D)  # the released raw view: not one frame per token
        for blk, kv in zip(self.cross_attn_blocks, cross_kv, strict=True):
            tokens = blk(tokens, kv)
        h = tokens.view(B, P, N, D)

        hd = D // self.num_heads
        rope_t, rope_s = self._rope(N, hd, h), self._rope(P, hd, h)
        for blk in self.mytimmblocks:
            h = blk(h, rope_t, rope_s)
        return self.output_process.poseFinal(h).transpose(1, 2).reshape(B, N, P * C)

    def cross_kv(
        self,
        cond: Tensor | None,
        keep_cond: Tensor | None = None,
        *,
        batch: int | None = None,
        n_frames: int | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Keys and values of the 3 cross-attention blocks for features ``cond (B, N, P * D)``
        (None: the null condition for ``batch`` rows); they do not depend on the latents, so
        a sampler computes them once. ``n_frames`` must be ``seq_len`` when given."""
        if n_frames is not None and n_frames != self.seq_len:
            raise ValueError(f"n_frames: the network has {self.seq_len} frames, found {n_frames}")
        null = self.null_cond_embed
        if cond is None:
            cond = null.expand(batch or 1, *null.shape)
        elif cond.ndim != 3 or tuple(cond.shape[1:]) != tuple(null.shape):
            raise ValueError(
                f"cond: expected shape (B, {null.shape[0]}, {null.shape[1]}), found "
                f"{tuple(cond.shape)}"
            )
        if keep_cond is not None:
            cond = torch.where(keep_cond[:, None, None], cond, null.to(cond.dtype))
        return [blk.cross_attn.keys_values(cond) for blk in self.cross_attn_blocks]

    def _rope(self, n: int, dim: int, like: Tensor):
        cache = self.__dict__.setdefault("_rope_cache", {})
        key = (n, dim, like.device, like.dtype, torch.is_inference_mode_enabled())
        if key not in cache:
            cache[key] = _rope_table(n, dim, like.device, like.dtype)
        return cache[key]


# ----- condition encoder ---------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """The reference's timm-style 1-D residual block: conv-BN-LeakyReLU-conv-BN plus a
    (strided conv + BN) shortcut, then LeakyReLU (slope 0.01)."""

    def __init__(self, c_in: int, c_out: int, stride: int, pad: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 15, stride=stride, padding=pad)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 15, padding=7)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.downsample = (
            nn.Sequential(
                nn.Conv1d(c_in, c_out, 15, stride=stride, padding=pad), nn.BatchNorm1d(c_out)
            )
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.leaky_relu(self.bn1(self.conv1(x)))))
        return F.leaky_relu(out + (x if self.downsample is None else self.downsample(x)))


class _WavEncoder(nn.Module):
    # (stride, padding, shortcut conv) per block; channels out/4, out/4, out/4, out/2, out/2,
    # out. The first block's 1700-sample padding and the strides (5*6*6*3 = 540 samples per
    # step) are the released ones.
    BLOCKS = (
        (5, 1700, True),
        (6, 0, True),
        (1, 7, False),
        (6, 0, True),
        (1, 7, False),
        (3, 0, True),
    )

    def __init__(self, out_dim: int, audio_in: int) -> None:
        super().__init__()
        chans = (out_dim // 4,) * 3 + (out_dim // 2,) * 2 + (out_dim,)
        c_in, blocks = audio_in, []
        for c, (stride, pad, down) in zip(chans, self.BLOCKS, strict=True):
            blocks.append(_BasicBlock(c_in, c, stride, pad, down))
            c_in = c
        self.feat_extractor = nn.Sequential(*blocks)


class ReferenceModalityEncoder(nn.Module):
    """The released ``ModalityEncoder`` (``onset+amplitude`` audio + FastText words).

    Args (the yaml's ``model.modality_encoder.params`` plus the word table's size):
        vocab_size, word_dim: the word table (``vocab.pkl``'s ``word_embedding_weights``,
            11195 x 300 for BEAT2).
        audio_dim: audio and word feature width (256).
        audio_in: audio channels (2: amplitude envelope, onset impulses).
        latent_dim, use_exp: the fused width is ``latent_dim * parts`` (768).
        target_length: motion frames per window (128); the audio features are cut or padded
            (repeating the last step) to it.
        squeeze_scale: the tokenizer's downsampling; features are average-pooled by it.

    ``forward(audio (B, S, 2), words (B, target_length) int64) -> (B, target_length /
    squeeze_scale, latent_dim * parts)``.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        word_dim: int = 300,
        audio_dim: int = 256,
        audio_in: int = 2,
        latent_dim: int = 256,
        target_length: int = 128,
        use_exp: bool = False,
        squeeze_scale: int = 4,
    ) -> None:
        super().__init__()
        self.target_length, self.squeeze_scale = target_length, squeeze_scale
        self.WavEncoder = _WavEncoder(audio_dim, audio_in)
        self.text_pre_encoder_body = nn.Embedding(vocab_size, word_dim)
        self.text_encoder_body = nn.Linear(word_dim, audio_dim)
        self.mix_audio_text = nn.Linear(2 * audio_dim, latent_dim * (4 if use_exp else 3))

    def forward(self, audio: Tensor, words: Tensor) -> Tensor:
        if audio.ndim != 3 or words.ndim != 2 or words.shape[1] != self.target_length:
            raise ValueError(
                f"audio (B, S, C) and words (B, {self.target_length}) expected, found "
                f"{tuple(audio.shape)} and {tuple(words.shape)}"
            )
        a = self.WavEncoder.feat_extractor(audio.transpose(1, 2))  # (B, audio_dim, ~L)
        L = self.target_length
        if a.shape[2] < L:  # the reference's ExactLengthAdjuster: repeat the last step
            a = torch.cat([a, a[:, :, -1:].expand(-1, -1, L - a.shape[2])], dim=2)
        a = a[:, :, :L].transpose(1, 2)
        w = self.text_encoder_body(self.text_pre_encoder_body(words))
        h = self.mix_audio_text(torch.cat([a, w], dim=2))
        return F.avg_pool1d(h.transpose(1, 2), self.squeeze_scale).transpose(1, 2)


# ----- the released model ----------------------------------------------------------------------

# denoiser / modality-encoder keys of the reference yaml that change nothing at inference
_IGNORED = {
    "denoiser": {"dropout", "n_seed"},  # dropout: eval; n_seed is only tested against 0
    # raw_audio and spatial_temporal are checked (only False / True are supported)
    "modality_encoder": {"data_path", "t_fix_pre", "audio_fps", "spatial_temporal", "raw_audio"},
}
# released weights with no part in the computation: the unused positional table and timestep
# MLP, and each spatial-temporal block's norm1
_UNUSED_KEY = re.compile(
    r"^denoiser\.(sequence_pos_encoder\.pe|embed_timestep\..*|mytimmblocks\.\d+\.norm1\..*)$"
)
# buffers the reference stores and we recompute (rotary frequencies; BatchNorm's step count)
_DERIVED_KEY = re.compile(r"(\.inv_freq|\.num_batches_tracked)$")


def read_reference_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The saved config of a released GestureLSM, from its yaml (``configs_new/*.yaml``) or the
    equivalent dict: ``{"denoiser": {...}, "modality_encoder": {...}, "pre_frames",
    "pose_length", "squeeze_scale", "latent_scale", "guidance_scale", "n_steps"}``. The word
    table size is not in the yaml: ``modality_encoder.vocab_size`` / ``word_dim`` come from the
    checkpoint (:meth:`GestureLSM.from_reference_checkpoint`)."""
    where = "config"
    if isinstance(config, str | Path):
        where = str(config)
        try:
            config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{where}: cannot read the GestureLSM yaml ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(config).__name__}")
    if {"denoiser", "modality_encoder"} <= set(config):  # already in our form
        return dict(config)

    def get(path: str):
        node: Any = config
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"{where}: missing key {path!r}")
            node = node[k]
        # the yaml is read by OmegaConf upstream: resolve its ${a.b} references
        m = re.fullmatch(r"\$\{([\w.]+)\}", node) if isinstance(node, str) else None
        return get(m.group(1)) if m else node

    out: dict[str, Any] = {}
    for part, cls in (
        ("denoiser", ReferenceGestureDenoiser),
        ("modality_encoder", ReferenceModalityEncoder),
    ):
        params = get(f"model.{part}.params")
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: 'model.{part}.params' must be a mapping")
        known = set(inspect.signature(cls.__init__).parameters) - {"self"} | _IGNORED[part]
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"{where}: model.{part}.params: unsupported key(s) {unknown}")
        if part == "modality_encoder" and params.get("raw_audio"):
            raise ConfigError(
                f"{where}: model.modality_encoder.params.raw_audio (WavLM features) is not "
                "supported"
            )
        if part == "modality_encoder" and not params.get("spatial_temporal", False):
            raise ConfigError(
                f"{where}: model.modality_encoder.params.spatial_temporal must be true (the "
                "denoiser attends to latent_dim x parts wide features)"
            )
        out[part] = {k: get(f"model.{part}.params.{k}") for k in params if k not in _IGNORED[part]}
    out["modality_encoder"]["squeeze_scale"] = get("vqvae_squeeze_scale")
    for key, path in (
        ("pre_frames", "pre_frames"),
        ("pose_length", "pose_length"),
        ("squeeze_scale", "vqvae_squeeze_scale"),
        ("latent_scale", "vqvae_latent_scale"),
        ("guidance_scale", "model.guidance_scale"),
        ("n_steps", "model.n_steps"),
    ):
        out[key] = get(path)
    return out


class GestureLSM(nn.Module):
    """A released GestureLSM generator (condition encoder + denoiser) in our conventions.

    Build it with :meth:`from_reference_checkpoint`; the constructor takes the saved config
    (:func:`read_reference_config` plus the word table size). Latents are ``(B, N, P * C)``
    scaled by ``1 / latent_scale`` (the reference's ``vqvae_latent_scale``), time runs from
    noise (0) to data (1).
    """

    def __init__(
        self,
        *,
        denoiser: dict[str, Any],
        modality_encoder: dict[str, Any],
        pre_frames: int = 4,
        pose_length: int = 128,
        squeeze_scale: int = 4,
        latent_scale: float = 5.0,
        guidance_scale: float = 2.0,
        n_steps: int = 2,
    ) -> None:
        super().__init__()
        self.config = dict(
            denoiser=dict(denoiser),
            modality_encoder=dict(modality_encoder),
            pre_frames=pre_frames,
            pose_length=pose_length,
            squeeze_scale=squeeze_scale,
            latent_scale=latent_scale,
            guidance_scale=guidance_scale,
            n_steps=n_steps,
        )
        try:
            self.modality_encoder = ReferenceModalityEncoder(**modality_encoder)
            self.denoiser = ReferenceGestureDenoiser(**denoiser)
        except TypeError as e:
            raise ConfigError(f"GestureLSM config: {e}") from None
        den = self.denoiser
        if pose_length != den.seq_len * squeeze_scale or pre_frames != den.seed_frames:
            raise ConfigError(
                f"GestureLSM config: pose_length {pose_length} must be seq_len {den.seq_len} x "
                f"squeeze_scale {squeeze_scale}, and pre_frames {pre_frames} must equal the "
                f"denoiser's embed_context_multiplier {den.seed_frames}"
            )
        # the first window's seed latents (the reference test loop takes them from the ground
        # truth; an import stores the tokenizer's latents of the mean pose here)
        self.register_buffer("first_seed", torch.zeros(pre_frames, den.num_parts * den.part_dim))
        if self.modality_encoder.target_length != pose_length:
            raise ConfigError(
                f"GestureLSM config: modality_encoder.target_length "
                f"{self.modality_encoder.target_length} must equal pose_length {pose_length}"
            )

    @property
    def encoder(self) -> ReferenceModalityEncoder:
        return self.modality_encoder

    @property
    def seed_frames(self) -> int:
        return self.denoiser.seed_frames

    # ----- import --------------------------------------------------------------------------

    @classmethod
    def from_reference_checkpoint(
        cls, ckpt_path: str | Path, config: str | Path | dict[str, Any]
    ) -> GestureLSM:
        """Load a released generator checkpoint (``{"model_state_dict": ...}``, keys prefixed
        ``module.``; read with ``torch.load(weights_only=True)``) with its yaml (or the dict
        from :func:`read_reference_config`). Every weight the computation uses must be present
        with its released shape; the unused ones (``norm1`` of each block, the positional table,
        the old timestep MLP) are dropped, and any other key is an error."""
        from motion_tokenizers.convert import read_reference_state_dict

        cfg = read_reference_config(config)
        state = read_reference_state_dict(ckpt_path)
        table = state.get("modality_encoder.text_pre_encoder_body.weight")
        if table is None or table.ndim != 2:
            raise ConfigError(
                f"{ckpt_path}: no word table 'modality_encoder.text_pre_encoder_body.weight'"
            )
        cfg["modality_encoder"] = {
            **cfg["modality_encoder"],
            "vocab_size": table.shape[0],
            "word_dim": table.shape[1],
        }
        model = cls(**cfg)
        model.load_reference_state_dict(state, ckpt_path)
        return model.eval()

    def load_reference_state_dict(self, state: dict[str, Tensor], source: str | Path) -> None:
        """Load released weights (``module.`` already stripped) strictly, dropping the unused
        ones; the recomputed buffers must agree with the released ones."""
        from gesture_apps.runtime.checkpoint import check_finite

        own = {k: v for k, v in self.state_dict().items() if k != "first_seed"}
        used, derived = {}, []
        for k, v in state.items():
            if _UNUSED_KEY.match(k):
                continue
            if _DERIVED_KEY.search(k) and k not in own:
                derived.append((k, v))
                continue
            used[k] = v
        missing = sorted(set(own) - set(used))
        unexpected = sorted(set(used) - set(own))
        if missing or unexpected:
            raise ConfigError(
                f"{source}: does not match the config's GestureLSM: missing keys "
                f"{missing[:6]}, unexpected keys {unexpected[:6]}"
            )
        for k, v in used.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ConfigError(
                    f"{source}: {k!r} has shape {tuple(v.shape)}, the config gives "
                    f"{tuple(own[k].shape)}"
                )
        for k, v in derived:
            if k.endswith("inv_freq"):
                want = 1.0 / (
                    10000 ** (torch.arange(0, 2 * v.numel(), 2).float() / (2 * v.numel()))
                )
                if not torch.allclose(v.float().cpu(), want, rtol=1e-6, atol=0):
                    raise ConfigError(f"{source}: {k!r} is not the standard rotary table")
        self.load_state_dict(used, strict=False)  # strict above, first_seed aside
        check_finite(self, source)

    # ----- the reference's entry points, in (B, N, C) conventions ------------------------------

    def condition(self, audio: Tensor, words: Tensor) -> Tensor:
        """``audio (B, S, 2)`` onset+amplitude at 16 kHz + ``words (B, pose_length)`` ->
        features ``(B, N, P * latent_dim)`` (the reference ``ModalityEncoder.forward``)."""
        return self.modality_encoder(audio, words)

    def velocity(
        self, x: Tensor, t: Tensor, d: Tensor | None, seed: Tensor, cond: Tensor | None
    ) -> Tensor:
        """``x (B, N, C)``, ``t (B,)`` (or one value for all), step size ``d`` or None, ``seed
        (B, pre_frames, C)``, features ``cond`` (None: the null condition) -> ``(B, N, C)``
        (the reference ``GestureDenoiser.forward``)."""
        return self.denoiser(x, t, d, cond, seed=seed)

    def guided_velocity(
        self,
        x: Tensor,
        t: Tensor,
        d: Tensor | None,
        seed: Tensor,
        cond: Tensor,
        guidance: float,
        cross_kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """Classifier-free guidance as released (``apply_classifier_free_guidance``): for
        ``guidance <= 1`` the conditional velocity alone, else ``v_null + g (v_cond - v_null)``
        with the conditional and null rows in one doubled batch. ``cross_kv``: keys and values
        of ``[cond | null]`` precomputed by :meth:`guidance_kv` (same result)."""
        if guidance <= 1.0:
            return self.denoiser(x, t, d, cond, seed=seed, cross_kv=cross_kv)
        B = x.shape[0]
        if cross_kv is None:
            cross_kv = self.guidance_kv(cond)
        t2 = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B).repeat(2)
        d2 = None
        if d is not None:
            d2 = torch.as_tensor(d, dtype=x.dtype, device=x.device).reshape(-1).expand(B).repeat(2)
        v = self.denoiser(
            torch.cat([x, x]), t2, d2, None, seed=torch.cat([seed, seed]), cross_kv=cross_kv
        )
        v_cond, v_null = v.chunk(2)
        return v_null + guidance * (v_cond - v_null)

    def guidance_kv(self, cond: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Cross-attention keys and values of ``[cond | null condition]``."""
        both = torch.cat([cond, self.denoiser.null_cond_embed.to(cond.dtype).expand_as(cond)])
        return self.denoiser.cross_kv(both)

    @torch.no_grad()
    def sample(
        self,
        audio: Tensor,
        words: Tensor,
        seed: Tensor,
        noise: Tensor,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """One window as the released ``GestureLSM.forward`` samples it, from the given initial
        ``noise (B, N, C)``: Euler steps on ``linspace(1e-8, 1 - 1e-8, steps + 1)`` with step
        size ``1 / steps`` as the shortcut condition and guidance on every step -> ``(B, N, C)``
        scaled latents. Defaults: the yaml's ``n_steps`` and ``guidance_scale``."""
        steps = int(self.config["n_steps"] if steps is None else steps)
        g = float(self.config["guidance_scale"] if guidance is None else guidance)
        if steps < 1 or not math.isfinite(g):
            raise ValueError(f"steps must be >= 1 and guidance finite, found {steps}, {g}")
        cond = self.condition(audio, words)
        kv = self.guidance_kv(cond) if g > 1.0 else self.denoiser.cross_kv(cond)
        x = noise
        ts = torch.linspace(1e-8, 1 - 1e-8, steps + 1, device=x.device)
        d = torch.tensor(1 / steps, device=x.device)
        for k in range(steps):
            v = self.guided_velocity(x, ts[k], d, seed, cond, g, cross_kv=kv)
            x = x + (ts[k + 1] - ts[k]) * v
        return x

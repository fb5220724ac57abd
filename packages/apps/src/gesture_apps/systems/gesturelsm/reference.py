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

import torch
import torch.nn.functional as F
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

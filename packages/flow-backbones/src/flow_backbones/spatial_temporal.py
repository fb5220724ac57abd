"""GestureLSM's spatial-temporal denoiser, with the audio cross-attention frame-aligned.

Liu et al., "GestureLSM: Latent Shortcut based Co-Speech Gesture Generation with Spatial-Temporal
Modeling" (ICCV 2025). Motion latents of ``P`` body parts (upper, hands, lower + translation)
over ``N`` latent frames go through

1. a per-token input projection, concatenated with a global vector (time/step-size embedding
   plus a projection of the seed frames) and projected back to the model width;
2. cross-attention blocks from *frame tokens* (all parts of one frame, ``P * D`` wide) to
   frame-aligned audio/text features, with a learned null feature for classifier-free guidance;
3. spatial-temporal blocks: temporal attention over frames for each part, spatial attention over
   parts for each frame, then an MLP;
4. a per-token output projection.

The fix: the reference builds the frame tokens with ``x.view(B, N, P * D)`` on a
``(B, P, N, D)`` tensor, so its query token ``j`` holds ``P`` consecutive frames of one part
rather than frame ``j`` of every part, and the cross-attention is not aligned with the audio
frames. Here the parts axis is moved next to the channels first (:func:`frames_to_tokens`), and
queries and keys carry rotary positions on one shared frame clock.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ._attention import Attention
from ._hub import HubModule
from .embeddings import RotaryEmbedding, TimeEmbedding
from .errors import FlowInputError
from .flow import check_t, expand_t


def frames_to_tokens(h: Tensor) -> Tensor:
    """``(B, P, N, D)`` -> ``(B, N, P * D)``: token ``n`` holds frame ``n`` of every part."""
    B, P, N, D = h.shape
    return h.permute(0, 2, 1, 3).reshape(B, N, P * D)


def tokens_to_frames(f: Tensor, parts: int) -> Tensor:
    """Inverse of :func:`frames_to_tokens`."""
    B, N, PD = f.shape
    return f.reshape(B, N, parts, PD // parts).permute(0, 2, 1, 3)


class _MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from frame tokens ``(B, N, dim)`` to features ``(B, S, kv_dim)``,
    then an MLP."""

    def __init__(self, dim: int, kv_dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.attn = Attention(dim, heads, kv_dim=kv_dim, qk_norm=False, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, int(dim * mlp_ratio), dropout)

    def keys_values(self, cond: Tensor, rope_k) -> tuple[Tensor, Tensor]:
        """The attention's keys and values for ``cond``; they depend on nothing else, so a
        sampler can compute them once for all its steps (``kv=``)."""
        return self.attn.keys_values(self.norm_kv(cond), rope_k)

    def forward(self, f: Tensor, cond: Tensor | None, rope_q, rope_k, kv=None) -> Tensor:
        if kv is None:
            kv = self.keys_values(cond, rope_k)
        f = f + self.attn(self.norm1(f), rope_q=rope_q, kv=kv)
        return f + self.mlp(self.norm2(f))


class SpatialTemporalBlock(nn.Module):
    """Temporal attention (per part, over frames), spatial attention (per frame, over parts),
    MLP; each pre-norm with its own residual. Works on ``(B, P, N, D)``."""

    def __init__(self, dim: int, heads: int, ff_size: int, dropout: float) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = Attention(dim, heads, qk_norm=False, dropout=dropout)
        self.norm_s = nn.LayerNorm(dim)
        self.attn_s = Attention(dim, heads, qk_norm=False, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, ff_size, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, rope_t, rope_s) -> Tensor:
        B, P, N, D = h.shape
        x = h.reshape(B * P, N, D)
        x = x + self.drop(self.attn_t(self.norm_t(x), rope_q=rope_t, rope_k=rope_t))
        x = x.reshape(B, P, N, D).transpose(1, 2).reshape(B * N, P, D)
        x = x + self.drop(self.attn_s(self.norm_s(x), rope_q=rope_s, rope_k=rope_s))
        x = x.reshape(B, N, P, D).transpose(1, 2)
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class SpatialTemporalDenoiser(HubModule):
    """Velocity (or shortcut average velocity) for multi-part motion latents.

    Args:
        num_parts: body parts ``P`` (3 in GestureLSM: upper, hands, lower + translation).
        part_dim: latent channels per part ``C`` (128).
        latent_dim: width ``D`` of a part token (256).
        ff_size: MLP width of the spatial-temporal blocks (1024).
        num_layers: spatial-temporal blocks (8).
        num_heads: heads of the spatial-temporal attention (4).
        cross_layers, cross_heads, cross_mlp_ratio: the frame-token cross-attention blocks
            (3, 4, 4); their width is ``P * D``.
        cond_dim: width of the frame-aligned condition features (768).
        max_cond_len: longest condition accepted; the learned null condition has this length.
        seed_frames: latent frames of the previous window used as a global seed vector (4;
            0 disables the seed).
        dropout: dropout rate (0.1).
        step_size_cond: condition on the shortcut step size ``d``.
        time_scale: ``t`` multiplier before the sinusoid (GestureLSM: 1, unscaled).

    ``forward(x, t, d, cond, keep_cond, seed=None)`` matches the
    :data:`~flow_backbones.samplers.ConditionalModel` protocol when ``cond`` is a tensor or a
    dict ``{"features": (B, S, cond_dim), "seed": (B, seed_frames, P * C)}``.
    """

    def __init__(
        self,
        *,
        num_parts: int = 3,
        part_dim: int = 128,
        latent_dim: int = 256,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 4,
        cross_layers: int = 3,
        cross_heads: int = 4,
        cross_mlp_ratio: float = 4.0,
        cond_dim: int = 768,
        max_cond_len: int = 32,
        seed_frames: int = 4,
        dropout: float = 0.1,
        step_size_cond: bool = True,
        time_scale: float = 1.0,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if latent_dim % num_heads or (latent_dim // num_heads) % 2:
            raise FlowInputError(
                f"latent_dim: expected a multiple of num_heads={num_heads} with an even head "
                f"width, found {latent_dim}"
            )
        wide = num_parts * latent_dim
        if wide % cross_heads or (wide // cross_heads) % 2:
            raise FlowInputError(
                f"cross_heads: num_parts * latent_dim = {wide} must split into even-width heads, "
                f"found cross_heads={cross_heads}"
            )
        self.num_parts, self.part_dim, self.latent_dim = num_parts, part_dim, latent_dim
        self.cond_dim, self.max_cond_len, self.seed_frames = cond_dim, max_cond_len, seed_frames

        self.in_proj = nn.Linear(part_dim, latent_dim)
        self.time_embed = TimeEmbedding(
            latent_dim, freq_dim=latent_dim, step_size_cond=step_size_cond, scale=time_scale
        )
        self.seed_proj = (
            nn.Linear(seed_frames * num_parts * part_dim, latent_dim) if seed_frames else None
        )
        self.token_proj = nn.Linear(2 * latent_dim, latent_dim)
        # zeros like the reference; the model learns what "no audio" looks like
        self.null_cond = nn.Parameter(torch.zeros(max_cond_len, cond_dim))
        self.cross_blocks = nn.ModuleList(
            [
                CrossAttentionBlock(wide, cond_dim, cross_heads, cross_mlp_ratio, dropout)
                for _ in range(cross_layers)
            ]
        )
        self.blocks = nn.ModuleList(
            [
                SpatialTemporalBlock(latent_dim, num_heads, ff_size, dropout)
                for _ in range(num_layers)
            ]
        )
        self.out_proj = nn.Linear(latent_dim, part_dim)
        self.rope = RotaryEmbedding(latent_dim // num_heads, theta=rope_theta)
        self.rope_cross = RotaryEmbedding(wide // cross_heads, theta=rope_theta)

    @classmethod
    def gesturelsm(cls, **overrides) -> SpatialTemporalDenoiser:
        """GestureLSM's ``shortcut_rvqvae_128`` denoiser: 3 parts x 128, width 256, 8 layers,
        4 heads, 3 cross blocks at 768, 4 seed frames, 32-frame windows."""
        return cls(**cls.preset_config("gesturelsm", **overrides))

    @classmethod
    def tiny(cls, **overrides) -> SpatialTemporalDenoiser:
        """3 parts x 4 channels, width 16, 2 layers, 1 cross block; for CPU tests."""
        return cls(**cls.preset_config("tiny", **overrides))

    @classmethod
    def preset_config(cls, name: str, **overrides) -> dict:
        """Every constructor argument of preset ``name`` (``gesturelsm`` or ``tiny``) with
        ``overrides`` applied, without building the network: what a saved config stores so
        that it describes the network whatever the presets' defaults become."""
        if name not in ("gesturelsm", "tiny"):
            raise ValueError(f"unknown SpatialTemporalDenoiser preset {name!r}")
        params = inspect.signature(cls.__init__).parameters.values()
        cfg = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        if name == "tiny":
            cfg.update(
                num_parts=3,
                part_dim=4,
                latent_dim=16,
                ff_size=32,
                num_layers=2,
                num_heads=2,
                cross_layers=1,
                cross_heads=2,
                cond_dim=12,
                max_cond_len=16,
                seed_frames=2,
                dropout=0.0,
            )
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise TypeError(f"SpatialTemporalDenoiser: unknown arguments {sorted(unknown)}")
        cfg.update(overrides)
        return cfg

    def _split_cond(self, cond, seed):
        if isinstance(cond, dict):
            unknown = set(cond) - {"features", "seed"}
            if unknown:
                raise FlowInputError(
                    f"cond: unknown key(s) {sorted(unknown)}; expected 'features' and 'seed'"
                )
            return cond.get("features"), cond.get("seed", seed)
        return cond, seed

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        d: Tensor | float | None = None,
        cond: Tensor | dict[str, Tensor] | None = None,
        keep_cond: Tensor | None = None,
        *,
        seed: Tensor | None = None,
        cross_kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """Velocity for motion latents.

        Args:
            x: ``(B, N, P * C)`` noisy latents, parts concatenated on channels.
            t: ``(B,)`` or scalar time in ``[0, 1]``.
            d: ``(B,)`` or scalar shortcut step size (None = 0).
            cond: ``(B, S, cond_dim)`` features (S <= max_cond_len; S frames span the same
                time as the N latent frames), or a dict with ``"features"`` and ``"seed"``;
                None = the null condition for every row.
            keep_cond: ``(B,)`` bool; False rows use the null condition.
            seed: ``(B, seed_frames, P * C)`` latent frames preceding the window (None = zeros).
            cross_kv: the cross-attention keys and values from :meth:`cross_kv`; when given,
                ``cond``'s features and ``keep_cond`` are not used (its seed still is).

        Returns:
            ``(B, N, P * C)``.
        """
        P, C = self.num_parts, self.part_dim
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != P * C:
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise FlowInputError(f"x: expected shape (B, N, {P * C}), found {found}")
        B, N, _ = x.shape
        t = expand_t(t, B, x.device)
        check_t(t, "t")
        d = None if d is None else expand_t(d, B, x.device)
        features, seed = self._split_cond(cond, seed)

        h = self.in_proj(x.view(B, N, P, C).permute(0, 2, 1, 3))  # (B, P, N, D)
        glob = self.time_embed(t, d)
        if self.seed_proj is not None:
            want = (B, self.seed_frames, P * C)
            if seed is None:
                seed = x.new_zeros(want)
            elif seed.shape != want:
                raise FlowInputError(f"seed: expected shape {want}, found {tuple(seed.shape)}")
            glob = glob + self.seed_proj(seed.reshape(B, -1))
        h = self.token_proj(torch.cat([h, glob[:, None, None].expand_as(h)], dim=-1))

        if cross_kv is None:
            cross_kv = self.cross_kv(features, keep_cond, batch=B, n_frames=N)
        elif len(cross_kv) != len(self.cross_blocks) or cross_kv[0][0].shape[0] != B:
            raise FlowInputError(
                f"cross_kv: expected {len(self.cross_blocks)} (keys, values) pairs of batch {B} "
                "from cross_kv()"
            )
        S = cross_kv[0][0].shape[2]
        rope_q, _ = self._rope_cross(N, S, x.device)
        f = frames_to_tokens(h)  # (B, N, P * D), frame-aligned with the features
        for blk, kv in zip(self.cross_blocks, cross_kv, strict=True):
            f = self._run_block(blk, f, None, rope_q, None, kv)
        h = tokens_to_frames(f, P)

        rope_t, rope_s = self._rope_frames(N, x.device)
        for blk in self.blocks:
            h = self._run_block(blk, h, rope_t, rope_s)
        return self.out_proj(h).permute(0, 2, 1, 3).reshape(B, N, P * C)

    def cross_kv(
        self,
        cond: Tensor | dict[str, Tensor] | None,
        keep_cond: Tensor | None = None,
        *,
        batch: int | None = None,
        n_frames: int,
    ) -> list[tuple[Tensor, Tensor]]:
        """Keys and values of every cross-attention block for a condition, to pass to
        :meth:`forward` as ``cross_kv=`` (same result, computed once for all the steps of a
        sampler, or for many windows in one batch).

        Args:
            cond: ``(B, S, cond_dim)`` features or a dict with ``"features"`` (a ``"seed"`` is
                ignored); None = the null condition.
            keep_cond: ``(B,)`` bool; False rows use the null condition.
            batch: rows (checked against the features; default: theirs, or 1 for the null
                condition).
            n_frames: latent frames ``N`` of the windows the keys will be attended from.

        Returns:
            one ``(keys, values)`` pair per cross block, each ``(B, heads, S, head_dim)``.
        """
        features, _ = self._split_cond(cond, None)
        if batch is None:
            batch = 1 if features is None else features.shape[0]
        feats = self._cond_features(features, keep_cond, batch, n_frames)
        _, rope_k = self._rope_cross(n_frames, feats.shape[1], feats.device)
        return [blk.keys_values(feats, rope_k) for blk in self.cross_blocks]

    def _cond_features(
        self, features: Tensor | None, keep_cond: Tensor | None, B: int, N: int
    ) -> Tensor:
        """``(B, S, cond_dim)`` features with the null condition where not kept."""
        if features is None:
            S = min(N, self.max_cond_len)
            # a copy, not a view: a view of a parameter made under no_grad has requires_grad
            # but no grad_fn, which module hooks (FlopCounterMode's tracker) cannot handle
            return self.null_cond[:S].expand(B, S, self.cond_dim).clone()
        if features.ndim != 3 or features.shape[0] != B or features.shape[2] != self.cond_dim:
            raise FlowInputError(
                f"cond: expected shape ({B}, S, {self.cond_dim}), found {tuple(features.shape)}"
            )
        S = features.shape[1]
        if self.max_cond_len < S:
            raise FlowInputError(
                f"cond: expected at most max_cond_len={self.max_cond_len} frames, found {S}"
            )
        feats = features
        if keep_cond is not None:
            if keep_cond.shape != (B,) or keep_cond.dtype != torch.bool:
                raise FlowInputError(
                    f"keep_cond: expected a bool tensor of shape ({B},), found "
                    f"{tuple(keep_cond.shape)} {keep_cond.dtype}"
                )
            null = self.null_cond[:S].to(feats.dtype).expand_as(feats)
            feats = torch.where(keep_cond[:, None, None], feats, null)
        return feats

    def _rope_cross(self, N: int, S: int, device) -> tuple:
        """Rotary (cos, sin) of the queries (N frames) and keys (S features) on one frame
        clock: feature ``s`` sits at latent frame ``s * N / S``."""

        def make():
            frame_pos = torch.arange(N, device=device, dtype=torch.float32)
            cond_pos = torch.arange(S, device=device, dtype=torch.float32) * (N / S)
            return self.rope_cross.freqs(frame_pos), self.rope_cross.freqs(cond_pos)

        return self._cached(("cross", N, S, device), make)

    def _rope_frames(self, N: int, device) -> tuple:
        """Rotary (cos, sin) over the N frames and over the parts."""

        def make():
            frame_pos = torch.arange(N, device=device, dtype=torch.float32)
            parts = torch.arange(self.num_parts, device=device)
            return self.rope.freqs(frame_pos), self.rope.freqs(parts)

        return self._cached(("frames", N, device), make)

    def _cached(self, key, make):
        # position tables depend only on sizes; an inference-mode tensor cannot be saved for
        # backward, so those made under inference_mode are kept apart
        key = (*key, torch.is_inference_mode_enabled())
        cache = self.__dict__.setdefault("_rope_cache", {})
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[key] = make()
        return cache[key]

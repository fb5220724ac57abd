"""DiT: a single-stream diffusion transformer with AdaLN-Zero, for sequences and video latents.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv:2212.09748): every
block is modulated by the time embedding through AdaLN-Zero (zero-initialised, so blocks start
as the identity). Optional cross-attention to condition tokens follows PixArt-alpha (Chen et al.
2023, arXiv:2310.00426); channel-concatenated conditions (e.g. a reference latent, a pose map)
are stacked onto the input channels before the patch projection.

Inputs are either 1D sequences ``(B, N, C)`` with 1D rotary positions, or video latents
``(B, C, T, H, W)`` cut into ``patch_size`` patches with 3D (time, height, width) rotary
positions; ``reference_frames`` gives leading reference frames a zero temporal position.

Video inputs may also take per-frame condition tokens (``frame_cond_dim``): OmniHuman (Lin et
al. 2025, arXiv:2502.01061) injects audio by a cross-attention in which the video tokens of one
frame attend only to the audio features of that frame, so each frame moves with its own sound.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero
from torch import Tensor, nn

from ._attention import Attention, zero_init
from ._hub import HubModule
from .embeddings import RotaryEmbedding, TimeEmbedding, grid_positions_3d
from .errors import FlowInputError
from .flow import check_t, expand_t


class FrameCrossAttention(nn.Module):
    """Frame-aligned cross-attention: the video tokens of temporal position ``k`` attend only to
    the ``F`` condition tokens of position ``k``.

    ``forward(h (B, L, dim), frame_tokens (B, T_tok, F, frame_cond_dim)) -> (B, L, dim)``, the
    residual update; ``L = T_tok * tokens_per_position`` in frame-major order (as
    :meth:`DiT._tokens` lays them out). The output projection starts at zero, so a new branch
    (built fresh, or added to a DiT loaded from a checkpoint without it) changes nothing.
    """

    def __init__(self, dim: int, heads: int, frame_cond_dim: int, qk_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, kv_dim=frame_cond_dim, qk_norm=qk_norm)
        zero_init(self.attn.to_out)

    def forward(self, h: Tensor, frame_tokens: Tensor) -> Tensor:
        B, L, D = h.shape
        _, T, F, C = frame_tokens.shape
        # one attention problem per (sample, temporal position): a reshape, not a loop over
        # frames; tokens are frame-major, so each group of L // T rows is one position
        q = self.norm(h).reshape(B * T, L // T, D)
        out = self.attn(q, frame_tokens.reshape(B * T, F, C))
        return out.reshape(B, L, D)


class DiTBlock(nn.Module):
    """AdaLN-Zero self-attention, optional cross-attention, optional frame-aligned
    cross-attention, AdaLN-Zero feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_mult: float,
        cond_dim: int | None,
        qk_norm: bool,
        frame_cond_dim: int | None = None,
    ):
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim)
        zero_init(self.norm1.linear)
        self.attn = Attention(dim, heads, qk_norm=qk_norm)
        self.cross = None
        if cond_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, kv_dim=cond_dim, qk_norm=qk_norm)
        self.frame_cross = None
        if frame_cond_dim is not None:
            self.frame_cross = FrameCrossAttention(dim, heads, frame_cond_dim, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(
            dim, mult=int(ff_mult), activation_fn="gelu-approximate", inner_dim=int(dim * ff_mult)
        )

    def forward(self, h, temb, rope, tokens, tokens_mask, frame_tokens=None):
        x, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(h, emb=temb)
        h = h + gate_msa[:, None] * self.attn(x, rope_q=rope, rope_k=rope)
        if self.cross is not None:
            h = h + self.cross(self.norm_cross(h), tokens, key_mask=tokens_mask)
        if self.frame_cross is not None:
            h = h + self.frame_cross(h, frame_tokens)
        x = self.norm2(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return h + gate_mlp[:, None] * self.ff(x)


class DiT(HubModule):
    """Single-stream AdaLN-Zero transformer returning a velocity shaped like its input.

    Args:
        in_channels: channels ``C`` of ``x``.
        out_channels: output channels (default ``in_channels``).
        dim, depth, num_heads, ff_mult: transformer size.
        cond_dim: width of cross-attention condition tokens (None: no cross-attention).
        frame_cond_dim: width of per-frame condition tokens (audio features, say) that each
            block's frame-aligned cross-attention reads (None: no such branch; video only).
        concat_channels: channels of a condition concatenated to ``x`` (0: none).
        video: inputs are video latents ``(B, C, T, H, W)`` instead of sequences ``(B, N, C)``.
        patch_size: ``(pt, ph, pw)`` patch of video inputs.
        rope_axes: head channels rotating with (time, height, width) for video (default: a
            quarter for time, the rest split between height and width).
        step_size_cond, time_scale: see :class:`~flow_backbones.embeddings.TimeEmbedding`.

    ``forward(x, t, d, cond, keep_cond)`` matches the
    :data:`~flow_backbones.samplers.ConditionalModel` protocol, with ``cond`` a dict
    ``{"tokens": (B, S, cond_dim), "tokens_mask": (B, S) bool, "channels": like x,
    "frame_tokens": (B, T // pt, F, frame_cond_dim), "frame_keep": (B,) bool}`` (all
    optional).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        ff_mult: float = 4.0,
        cond_dim: int | None = None,
        frame_cond_dim: int | None = None,
        concat_channels: int = 0,
        video: bool = False,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        rope_axes: tuple[int, int, int] | None = None,
        qk_norm: bool = True,
        step_size_cond: bool = False,
        time_scale: float = 1000.0,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise FlowInputError(
                f"dim: expected a multiple of num_heads={num_heads} with an even head width, "
                f"found {dim}"
            )
        if frame_cond_dim is not None and (not video or frame_cond_dim < 1):
            raise FlowInputError(
                f"frame_cond_dim: expected None, or a width >= 1 with video=True (frame tokens "
                f"align with the frames of a video input), found {frame_cond_dim} with "
                f"video={video}"
            )
        hd = dim // num_heads
        self.frame_cond_dim = frame_cond_dim
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.cond_dim, self.concat_channels = cond_dim, concat_channels
        self.patch_size = tuple(patch_size)
        if rope_axes is None:
            at = 2 * max(1, hd // 8)  # a quarter of the head for time, even
            ah = 2 * ((hd - at) // 4)
            rope_axes = (at, ah, hd - at - ah)
        self.rope_axes = tuple(rope_axes)
        pt, ph, pw = self.patch_size
        cin = in_channels + concat_channels
        self.video = video
        patch = pt * ph * pw if video else 1
        self.in_proj = nn.Linear(cin * patch, dim)
        self.time_embed = TimeEmbedding(dim, step_size_cond=step_size_cond, scale=time_scale)
        self.null_token = nn.Parameter(torch.zeros(1, cond_dim)) if cond_dim is not None else None
        self.null_frame_token = (
            nn.Parameter(torch.zeros(1, frame_cond_dim)) if frame_cond_dim is not None else None
        )
        self.blocks = nn.ModuleList(
            [
                DiTBlock(dim, num_heads, ff_mult, cond_dim, qk_norm, frame_cond_dim)
                for _ in range(depth)
            ]
        )
        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        zero_init(self.norm_out.linear)
        self.out_proj = zero_init(nn.Linear(dim, self.out_channels * patch))
        self.rope1d = RotaryEmbedding(hd, theta=rope_theta)
        self.rope3d = RotaryEmbedding(hd, axes_dim=self.rope_axes, theta=rope_theta)

    @classmethod
    def tiny(cls, **overrides) -> DiT:
        """Width 32, 2 blocks, 4 heads, 4 input channels: a CPU-test size."""
        cfg = dict(in_channels=4, dim=32, depth=2, num_heads=4)
        cfg.update(overrides)
        return cls(**cfg)

    def _tokens(self, x: Tensor, reference_frames: int) -> tuple[Tensor, Tensor, tuple]:
        if x.ndim == 3:
            return self.in_proj(x), torch.arange(x.shape[1], device=x.device), ()
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch_size
        if T % pt or H % ph or W % pw:
            raise FlowInputError(
                f"x: video size (T, H, W) = {(T, H, W)} is not divisible by patch_size "
                f"{self.patch_size}"
            )
        g = (T // pt, H // ph, W // pw)
        # (B, C, T', pt, H', ph, W', pw) -> (B, T' H' W', pt ph pw C)
        p = x.reshape(B, C, g[0], pt, g[1], ph, g[2], pw).permute(0, 2, 4, 6, 3, 5, 7, 1)
        p = p.reshape(B, g[0] * g[1] * g[2], pt * ph * pw * C)
        ref = -(-reference_frames // pt)  # reference frames, in patches
        pos = grid_positions_3d(*g, reference_frames=ref, device=x.device)
        return self.in_proj(p), pos, g

    def _untokens(self, h: Tensor, grid: tuple) -> Tensor:
        if not grid:
            return self.out_proj(h)
        B = h.shape[0]
        pt, ph, pw = self.patch_size
        o = self.out_proj(h).reshape(B, *grid, pt, ph, pw, self.out_channels)
        o = o.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return o.reshape(B, self.out_channels, grid[0] * pt, grid[1] * ph, grid[2] * pw)

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        d: Tensor | float | None = None,
        cond: dict[str, Tensor] | None = None,
        keep_cond: Tensor | None = None,
        *,
        reference_frames: int = 0,
    ) -> Tensor:
        """Velocity shaped like ``x``.

        Args:
            x: ``(B, N, in_channels)`` sequence or ``(B, in_channels, T, H, W)`` video latent.
            t: ``(B,)`` or scalar time in ``[0, 1]``; ``d`` the step size (None = 0).
            cond: dict with optional ``"tokens"`` ``(B, S, cond_dim)``, ``"tokens_mask"``
                ``(B, S)`` bool and ``"channels"`` (``x``'s layout with ``concat_channels``);
                with ``frame_cond_dim``, optional ``"frame_tokens"``
                ``(B, T // pt, F, frame_cond_dim)``: ``F`` tokens per temporal token position
                (for ``pt > 1``, one group per ``pt`` frames), which only that position's video
                tokens attend to; leave out the reference frames' groups by passing
                ``(B, T // pt - ceil(reference_frames / pt), F, frame_cond_dim)`` (those
                positions then see the null frame token). Absent: every position sees the
                learned null frame token. ``"frame_keep"`` ``(B,)`` bool drops the frame
                tokens alone (False rows see the null frame token), for per-condition dropout.
            keep_cond: ``(B,)`` bool; False rows get the learned null token, zero channels and
                the null frame token.
            reference_frames: leading video frames that are reference images (temporal
                position 0).
        """
        want_ndim = 5 if self.video else 3
        if not isinstance(x, Tensor) or x.ndim != want_ndim:
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            layout = (
                f"(B, {self.in_channels}, T, H, W)" if self.video else f"(B, N, {self.in_channels})"
            )
            raise FlowInputError(f"x: expected shape {layout}, found {found}")
        ch_axis = -1 if x.ndim == 3 else 1
        if x.shape[ch_axis] != self.in_channels:
            raise FlowInputError(
                f"x: expected {self.in_channels} channels on axis {ch_axis}, found shape "
                f"{tuple(x.shape)}"
            )
        B = x.shape[0]
        t = expand_t(t, B, x.device)
        check_t(t, "t")
        d = None if d is None else expand_t(d, B, x.device)
        cond = dict(cond or {})
        unknown = set(cond) - {"tokens", "tokens_mask", "channels", "frame_tokens", "frame_keep"}
        if unknown:
            raise FlowInputError(
                f"cond: unknown key(s) {sorted(unknown)}; expected tokens, tokens_mask, "
                "channels, frame_tokens, frame_keep"
            )
        if keep_cond is not None and (keep_cond.shape != (B,) or keep_cond.dtype != torch.bool):
            raise FlowInputError(
                f"keep_cond: expected a bool tensor of shape ({B},), found "
                f"{tuple(keep_cond.shape)} {keep_cond.dtype}"
            )

        if self.concat_channels:
            ch = cond.get("channels")
            want = list(x.shape)
            want[ch_axis] = self.concat_channels
            if ch is None or list(ch.shape) != want:
                raise FlowInputError(
                    f"cond['channels']: expected shape {tuple(want)}, found "
                    f"{None if ch is None else tuple(ch.shape)}"
                )
            if keep_cond is not None:
                ch = ch * keep_cond.view(-1, *([1] * (x.ndim - 1))).to(ch.dtype)
            x = torch.cat([x, ch], dim=ch_axis)

        tokens, tokens_mask = None, None
        if self.cond_dim is not None:
            tokens = cond.get("tokens")
            if tokens is None:
                tokens = self.null_token.expand(B, 1, self.cond_dim)
            else:
                if tokens.ndim != 3 or tokens.shape[0] != B or tokens.shape[2] != self.cond_dim:
                    raise FlowInputError(
                        f"cond['tokens']: expected shape ({B}, S, {self.cond_dim}), found "
                        f"{tuple(tokens.shape)}"
                    )
                tokens_mask = cond.get("tokens_mask")
                S = tokens.shape[1]
                if tokens_mask is not None and (
                    tokens_mask.shape != (B, S) or tokens_mask.dtype != torch.bool
                ):
                    raise FlowInputError(
                        f"cond['tokens_mask']: expected a bool tensor of shape ({B}, {S}), "
                        f"found {tuple(tokens_mask.shape)} {tokens_mask.dtype}"
                    )
                if keep_cond is not None:
                    drop = ~keep_cond[:, None, None]
                    tokens = torch.where(drop, self.null_token.to(tokens.dtype), tokens)
                    if tokens_mask is not None:
                        # a dropped row sees only null tokens; keep them all visible
                        tokens_mask = tokens_mask | drop[:, :, 0]
        elif cond.get("tokens") is not None:
            raise FlowInputError("cond['tokens']: this DiT was built without cond_dim")

        h, pos, grid = self._tokens(x, reference_frames)
        frame = self._frame_tokens(cond, keep_cond, B, grid, reference_frames, h.dtype)
        rope = (self.rope3d if grid else self.rope1d).freqs(pos)
        temb = self.time_embed(t, d)
        for blk in self.blocks:
            h = self._run_block(blk, h, temb, rope, tokens, tokens_mask, frame)
        return self._untokens(self.norm_out(h, temb), grid)

    def _frame_tokens(
        self,
        cond: dict,
        keep_cond: Tensor | None,
        B: int,
        grid: tuple,
        reference_frames: int,
        dtype: torch.dtype,
    ) -> Tensor | None:
        """Checked ``cond["frame_tokens"]`` -> ``(B, T_tok, F, frame_cond_dim)`` with the null
        frame token in dropped rows and in left-out reference positions."""
        frame, frame_keep = cond.get("frame_tokens"), cond.get("frame_keep")
        if self.frame_cond_dim is None:
            if frame is not None or frame_keep is not None:
                key = "frame_tokens" if frame is not None else "frame_keep"
                raise FlowInputError(
                    f"cond[{key!r}]: this DiT was built without frame_cond_dim (frame tokens "
                    "need DiT(video=True, frame_cond_dim=...))"
                )
            return None
        Dc, T_tok = self.frame_cond_dim, grid[0]
        null = self.null_frame_token.to(dtype)
        if frame is None:
            return null.expand(B, T_tok, 1, Dc)
        ref = -(-reference_frames // self.patch_size[0])
        found = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__
        if (
            not isinstance(frame, Tensor)
            or frame.ndim != 4
            or frame.shape[0] != B
            or frame.shape[1] not in (T_tok, T_tok - ref)
            or frame.shape[2] < 1
            or frame.shape[3] != Dc
        ):
            pt = self.patch_size[0]
            also = f" or ({B}, {T_tok - ref}, F, {Dc}) without the reference frames" if ref else ""
            raise FlowInputError(
                f"cond['frame_tokens']: expected shape ({B}, {T_tok}, F, {Dc}) (F tokens for "
                f"each of the T // pt = {T_tok * pt} // {pt} temporal token positions){also}, "
                f"found {found}"
            )
        if frame_keep is not None and (
            not isinstance(frame_keep, Tensor)
            or frame_keep.shape != (B,)
            or frame_keep.dtype != torch.bool
        ):
            found = (
                f"{tuple(frame_keep.shape)} {frame_keep.dtype}"
                if isinstance(frame_keep, Tensor)
                else type(frame_keep).__name__
            )
            raise FlowInputError(
                f"cond['frame_keep']: expected a bool tensor of shape ({B},), found {found}"
            )
        keep = keep_cond
        if frame_keep is not None:
            keep = frame_keep if keep is None else keep & frame_keep
        frame = frame.to(dtype)
        if keep is not None:
            frame = torch.where(keep[:, None, None, None], frame, null)
        if frame.shape[1] != T_tok:  # reference positions left out: they see the null token
            F = frame.shape[2]
            frame = torch.cat([null.expand(B, T_tok - frame.shape[1], F, Dc), frame], dim=1)
        return frame

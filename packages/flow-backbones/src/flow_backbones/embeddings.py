"""Time and position embeddings shared by the backbones.

* :class:`TimeEmbedding`: diffusers ``Timesteps`` + ``TimestepEmbedding`` with an optional,
  zero-initialised step-size term. That is how shortcut models (Frans et al. 2024, "One Step
  Diffusion via Shortcut Models", arXiv:2410.12557) and GestureLSM condition on the step ``d``:
  the term starts at zero, so a plain flow model and its shortcut version agree at init.
* :class:`RotaryEmbedding`: rotary positions (RoFormer, arXiv:2104.09864) for 1D positions
  ``(L,)`` or axis-split 3D positions ``(L, 3)`` = (time, height, width).
* :func:`sincos_1d`: fixed sin-cos positions (Vaswani et al. 2017) for additive embeddings.
* :func:`grid_positions_3d`: the (time, height, width) index of every token of a video latent,
  with a switch that gives reference-image tokens a zero temporal component (OmniHuman).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import (
    TimestepEmbedding,
    Timesteps,
    apply_rotary_emb,
    get_1d_sincos_pos_embed_from_grid,
)
from torch import Tensor, nn

from .errors import FlowInputError


class TimeEmbedding(nn.Module):
    """``t (B,)`` [+ step size ``d (B,)``] -> conditioning vector ``(B, dim)``.

    ``emb = MLP(sinusoid(scale * t) + Linear_zero(sinusoid(scale * d)))``.

    Args:
        dim: output width.
        freq_dim: width of the sinusoidal features (256 in SD3 and GestureLSM).
        step_size_cond: add the zero-initialised step-size term (shortcut models).
        scale: multiplies ``t`` (and ``d``) before the sinusoid. SD3 feeds ``1000 * sigma``;
            GestureLSM feeds ``t`` unscaled (``scale=1``), which only uses the low frequencies.
    """

    def __init__(
        self, dim: int, *, freq_dim: int = 256, step_size_cond: bool = False, scale: float = 1000.0
    ) -> None:
        super().__init__()
        self.scale = scale
        self.proj = Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(freq_dim, dim, act_fn="silu")
        self.step_proj: nn.Linear | None = None
        if step_size_cond:
            self.step_proj = nn.Linear(freq_dim, freq_dim, bias=False)
            nn.init.zeros_(self.step_proj.weight)

    def forward(self, t: Tensor, d: Tensor | None = None) -> Tensor:
        """t ``(B,)`` in [0, 1]; d ``(B,)`` step size or None (= 0) -> ``(B, dim)``."""
        h = self.proj(t * self.scale).to(self.mlp.linear_1.weight.dtype)
        if self.step_proj is not None and d is not None:
            h = h + self.step_proj(self.proj(d * self.scale).to(h.dtype))
        return self.mlp(h)


def sincos_1d(dim: int, length: int) -> Tensor:
    """Fixed sin-cos positions ``(length, dim)`` (float32), via diffusers' grid helper."""
    pos = torch.arange(length, dtype=torch.float64)
    return get_1d_sincos_pos_embed_from_grid(dim, pos, output_type="pt").float()


def grid_positions_3d(
    frames: int, height: int, width: int, *, reference_frames: int = 0, device=None
) -> Tensor:
    """Integer (time, height, width) positions ``(frames * height * width, 3)``, frame-major.

    The first ``reference_frames`` frames are reference images (OmniHuman packs one with the
    video tokens): they all get temporal position 0, so rotary attention sees them as one
    "timeless" frame, and the video frames after them are numbered 1, 2, ..., T. Numbering the
    video from 1 keeps its first frame apart from the reference: sharing position 0 would make
    the two look like the same instant to every attention head.
    """
    if reference_frames < 0 or reference_frames > frames:
        raise FlowInputError(
            f"reference_frames: expected 0 <= reference_frames <= frames={frames}, "
            f"found {reference_frames}"
        )
    f = torch.arange(frames, device=device)
    if reference_frames:
        f = (f - reference_frames + 1).clamp_min(0)
    tt, hh, ww = torch.meshgrid(
        f, torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3).float()


class RotaryEmbedding(nn.Module):
    """Rotary position embedding for 1D or 3D positions.

    Args:
        head_dim: attention head width (even).
        axes_dim: for 3D positions, how many of ``head_dim`` channels rotate with time, height
            and width (each even, summing to ``head_dim``); None for 1D positions.
        theta: base period.

    ``freqs(positions)`` returns ``(cos, sin)`` each ``(L, head_dim)``; :meth:`apply` rotates a
    ``(B, H, L, head_dim)`` query or key (diffusers' ``apply_rotary_emb``, interleaved pairs).
    """

    def __init__(
        self, head_dim: int, *, axes_dim: tuple[int, ...] | None = None, theta: float = 10000.0
    ) -> None:
        super().__init__()
        axes = tuple(axes_dim) if axes_dim is not None else (head_dim,)
        if head_dim % 2 or any(a % 2 for a in axes) or sum(axes) != head_dim:
            raise FlowInputError(
                f"axes_dim: expected even sizes summing to head_dim={head_dim}, found {axes}"
            )
        self.head_dim, self.axes_dim, self.theta = head_dim, axes, theta

    def freqs(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions ``(L,)`` or ``(L, n_axes)`` -> ``(cos, sin)`` each ``(L, head_dim)``."""
        pos = positions.float()
        if pos.ndim == 1:
            pos = pos[:, None]
        if pos.ndim != 2 or pos.shape[1] != len(self.axes_dim):
            raise FlowInputError(
                f"positions: expected shape (L, {len(self.axes_dim)}) or (L,), "
                f"found {tuple(positions.shape)}"
            )
        angles = []
        for i, a in enumerate(self.axes_dim):
            inv = 1.0 / self.theta ** (
                torch.arange(0, a, 2, device=pos.device, dtype=torch.float32) / a
            )
            angles.append(pos[:, i : i + 1] * inv[None])  # (L, a/2)
        ang = torch.cat(angles, dim=-1).repeat_interleave(2, dim=-1)  # (L, head_dim)
        return ang.cos(), ang.sin()

    @staticmethod
    def apply(x: Tensor, cos_sin: tuple[Tensor, Tensor]) -> Tensor:
        """Rotate ``x (B, H, L, head_dim)`` by ``cos_sin`` from :meth:`freqs`."""
        return apply_rotary_emb(x, cos_sin, use_real=True, use_real_unbind_dim=-1, sequence_dim=2)

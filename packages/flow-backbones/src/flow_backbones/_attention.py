"""Attention layers shared by the backbones, built on ``F.scaled_dot_product_attention``.

Only the projections live here; normalisation (diffusers ``RMSNorm``) and rotary positions
(:class:`~flow_backbones.embeddings.RotaryEmbedding`, diffusers ``apply_rotary_emb``) are
composed in. Masks are boolean key-padding masks ``(B, S)`` with ``True`` = a real token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import Tensor, nn

from .embeddings import RotaryEmbedding


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, L, H * hd)`` -> ``(B, H, L, hd)``."""
    B, L, D = x.shape
    return x.view(B, L, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, L, hd)`` -> ``(B, L, H * hd)``."""
    B, H, L, hd = x.shape
    return x.transpose(1, 2).reshape(B, L, H * hd)


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """SDPA over ``(B, H, L, hd)`` tensors; ``key_mask (B, S)`` bool hides padded keys."""
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head self- or cross-attention with optional RMS q/k norm and rotary positions.

    ``forward(x (B, L, dim), context (B, S, kv_dim) | None, ...) -> (B, L, dim)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        kv_dim: int | None = None,
        qk_norm: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim: expected a multiple of heads={heads}, found {dim}")
        kv_dim = kv_dim or dim
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(kv_dim, 2 * dim, bias=bias)
        self.to_out = nn.Linear(dim, dim, bias=bias)
        hd = dim // heads
        self.norm_q = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()

    def keys_values(
        self, context: Tensor, rope_k: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, H, S, hd)`` of ``context (B, S, kv_dim)``, normed and rotated
        as :meth:`forward` makes them; pass them back as ``kv=`` to reuse them (a condition
        that stays the same over the steps of a sampler)."""
        k, v = (split_heads(h, self.heads) for h in self.to_kv(context).chunk(2, dim=-1))
        k = self.norm_k(k)
        if rope_k is not None:
            k = RotaryEmbedding.apply(k, rope_k)
        return k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        rope_q: tuple[Tensor, Tensor] | None = None,
        rope_k: tuple[Tensor, Tensor] | None = None,
        key_mask: Tensor | None = None,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``kv``: keys and values from :meth:`keys_values` (then ``context`` and ``rope_k``
        are not used)."""
        q = self.norm_q(split_heads(self.to_q(x), self.heads))
        if rope_q is not None:
            q = RotaryEmbedding.apply(q, rope_q)
        if kv is None:
            kv = self.keys_values(x if context is None else context, rope_k)
        k, v = kv
        mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.to_out(merge_heads(out))


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (AdaLN-Zero modulations, output heads)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module

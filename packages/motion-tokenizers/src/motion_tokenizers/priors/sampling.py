"""Pieces shared by the autoregressive token priors: next-token choice and a key-value cache.

A prior that recomputes its whole prefix for every new token (T2M-GPT's reference sampler)
spends O(L^2) token passes on an L-token motion; with the keys and values of earlier positions
kept in :class:`KVCache`, each step runs the new position only (O(L)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import TokenizerInputError


def next_token(
    logits: Tensor,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row of ``logits (B, V)`` -> ``(B,)`` int64.

    ``greedy`` takes the arg-max (temperature and top_k do not change it); otherwise the token
    is drawn from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest logits.
    """
    if logits.ndim != 2:
        raise TokenizerInputError(f"logits: expected (B, V), found {tuple(logits.shape)}")
    if greedy:
        return logits.argmax(dim=-1)
    if not temperature > 0:
        raise TokenizerInputError(f"temperature: expected > 0, found {temperature}")
    logits = logits.float() / temperature
    if top_k is not None:
        if not 1 <= top_k <= logits.shape[-1]:
            raise TokenizerInputError(
                f"top_k: expected 1..{logits.shape[-1]} (the vocabulary), found {top_k}"
            )
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class KVCache:
    """Keys and values of every attention layer, preallocated for ``max_len`` positions.

    ``k`` and ``v`` are ``(num_layers, B, n_head, max_len, head_dim)``; ``length`` positions are
    filled. A model calls :meth:`update` once per layer for the new positions, then
    :meth:`advance` once per step.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        shape = (num_layers, batch, n_head, max_len, head_dim)
        # preallocated rather than grown by torch.cat: a cat copies the whole prefix every step
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k, v (B, n_head, T_new, head_dim)`` after the filled positions of ``layer``;
        return that layer's keys and values so far, ``(B, n_head, length + T_new, head_dim)``."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise TokenizerInputError(
                f"KV cache: {end} positions requested, the cache holds {self.max_len}"
            )
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

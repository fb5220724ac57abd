"""T2M-GPT's text-conditioned token prior over VQ-VAE motion codes.

T2M-GPT: Generating Human Motion from Textual Descriptions with Discrete Representations
(Zhang et al., CVPR 2023, https://arxiv.org/abs/2301.06052), the GPT stage
(``Text2Motion_Transformer``): the text feature enters as the first token, codes follow with a
fixed sin-cos position encoding, ``2 * num_layers`` causal blocks (a "base" and a "head" half
of ``num_layers`` each) and a linear head over ``num_vq`` codes + End. Code ids: ``0..num_vq-1``
motion, ``num_vq`` End, ``num_vq + 1`` Pad (input only; the head never predicts it).

Differences from the reference code, on purpose: attention is torch's
``scaled_dot_product_attention``; sampling keeps a key-value cache (one position per step
instead of the whole prefix) and by default stops each sequence at its own End
(``reference=True`` keeps T2M-GPT's rule); the reference's ``pos_embedding`` (an
``nn.Embedding`` its forward never reads) is not built.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ..base import LocalPretrained
from ..errors import CheckpointError, TokenizerInputError
from .sampling import KVCache, next_token


def sincos_table(length: int, dim: int) -> Tensor:
    """T2M-GPT's fixed position encoding ``(length, dim)``: ``sin`` on even and ``cos`` on odd
    channels of ``pos * exp(-2i * ln(10000) / dim)``, computed in float32 as the reference."""
    pe = torch.zeros(length, dim)
    position = torch.arange(0, length).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * -(math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``x (B, T, D) -> (B, T, D)``. Separate key / query /
    value projections keep the reference's parameter names, so checkpoints map one to one."""

    def __init__(self, embed_dim: int, n_head: int, drop_out_rate: float):
        super().__init__()
        self.key = nn.Linear(embed_dim, embed_dim)
        self.query = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.resid_drop = nn.Dropout(drop_out_rate)
        self.n_head = n_head
        self.attn_drop = drop_out_rate

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        heads = (B, T, self.n_head, C // self.n_head)
        q = self.query(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, embed_dim: int, n_head: int, drop_out_rate: float, fc_rate: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, n_head, drop_out_rate)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, fc_rate * embed_dim),
            nn.GELU(),
            nn.Linear(fc_rate * embed_dim, embed_dim),
            nn.Dropout(drop_out_rate),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def pad_codes(
    sequences: list[Tensor], *, end_id: int, pad_id: int, length: int
) -> tuple[Tensor, Tensor]:
    """Lay motion-code sequences out as T2M-GPT's dataset does.

    Args:
        sequences: ``B`` int tensors ``(L_i,)`` of codes in ``[0, end_id)``, ``L_i <= length - 1``.
        end_id, pad_id: the model's ``end_id`` / ``pad_id``.
        length: the row length ``L`` (T2M-GPT: ``block_size``, 51 for HumanML3D).

    Returns:
        codes ``(B, L)``: each sequence, End at position ``L_i``, Pad after it; lengths ``(B,)``.
    """
    if not sequences:
        raise TokenizerInputError("sequences: expected at least one code sequence, found none")
    rows, lengths = [], []
    for i, seq in enumerate(sequences):
        seq = torch.as_tensor(seq)
        if seq.ndim != 1 or seq.dtype.is_floating_point:
            raise TokenizerInputError(
                f"sequences[{i}]: expected a 1-D int tensor (L,), "
                f"found {seq.dtype} {tuple(seq.shape)}"
            )
        if len(seq) > length - 1:
            raise TokenizerInputError(
                f"sequences[{i}]: {len(seq)} codes, at most length - 1 = {length - 1} fit "
                "with the End token"
            )
        if len(seq) and (int(seq.min()) < 0 or int(seq.max()) >= end_id):
            raise TokenizerInputError(
                f"sequences[{i}]: codes must lie in [0, {end_id}), "
                f"found [{int(seq.min())}, {int(seq.max())}]"
            )
        row = torch.full((length,), pad_id, dtype=torch.long)
        row[: len(seq)] = seq.long()
        row[len(seq)] = end_id
        rows.append(row)
        lengths.append(len(seq))
    return torch.stack(rows), torch.tensor(lengths, dtype=torch.long)


def corrupt_codes(
    codes: Tensor, *, pkeep: float, num_vq: int, generator: torch.Generator | None = None
) -> Tensor:
    """T2M-GPT's input corruption: each entry of ``codes (B, T)`` is kept with probability
    ``pkeep`` (a Bernoulli draw per entry), otherwise replaced by a uniform code in
    ``[0, num_vq)`` (which may equal the original). End and Pad entries are corrupted too, as
    the reference does; the draws come from ``generator`` on ``codes``' device."""
    if not 0.0 <= pkeep <= 1.0:
        raise TokenizerInputError(f"pkeep: expected a probability in [0, 1], found {pkeep}")
    keep = torch.bernoulli(
        torch.full(codes.shape, pkeep, device=codes.device), generator=generator
    ).bool()
    random = torch.randint(
        0, num_vq, codes.shape, device=codes.device, generator=generator, dtype=codes.dtype
    )
    return torch.where(keep, codes, random)


class _BlockWeights(NamedTuple):
    """One :class:`Block`'s weights as ``F.layer_norm`` / ``F.linear`` arguments, with q, k and
    v stacked into one ``(3D, D)`` matrix so that a sampling step reads them in one product."""

    ln1: tuple[Tensor, Tensor, float]
    qkv: tuple[Tensor, Tensor]
    proj: tuple[Tensor, Tensor]
    ln2: tuple[Tensor, Tensor, float]
    fc1: tuple[Tensor, Tensor]
    fc2: tuple[Tensor, Tensor]


class T2MGPT(LocalPretrained, nn.Module, PyTorchModelHubMixin):
    """T2M-GPT's ``Text2Motion_Transformer``: ``indices (B, T)``, ``cond (B, clip_dim)`` ->
    logits ``(B, T + 1, num_vq + 1)`` over the next code (position 0 is the condition token).

    ``num_layers`` is the number of blocks in each half, as the reference counts them
    (``num_layers=9`` builds 18 blocks).
    """

    def __init__(
        self,
        *,
        num_vq: int = 512,
        embed_dim: int = 512,
        clip_dim: int = 512,
        block_size: int = 51,
        num_layers: int = 2,
        n_head: int = 8,
        drop_out_rate: float = 0.1,
        fc_rate: int = 4,
    ):
        super().__init__()
        for name, value in dict(
            num_vq=num_vq,
            embed_dim=embed_dim,
            clip_dim=clip_dim,
            block_size=block_size,
            num_layers=num_layers,
            n_head=n_head,
            fc_rate=fc_rate,
        ).items():
            if not isinstance(value, int) or value < 1:
                raise TokenizerInputError(f"{name}: expected a positive int, found {value!r}")
        if embed_dim % n_head or embed_dim % 2:
            raise TokenizerInputError(
                f"embed_dim: expected an even multiple of n_head={n_head}, found {embed_dim}"
            )
        if not 0.0 <= drop_out_rate < 1.0:
            raise TokenizerInputError(f"drop_out_rate: expected [0, 1), found {drop_out_rate}")
        self.num_vq, self.embed_dim, self.clip_dim = num_vq, embed_dim, clip_dim
        self.block_size, self.num_layers, self.n_head = block_size, num_layers, n_head
        self.fc_rate, self.drop_out_rate = fc_rate, drop_out_rate
        self.tok_emb = nn.Embedding(num_vq + 2, embed_dim)  # codes, End, Pad
        self.cond_emb = nn.Linear(clip_dim, embed_dim)
        # fixed, so not saved: rebuilt from (block_size, embed_dim) like the reference's table
        self.register_buffer("pos_table", sincos_table(block_size, embed_dim), persistent=False)
        args = (embed_dim, n_head, drop_out_rate, fc_rate)
        self.base_blocks = nn.ModuleList(Block(*args) for _ in range(num_layers))
        self.head_blocks = nn.ModuleList(Block(*args) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_vq + 1, bias=False)  # codes + End; never Pad
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # the reference's GPT-2 style init
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def t2m_gpt(cls, **overrides) -> T2MGPT:
        """The README size of T2M-GPT's HumanML3D model (18 blocks of width 1024)."""
        cfg = dict(
            num_vq=512,
            embed_dim=1024,
            clip_dim=512,
            block_size=51,
            num_layers=9,
            n_head=16,
            drop_out_rate=0.1,
            fc_rate=4,
        )
        return cls(**{**cfg, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> T2MGPT:
        """A CPU-test size."""
        cfg = dict(
            num_vq=64,
            embed_dim=32,
            clip_dim=16,
            block_size=16,
            num_layers=1,
            n_head=4,
            drop_out_rate=0.1,
            fc_rate=2,
        )
        return cls(**{**cfg, **overrides})

    @property
    def end_id(self) -> int:
        return self.num_vq

    @property
    def pad_id(self) -> int:
        return self.num_vq + 1

    @property
    def blocks(self) -> list[Block]:
        return [*self.base_blocks, *self.head_blocks]

    # ----- forward ----------------------------------------------------------------------

    def _check_cond(self, cond: Tensor) -> Tensor:
        if cond.ndim != 2 or cond.shape[1] != self.clip_dim or not cond.is_floating_point():
            raise TokenizerInputError(
                f"cond: expected a float tensor (B, clip_dim={self.clip_dim}), "
                f"found {cond.dtype} {tuple(cond.shape)}"
            )
        if not bool(torch.isfinite(cond).all()):
            raise TokenizerInputError("cond: holds NaN or infinite values")
        return cond.to(self.cond_emb.weight.dtype)

    def _check_indices(self, indices: Tensor, cond: Tensor) -> None:
        if indices.ndim != 2 or indices.dtype != torch.long:
            raise TokenizerInputError(
                f"indices: expected an int64 tensor (B, T), found {indices.dtype} "
                f"{tuple(indices.shape)}"
            )
        if indices.shape[0] != cond.shape[0]:
            raise TokenizerInputError(
                f"indices: batch {indices.shape[0]} does not match cond's batch {cond.shape[0]}"
            )
        if indices.shape[1] + 1 > self.block_size:
            raise TokenizerInputError(
                f"indices: T={indices.shape[1]}, at most block_size - 1 = {self.block_size - 1} "
                "(the condition token takes one position)"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > self.pad_id):
            raise TokenizerInputError(
                f"indices: ids must lie in [0, {self.pad_id}] (codes, End, Pad), "
                f"found [{int(indices.min())}, {int(indices.max())}]"
            )

    def forward(self, indices: Tensor, cond: Tensor) -> Tensor:
        """Next-code logits.

        Args:
            indices: ``(B, T)`` int64 code ids (``T`` may be 0), ``T + 1 <= block_size``.
            cond: ``(B, clip_dim)`` text feature.

        Returns:
            ``(B, T + 1, num_vq + 1)``; row ``t`` predicts code ``t`` (row 0 from the condition).
        """
        cond = self._check_cond(cond)
        self._check_indices(indices, cond)
        x = torch.cat([self.cond_emb(cond).unsqueeze(1), self.tok_emb(indices)], dim=1)
        x = x + self.pos_table[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(
        self,
        codes: Tensor,
        lengths: Tensor,
        cond: Tensor,
        *,
        pkeep: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """T2M-GPT's training objective (``train_t2m_trans.py``).

        Args:
            codes: ``(B, L)`` int64, ``L <= block_size``, from :func:`pad_codes`: codes, End at
                position ``lengths[b]``, Pad after it.
            lengths: ``(B,)`` number of motion codes per row.
            cond: ``(B, clip_dim)``.
            pkeep: probability of keeping each input code (:func:`corrupt_codes`).
            generator: draws the corruption.

        Returns:
            the loss (each row's mean cross-entropy over its ``lengths + 1`` positions, End
            included, averaged over the batch, as the reference sums ``ce_b / B``), and
            ``{"ce": loss, "acc": arg-max accuracy over those positions}``.
        """
        cond = self._check_cond(cond)
        if codes.ndim != 2 or codes.dtype != torch.long:
            raise TokenizerInputError(
                f"codes: expected an int64 tensor (B, L), found {codes.dtype} {tuple(codes.shape)}"
            )
        B, L = codes.shape
        if lengths.shape != (B,) or lengths.dtype.is_floating_point:
            raise TokenizerInputError(
                f"lengths: expected an int tensor ({B},), found {lengths.dtype} "
                f"{tuple(lengths.shape)}"
            )
        if codes.shape[1] > self.block_size:
            raise TokenizerInputError(f"codes: L={L}, at most block_size={self.block_size}")
        lengths = lengths.to(codes.device, torch.long)
        if int(lengths.min()) < 0 or int(lengths.max()) > L - 1:
            raise TokenizerInputError(
                f"lengths: expected values in [0, {L - 1}] (End must fit in the row), found "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        at_end = codes.gather(1, lengths[:, None]).squeeze(1)
        if bool((at_end != self.end_id).any()):
            b = int((at_end != self.end_id).nonzero()[0])
            raise TokenizerInputError(
                f"codes[{b}]: expected End ({self.end_id}) at position lengths[{b}]="
                f"{int(lengths[b])}, found {int(at_end[b])} (build rows with pad_codes)"
            )
        inputs = corrupt_codes(codes[:, :-1], pkeep=pkeep, num_vq=self.num_vq, generator=generator)
        logits = self(inputs, cond)  # (B, L, num_vq + 1)
        valid = torch.arange(L, device=codes.device)[None] <= lengths[:, None]  # (B, L)
        target = torch.where(valid, codes, 0)  # Pad is not a class of the head
        ce = F.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none")
        per_row = (ce * valid).sum(1) / (lengths + 1)
        loss = per_row.mean()
        with torch.no_grad():
            right = ((logits.argmax(-1) == target) & valid).sum()
            acc = float(right) / float(valid.sum())
        return loss, {"ce": float(loss.detach()), "acc": acc}

    # ----- sampling ---------------------------------------------------------------------

    def _decode_weights(self) -> list[_BlockWeights]:
        """Each block's weights laid out for one-position steps (see :class:`_BlockWeights`)."""
        out = []
        for b in self.blocks:
            a = b.attn
            out.append(
                _BlockWeights(
                    ln1=(b.ln1.weight, b.ln1.bias, b.ln1.eps),
                    qkv=(
                        torch.cat([a.query.weight, a.key.weight, a.value.weight]),
                        torch.cat([a.query.bias, a.key.bias, a.value.bias]),
                    ),
                    proj=(a.proj.weight, a.proj.bias),
                    ln2=(b.ln2.weight, b.ln2.bias, b.ln2.eps),
                    fc1=(b.mlp[0].weight, b.mlp[0].bias),
                    fc2=(b.mlp[2].weight, b.mlp[2].bias),
                )
            )
        return out

    def _step(
        self, token_emb: Tensor, cache: KVCache, weights: list[_BlockWeights] | None = None
    ) -> Tensor:
        """One new position ``(B, 1, D)`` embedded without its position -> logits ``(B, V)``.

        The same arithmetic as :meth:`forward` on that position (eval mode), written as plain
        functional calls over ``weights`` (:meth:`_decode_weights`, built once per
        :meth:`sample`): at batch 1 a step is ~50 matrix-vector products, and the modules'
        call overhead and three separate q/k/v reads cost as much again as the products.
        """
        if weights is None:
            weights = self._decode_weights()
        B, D, nh = token_emb.shape[0], self.embed_dim, self.n_head
        t = cache.length
        x = token_emb + self.pos_table[t : t + 1]
        for i, w in enumerate(weights):
            h = F.layer_norm(x, (D,), *w.ln1)
            qkv = F.linear(h, *w.qkv).view(B, 3, nh, 1, D // nh)  # (B, q|k|v, nh, 1, hs)
            k, v = cache.update(i, qkv[:, 1], qkv[:, 2])
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v)  # one query sees every key
            x = x + F.linear(y.transpose(1, 2).reshape(B, 1, D), *w.proj)
            h = F.layer_norm(x, (D,), *w.ln2)
            x = x + F.linear(F.gelu(F.linear(h, *w.fc1)), *w.fc2)
        cache.advance(1)
        return self.head(self.ln_f(x[:, -1]))

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        *,
        greedy: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
        reference: bool = False,
        use_cache: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Generate motion codes from ``cond (B, clip_dim)``.

        Default: each row stops at its own End (or after ``max_tokens``, at most and by default
        ``block_size - 1``, the longest code sequence training rows hold); rows are padded with
        ``pad_id`` after their length.

        ``reference=True``: T2M-GPT's ``sample()``: the whole batch stops when row 0 emits End;
        without an End, ``block_size - 1`` codes (the reference draws a ``block_size``-th and
        drops it; it is not computed here). Other rows are returned as generated, End ids
        included, and every length is the full width. Where row 0's first token is End the
        reference raises (its token list is never bound); here the result is empty.

        Returns:
            codes ``(B, L)`` int64 and lengths ``(B,)``.
        """
        cond = self._check_cond(cond)
        B = cond.shape[0]
        limit = self.block_size - 1
        if max_tokens is not None:
            if reference:
                raise TokenizerInputError(
                    "max_tokens: the reference sampler has no token limit (leave it None)"
                )
            if not 1 <= max_tokens <= limit:
                raise TokenizerInputError(
                    f"max_tokens: expected 1..block_size - 1 = {limit}, found {max_tokens}"
                )
            limit = max_tokens
        device = cond.device
        cache = None
        if use_cache:
            dim = self.embed_dim // self.n_head
            cache = KVCache(
                len(self.blocks), B, self.n_head, limit, dim, device=device, dtype=cond.dtype
            )
        weights = self._decode_weights() if use_cache else None
        tokens = torch.empty(B, 0, dtype=torch.long, device=device)
        lengths = torch.full((B,), limit, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        for k in range(limit):
            if cache is None:
                logits = self(tokens, cond)[:, -1]
            else:
                emb = self.cond_emb(cond) if k == 0 else self.tok_emb(tokens[:, -1])
                logits = self._step(emb.unsqueeze(1), cache, weights)
            nxt = next_token(
                logits, greedy=greedy, temperature=temperature, top_k=top_k, generator=generator
            )
            if reference:
                if int(nxt[0]) == self.end_id:
                    break
            else:
                ended = (nxt == self.end_id) & ~done
                lengths = torch.where(ended, k, lengths)
                done = done | ended
                nxt = torch.where(done, self.pad_id, nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if not reference and bool(done.all()):
                break
        if reference:
            lengths = torch.full((B,), tokens.shape[1], dtype=torch.long, device=device)
        return tokens[:, : int(lengths.max()) if B else 0], lengths

    # ----- persistence ------------------------------------------------------------------

    @classmethod
    def from_reference_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        n_head: int = 16,
        drop_out_rate: float = 0.1,
        map_location="cpu",
    ) -> T2MGPT:
        """Load a checkpoint written by T2M-GPT's ``train_t2m_trans.py``.

        Reads ``{"trans": state_dict}`` (or a bare state dict; a DDP ``module.`` prefix is
        removed) with ``torch.load(weights_only=True)``; ``num_vq``, ``embed_dim``,
        ``clip_dim``, ``block_size``, ``num_layers`` and ``fc_rate`` come from the tensor
        shapes. ``n_head`` is not stored in the file (T2M-GPT's README model: 16). Returns the
        model in eval mode.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, a pickle that needs code, ...
            raise CheckpointError(f"{path}: not a loadable torch checkpoint ({e})") from e
        if isinstance(obj, dict) and isinstance(obj.get("trans"), dict):
            obj = obj["trans"]
        if not isinstance(obj, dict) or not obj:
            raise CheckpointError(f"{path}: expected {{'trans': state_dict}} or a state dict")
        return cls.from_reference_state_dict(
            obj, n_head=n_head, drop_out_rate=drop_out_rate, source=str(path)
        )

    @classmethod
    def from_reference_state_dict(
        cls,
        state: dict[str, Tensor],
        *,
        n_head: int = 16,
        drop_out_rate: float = 0.1,
        source: str = "<state dict>",
    ) -> T2MGPT:
        """:meth:`from_reference_checkpoint` for a ``Text2Motion_Transformer.state_dict()``
        already in memory; ``source`` names it in errors."""
        ref: dict[str, Tensor] = {}
        for k, v in state.items():
            if not isinstance(k, str) or not isinstance(v, Tensor):
                raise CheckpointError(
                    f"{source}: key {k!r} holds {type(v).__name__}, expected a tensor"
                )
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"{source}: key {k!r} holds NaN or infinite values")
            ref[k.removeprefix("module.")] = v

        def need(key: str, ndim: int) -> Tensor:
            if key not in ref:
                raise CheckpointError(f"{source}: missing key {key!r}")
            if ref[key].ndim != ndim:
                raise CheckpointError(
                    f"{source}: key {key!r} has shape {tuple(ref[key].shape)}, "
                    f"expected {ndim} dimensions"
                )
            return ref[key]

        tok = need("trans_base.tok_emb.weight", 2)
        embed_dim = tok.shape[1]
        layers = {}
        for half in ("base", "head"):
            found = {int(m.group(1)) for k in ref if (m := _BLOCK[half].match(k))}
            layers[half] = len(found)
            if sorted(found) != list(range(len(found))):
                raise CheckpointError(
                    f"{source}: trans_{half}.blocks are numbered {sorted(found)}, expected 0..N-1"
                )
        if layers["base"] != layers["head"] or not layers["base"]:
            raise CheckpointError(
                f"{source}: {layers['base']} trans_base blocks and {layers['head']} "
                "trans_head blocks; Text2Motion_Transformer has num_layers (>= 1) in each"
            )
        table = need("trans_base.pos_embed.embed", 3)  # (block_size, 1, embed_dim)
        config = dict(
            num_vq=tok.shape[0] - 2,
            embed_dim=embed_dim,
            clip_dim=need("trans_base.cond_emb.weight", 2).shape[1],
            block_size=table.shape[0],
            num_layers=layers["base"],
            n_head=n_head,
            drop_out_rate=drop_out_rate,
            fc_rate=need("trans_base.blocks.0.mlp.0.weight", 2).shape[0] // embed_dim,
        )
        try:
            model = cls(**config)
        except TokenizerInputError as e:
            raise CheckpointError(f"{source}: sizes {config} do not build a T2MGPT ({e})") from e
        block_size = config["block_size"]
        fixed = {  # reference tensors our model derives instead of storing
            "trans_base.pos_embed.embed": (block_size, 1, embed_dim),
            "trans_base.pos_embedding.weight": (block_size, embed_dim),
        }
        own = model.state_dict()
        wanted = {_to_reference(k): k for k in own}
        for k in sorted(ref):
            if k in fixed or k.endswith(".attn.mask"):
                shape = fixed.get(k, (1, 1, block_size, block_size))
                if tuple(ref[k].shape) != shape:
                    raise CheckpointError(
                        f"{source}: key {k!r} has shape {tuple(ref[k].shape)}, expected {shape}"
                    )
            elif k not in wanted:
                raise CheckpointError(f"{source}: unexpected key {k!r} for Text2Motion_Transformer")
        missing = sorted(set(wanted) - set(ref))
        if missing:
            raise CheckpointError(f"{source}: missing key(s) {missing[:5]}")
        # the forward pass adds this table: one that differs from the formula (a checkpoint that
        # trained it) would change every output
        gap = (table[:, 0].float() - model.pos_table).abs().max()
        if gap > 1e-5:
            raise CheckpointError(
                f"{source}: 'trans_base.pos_embed.embed' differs from the fixed sin-cos "
                f"encoding by {float(gap):.2e}; T2MGPT only supports the fixed table"
            )
        loaded = {}
        for rk, ok in wanted.items():
            if ref[rk].shape != own[ok].shape:
                raise CheckpointError(
                    f"{source}: key {rk!r} has shape {tuple(ref[rk].shape)}, expected "
                    f"{tuple(own[ok].shape)} (sizes inferred: {config})"
                )
            loaded[ok] = ref[rk]
        model.load_state_dict(loaded)
        return model.eval()


_BLOCK = {half: re.compile(rf"^trans_{half}\.blocks\.(\d+)\.") for half in ("base", "head")}


def _to_reference(name: str) -> str:
    """Our parameter name -> the one ``Text2Motion_Transformer`` stores."""
    if name.startswith("base_blocks."):
        return "trans_base.blocks." + name.removeprefix("base_blocks.")
    if name.startswith("head_blocks."):
        return "trans_head.blocks." + name.removeprefix("head_blocks.")
    if name.startswith(("tok_emb.", "cond_emb.")):
        return "trans_base." + name
    return "trans_head." + name  # ln_f, head

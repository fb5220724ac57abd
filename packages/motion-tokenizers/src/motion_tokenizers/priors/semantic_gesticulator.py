"""Semantic Gesticulator's token generators over its residual-VQ codes.

Semantic Gesticulator: Semantics-Aware Co-Speech Gesture Synthesis (Zhang et al., SIGGRAPH
2024, https://arxiv.org/abs/2405.09814), the GPT stages of the official code
(``SG_code/Model/cross_cond_gpt2_2part.py``, ``fine_gpt2_2part.py``,
``generate_semantic_gestures.py``):

- :class:`SGCoarseGPT` (``CrossCondGPT2_2part``) predicts RVQ layer 0 of the body and hands
  streams from the 437-d audio features. The sequence is ``[cond (t), body (t), hands (t)]``
  with one learned position table per segment; the block-causal mask ``tril(t, t).repeat(3, 3)``
  lets every stream at step ``i`` see all three streams at steps ``<= i``. Sampling draws one of
  the five most likely tokens with the fixed probabilities ``(0.9, 0.05, 0.02, 0.02, 0.01)``
  and slides a ``block_size - 1`` token context.
- :class:`SGFineGPT` (``Fine_GPT2_2part``, one per layer ``level`` = 1..3) predicts layer
  ``level`` of all positions at once with an unmasked (post-LN) ``nn.TransformerEncoder``; its
  input sums one embedding table per lower layer.
- :func:`sg_generate_codes` is ``generate()``: coarse sampling, the fine GPTs over every
  stride-1 window of 15 tokens (each fine level reads the window-wise arg-max of the levels
  below), then the stitching that keeps window 0 whole and the last frame of every later one.

Token rate: the audio features are at 60 fps / 8 = 7.5 Hz (``prepare_data.py``), one row per
token. Sizes, layouts and rules follow the reference; differences, on purpose: attention is
torch's ``scaled_dot_product_attention``; sampling takes a ``torch.Generator`` (with ``None``
it draws from torch's global generator exactly as the reference's ``Categorical.sample``), and
the heads run on the last step only while sampling; sequences of 15 tokens or fewer
(the reference crashes on them) get one window.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ..base import LocalPretrained
from ..errors import CheckpointError, TokenizerInputError
from ..sg_rvq import clean_sg_state, load_sg_file

SG_TOP_PROBS = (0.9, 0.05, 0.02, 0.02, 0.01)
PARTS = ("body", "hands")


def _init_weights(module: nn.Module) -> None:
    # the reference's GPT-2 style init (std 0.02, zero bias, unit LayerNorm)
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _check_config(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TokenizerInputError(f"{name}: expected a positive int, found {value!r}")


def _check_tokens(name: str, tokens: Tensor, vocab_size: int, ndim: int, shape: str) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != ndim or tokens.dtype != torch.long:
        found = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else tokens
        raise TokenizerInputError(f"{name}: expected an int64 tensor {shape}, found {found}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise TokenizerInputError(
            f"{name}: tokens must lie in [0, {vocab_size}), "
            f"found [{int(tokens.min())}, {int(tokens.max())}]"
        )


def _check_cond(cond: Tensor, cond_dim: int, batch: int | None, length: int | None) -> None:
    if not isinstance(cond, Tensor) or cond.ndim != 3 or not cond.is_floating_point():
        found = f"{cond.dtype} {tuple(cond.shape)}" if isinstance(cond, Tensor) else cond
        raise TokenizerInputError(
            f"cond: expected a float tensor (B, T, {cond_dim}), found {found}"
        )
    if cond.shape[2] != cond_dim:
        raise TokenizerInputError(
            f"cond: expected width cond_dim={cond_dim} (SG's audio features), "
            f"found {tuple(cond.shape)}"
        )
    if batch is not None and cond.shape[0] != batch:
        raise TokenizerInputError(f"cond: batch {cond.shape[0]}, the tokens' batch is {batch}")
    if length is not None and cond.shape[1] != length:
        raise TokenizerInputError(
            f"cond: {cond.shape[1]} steps, expected {length} (one audio row per token)"
        )
    if not bool(torch.isfinite(cond).all()):
        raise TokenizerInputError("cond: holds NaN or infinite values")


def _segments(x: Tensor, logits: tuple[nn.Linear, nn.Linear]) -> tuple[Tensor, Tensor]:
    """``x (B, 3t, D)`` laid out ``[cond, body, hands]`` -> the body and hands logits; the
    audio segment has no head (the reference drops it)."""
    t = x.shape[1] // 3
    return logits[0](x[:, t : 2 * t]), logits[1](x[:, 2 * t :])


# ----- coarse GPT ---------------------------------------------------------------------------


class BlockCausalAttention(nn.Module):
    """Multi-head self-attention over ``[cond, body, hands]`` (``x (B, 3t, D) -> (B, 3t, D)``)
    with SG's block-causal mask. Separate key / query / value projections keep the reference's
    parameter names, so checkpoints map one to one."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)
        self.n_head, self.dropout = n_head, dropout

    def forward(self, x: Tensor, mask: Tensor, rows: Tensor | None = None) -> Tensor:
        """``mask (3t, 3t)`` bool (True = may attend). ``rows``: compute only these query
        positions (the last layer while sampling needs two of them)."""
        B, T, C = x.shape
        hs = C // self.n_head
        xq = x if rows is None else x[:, rows]
        q = self.query(xq).view(B, xq.shape[1], self.n_head, hs).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.key(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask if rows is None else mask[rows],
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(B, xq.shape[1], C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = BlockCausalAttention(n_embd, n_head, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mask: Tensor, rows: Tensor | None = None) -> Tensor:
        x = (x if rows is None else x[:, rows]) + self.attn(self.ln1(x), mask, rows)
        return x + self.mlp(self.ln2(x))


class _SGReference:
    """``from_reference_checkpoint(path)`` for both GPTs: SG's ``gpt0.pt`` (coarse) and
    ``gpt1.pt``..``gpt3.pt`` (fine), as ``motion_gpt.py`` saves them (``{"model": state_dict
    with "module." keys, "optimizer", "config": EasyDict, "epoch", "updates"}``; a bare state
    dict works with ``n_head``). Sizes come from the tensors (a fine GPT's level from its
    embedding tables: the released ``motion_fine_gpt_rq_level_{1,2}.yaml`` all say ``layer_no:
    3``), ``n_head`` and dropout from ``config.structure_gpt`` unless given. Returns the model
    in eval mode."""

    @classmethod
    def from_reference_checkpoint(
        cls, path: str | os.PathLike, *, n_head: int | None = None, dropout: float | None = None
    ):
        state, config, source = _read_reference(path)
        return cls.from_reference_state_dict(  # type: ignore[attr-defined]
            state, config=config, n_head=n_head, dropout=dropout, source=source
        )


class SGCoarseGPT(_SGReference, LocalPretrained, nn.Module, PyTorchModelHubMixin):
    """SG's ``CrossCondGPT2_2part``: RVQ layer-0 tokens of body and hands from audio features.

    ``forward(body (B, T), hands (B, T), cond (B, T, cond_dim))`` -> next-token logits
    ``(B, T, vocab_size)`` per part, ``T <= block_size``. Row ``i`` of ``cond`` is the audio of
    token ``i + 1`` (the token being predicted): :meth:`loss` and :func:`sg_generate_codes`
    shift it as SG's training and ``generate()`` do.
    """

    def __init__(
        self,
        *,
        vocab_size: int = 512,
        n_embd: int = 768,
        n_head: int = 12,
        n_layer_base: int = 6,
        n_layer_head: int = 6,
        block_size: int = 14,
        cond_dim: int = 437,
        dropout: float = 0.1,
    ):
        super().__init__()
        _check_config(
            vocab_size=vocab_size,
            n_embd=n_embd,
            n_head=n_head,
            n_layer_base=n_layer_base,
            n_layer_head=n_layer_head,
            block_size=block_size,
            cond_dim=cond_dim,
        )
        if n_embd % n_head:
            raise TokenizerInputError(
                f"n_embd: expected a multiple of n_head={n_head}, found {n_embd}"
            )
        if block_size < 2:
            raise TokenizerInputError(
                f"block_size: expected >= 2 (sampling keeps block_size - 1), found {block_size}"
            )
        if not 0.0 <= dropout < 1.0:
            raise TokenizerInputError(f"dropout: expected [0, 1), found {dropout}")
        self.vocab_size, self.n_embd, self.n_head = vocab_size, n_embd, n_head
        self.n_layer_base, self.n_layer_head = n_layer_base, n_layer_head
        self.block_size, self.cond_dim, self.dropout = block_size, cond_dim, dropout
        self.tok_emb_body = nn.Embedding(vocab_size, n_embd)
        self.tok_emb_hands = nn.Embedding(vocab_size, n_embd)
        # three position tables side by side: [cond | body | hands], block_size rows each
        self.pos_emb = nn.Parameter(torch.zeros(1, 3 * block_size, n_embd))
        self.cond_emb = nn.Linear(cond_dim, n_embd)
        self.drop = nn.Dropout(dropout)
        self.base_blocks = nn.ModuleList(
            Block(n_embd, n_head, dropout) for _ in range(n_layer_base)
        )
        self.head_blocks = nn.ModuleList(
            Block(n_embd, n_head, dropout) for _ in range(n_layer_head)
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.head_body = nn.Linear(n_embd, vocab_size, bias=False)
        self.head_hands = nn.Linear(n_embd, vocab_size, bias=False)
        self.register_buffer(
            "tril", torch.ones(block_size, block_size, dtype=torch.bool).tril(), persistent=False
        )
        self.apply(_init_weights)

    @classmethod
    def sg(cls, **overrides) -> SGCoarseGPT:
        """SG's released size (``Config/motion_gpt.yaml``)."""
        cfg = dict(
            vocab_size=512,
            n_embd=768,
            n_head=12,
            n_layer_base=6,
            n_layer_head=6,
            block_size=14,
            cond_dim=437,
            dropout=0.1,
        )
        return cls(**{**cfg, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> SGCoarseGPT:
        """A CPU-test size."""
        cfg = dict(
            vocab_size=16,
            n_embd=32,
            n_head=2,
            n_layer_base=1,
            n_layer_head=1,
            block_size=14,
            cond_dim=24,
            dropout=0.1,
        )
        return cls(**{**cfg, **overrides})

    @property
    def blocks(self) -> list[Block]:
        return [*self.base_blocks, *self.head_blocks]

    def _check(self, body: Tensor, hands: Tensor, cond: Tensor, limit: int) -> None:
        _check_tokens("body", body, self.vocab_size, 2, "(B, T)")
        _check_tokens("hands", hands, self.vocab_size, 2, "(B, T)")
        if hands.shape != body.shape:
            raise TokenizerInputError(
                f"hands: shape {tuple(hands.shape)} differs from body's {tuple(body.shape)}"
            )
        if body.shape[1] > limit:
            raise TokenizerInputError(
                f"body: T={body.shape[1]}, at most {limit} (block_size={self.block_size}; "
                "the reference asserts 'model block size is exhausted')"
            )
        _check_cond(cond, self.cond_dim, body.shape[0], body.shape[1])

    def _hidden(self, body: Tensor, hands: Tensor, cond: Tensor, rows: Tensor | None) -> Tensor:
        t, bs = body.shape[1], self.block_size
        x = torch.cat(
            [
                self.cond_emb(cond.to(self.cond_emb.weight.dtype)),
                self.tok_emb_body(body),
                self.tok_emb_hands(hands),
            ],
            dim=1,
        )  # (B, 3t, D)
        pos = self.pos_emb[:, torch.cat([torch.arange(t) + s * bs for s in range(3)]).to(x.device)]
        x = self.drop(x + pos)
        mask = self.tril[:t, :t].repeat(3, 3)  # stream a at step i sees every stream at <= i
        blocks = self.blocks
        for i, block in enumerate(blocks):
            x = block(x, mask, rows if i == len(blocks) - 1 else None)
        return self.ln_f(x)

    def forward(self, body: Tensor, hands: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Next-token logits.

        Args:
            body, hands: ``(B, T)`` int64 layer-0 tokens, ``1 <= T <= block_size``.
            cond: ``(B, T, cond_dim)`` audio features, row ``i`` = the audio of token ``i + 1``.

        Returns:
            ``logits_body, logits_hands``, each ``(B, T, vocab_size)``; row ``i`` predicts token
            ``i + 1``.
        """
        self._check(body, hands, cond, self.block_size)
        return _segments(self._hidden(body, hands, cond, None), (self.head_body, self.head_hands))

    def loss(self, body: Tensor, hands: Tensor, cond: Tensor) -> tuple[Tensor, dict[str, float]]:
        """SG's teacher forcing (``motion_gpt.py``): inputs ``codes[:, :-1]``, targets
        ``codes[:, 1:]``, condition ``cond[:, 1:]``.

        Args:
            body, hands: ``(B, T + 1)`` layer-0 tokens, ``T <= block_size``.
            cond: ``(B, T + 1, cond_dim)``, one audio row per token.

        Returns:
            ``CE_body + CE_hands`` (each the mean over all positions), and
            ``{"ce_body", "ce_hands", "acc_body", "acc_hands"}``.
        """
        self._check(body, hands, cond, self.block_size + 1)
        if body.shape[1] < 2:
            raise TokenizerInputError(f"body: T+1={body.shape[1]}, expected >= 2 tokens")
        lb, lh = self.forward(body[:, :-1], hands[:, :-1], cond[:, 1:])
        return _ce_pair(lb, lh, body[:, 1:], hands[:, 1:])

    @torch.no_grad()
    def sample(
        self,
        body0: Tensor,
        hands0: Tensor,
        cond: Tensor,
        *,
        generator: torch.Generator | None = None,
        top_probs: tuple[float, ...] = SG_TOP_PROBS,
        shift: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """SG's ``CrossCondGPT2_2part.sample``: one token per row of ``cond``.

        Each step takes the ``len(top_probs)`` most probable tokens and draws one with the fixed
        probabilities ``top_probs`` (body, then hands, one ``torch.multinomial`` each, so the
        same generator state gives the reference's tokens). The context is the last
        ``block_size - 1`` tokens with their audio rows (``shift``: the reference's window rule
        for a shorter shift; ``None`` as ``generate()``).

        Args:
            body0, hands0: ``(B, 1)`` first tokens.
            cond: ``(B, N, cond_dim)``; row ``k`` is the audio of token ``k + 1`` (``generate()``
                passes ``audio_feats[:, 1:]``). ``N`` may exceed ``block_size``.
            generator: the random stream (``None``: torch's global one).

        Returns:
            ``body, hands``, each ``(B, N + 1)`` int64, starting with ``body0`` / ``hands0``.
        """
        _check_tokens("body0", body0, self.vocab_size, 2, "(B, 1)")
        _check_tokens("hands0", hands0, self.vocab_size, 2, "(B, 1)")
        if body0.shape[1] != 1 or hands0.shape != body0.shape:
            raise TokenizerInputError(
                f"body0, hands0: expected (B, 1) each, found {tuple(body0.shape)}, "
                f"{tuple(hands0.shape)}"
            )
        _check_cond(cond, self.cond_dim, body0.shape[0], None)
        probs = torch.as_tensor(top_probs, dtype=torch.float32)
        if (
            probs.ndim != 1
            or not 1 <= len(probs) <= self.vocab_size
            or bool((probs < 0).any())
            or not probs.sum() > 0
        ):
            raise TokenizerInputError(
                f"top_probs: expected 1..{self.vocab_size} non-negative weights, found {top_probs}"
            )
        # torch.distributions.Categorical normalises this way before its multinomial draw
        probs = (probs / probs.sum(-1, keepdim=True)).to(cond.device)
        B, top = body0.shape[0], len(probs)
        probs = probs.expand(B, top)
        context = self.block_size - 1
        step = context if shift is None else min(shift, context)
        if step < 1:
            raise TokenizerInputError(f"shift: expected >= 1, found {shift}")
        N = cond.shape[1]
        body = torch.empty(B, N + 1, dtype=torch.long, device=body0.device)
        hands = torch.empty_like(body)
        body[:, :1], hands[:, :1] = body0, hands0
        for k in range(N):
            n = k + 1  # tokens so far
            if n <= context:
                lo, c_lo = 0, 0
            else:  # the reference's sliding rule, with its own modular arithmetic
                keep = step + (k - context - 1) % (context - step + 1)
                lo, c_lo = n - keep, k - keep + 1
            t = n - lo
            rows = torch.tensor([2 * t - 1, 3 * t - 1], device=body.device)  # last body, hands
            h = self._hidden(body[:, lo:n], hands[:, lo:n], cond[:, c_lo : k + 1], rows)
            pb = torch.softmax(self.head_body(h[:, 0]), dim=-1)
            ph = torch.softmax(self.head_hands(h[:, 1]), dim=-1)
            top_b = torch.topk(pb, k=top, dim=-1).indices  # (B, top)
            top_h = torch.topk(ph, k=top, dim=-1).indices
            pick_b = torch.multinomial(probs, 1, True, generator=generator)  # (B, 1)
            pick_h = torch.multinomial(probs, 1, True, generator=generator)
            body[:, n] = top_b.gather(1, pick_b)[:, 0]
            hands[:, n] = top_h.gather(1, pick_h)[:, 0]
        return body, hands

    @classmethod
    def from_reference_state_dict(
        cls,
        state: dict[str, Tensor],
        *,
        config: dict | None = None,
        n_head: int | None = None,
        dropout: float | None = None,
        source: str = "<state dict>",
    ) -> SGCoarseGPT:
        """:meth:`from_reference_checkpoint` for a ``CrossCondGPT2_2part`` state dict (and
        optionally its config dict) already in memory; ``source`` names it in errors."""
        state = clean_sg_state(state, source)
        gpt = _section(config or {}, "structure_gpt")
        base = _section(gpt, "base")
        tok = _need(state, "gpt_base.tok_emb_body.weight", 2, source)
        vocab, n_embd = tok.shape
        pos = _need(state, "gpt_base.pos_emb", 3, source)
        if pos.shape[1] % 3:
            raise CheckpointError(
                f"{source}: 'gpt_base.pos_emb' has {pos.shape[1]} rows, expected 3 * block_size"
            )
        hands = _need(state, "gpt_base.tok_emb_hands.weight", 2, source)
        if hands.shape[0] != vocab:
            raise CheckpointError(
                f"{source}: body vocabulary {vocab} and hands vocabulary {hands.shape[0]} differ; "
                "SGCoarseGPT has one vocab_size"
            )
        config_kw = dict(
            vocab_size=vocab,
            n_embd=n_embd,
            n_head=n_head if n_head is not None else _config_int(base, "n_head", source),
            n_layer_base=_count_blocks(state, "gpt_base.blocks.", source),
            n_layer_head=_count_blocks(state, "gpt_head.blocks.", source),
            block_size=pos.shape[1] // 3,
            cond_dim=_need(state, "gpt_base.cond_emb.weight", 2, source).shape[1],
            dropout=dropout
            if dropout is not None
            else float(base.get("resid_pdrop", 0.1))
            if base
            else 0.1,
        )
        return _load_into(cls, config_kw, state, _coarse_to_reference, source, skip=".attn.mask")


def _coarse_to_reference(name: str) -> str:
    """Our parameter name -> the one ``CrossCondGPT2_2part`` stores."""
    if name.startswith("base_blocks."):
        return "gpt_base.blocks." + name.removeprefix("base_blocks.")
    if name.startswith("head_blocks."):
        return "gpt_head.blocks." + name.removeprefix("head_blocks.")
    if name.startswith(("ln_f.", "head_body.", "head_hands.")):
        return "gpt_head." + name
    return "gpt_base." + name  # token, position and audio embeddings


def _ce_pair(lb: Tensor, lh: Tensor, tb: Tensor, th: Tensor) -> tuple[Tensor, dict[str, float]]:
    ce_b = F.cross_entropy(lb.reshape(-1, lb.shape[-1]).float(), tb.reshape(-1))
    ce_h = F.cross_entropy(lh.reshape(-1, lh.shape[-1]).float(), th.reshape(-1))
    with torch.no_grad():
        acc_b = float((lb.argmax(-1) == tb).float().mean())
        acc_h = float((lh.argmax(-1) == th).float().mean())
    loss = ce_b + ce_h
    return loss, {
        "ce_body": float(ce_b.detach()),
        "ce_hands": float(ce_h.detach()),
        "acc_body": acc_b,
        "acc_hands": acc_h,
    }


# ----- fine GPTs ----------------------------------------------------------------------------


class SGFineGPT(_SGReference, LocalPretrained, nn.Module, PyTorchModelHubMixin):
    """SG's ``Fine_GPT2_2part`` for RVQ layer ``level`` (1..3): predicts that layer's body and
    hands tokens at every position from the layers below and the audio, without a mask.

    ``forward(body_below (B, T, level), hands_below (B, T, level), cond (B, T, cond_dim))`` ->
    logits ``(B, T, vocab_size)`` per part, ``T <= block_size``; row ``i`` of ``cond`` is the
    audio of token ``i``.
    """

    def __init__(
        self,
        *,
        level: int,
        vocab_size: int = 512,
        n_embd: int = 768,
        n_head: int = 12,
        n_layer: int = 6,
        block_size: int = 15,
        cond_dim: int = 437,
        dropout: float = 0.1,
    ):
        super().__init__()
        _check_config(
            level=level,
            vocab_size=vocab_size,
            n_embd=n_embd,
            n_head=n_head,
            n_layer=n_layer,
            block_size=block_size,
            cond_dim=cond_dim,
        )
        if level > 3:
            raise TokenizerInputError(f"level: expected 1..3 (SG's fine GPTs), found {level}")
        if n_embd % n_head:
            raise TokenizerInputError(
                f"n_embd: expected a multiple of n_head={n_head}, found {n_embd}"
            )
        if not 0.0 <= dropout < 1.0:
            raise TokenizerInputError(f"dropout: expected [0, 1), found {dropout}")
        self.level, self.vocab_size, self.n_embd, self.n_head = level, vocab_size, n_embd, n_head
        self.n_layer, self.block_size, self.cond_dim, self.dropout = (
            n_layer,
            block_size,
            cond_dim,
            dropout,
        )
        # one table per lower layer, summed: layer 0 at index 0 (the reference's tok_emb_body,
        # tok_emb_body_2, tok_emb_body_3)
        self.emb_body = nn.ModuleList(nn.Embedding(vocab_size, n_embd) for _ in range(level))
        self.emb_hands = nn.ModuleList(nn.Embedding(vocab_size, n_embd) for _ in range(level))
        self.pos_emb = nn.Parameter(torch.zeros(1, 3 * block_size, n_embd))
        self.cond_emb = nn.Linear(cond_dim, n_embd)
        self.drop = nn.Dropout(dropout)
        # torch's own post-LN encoder, as the reference builds it (same parameter names)
        layer = nn.TransformerEncoderLayer(
            d_model=n_embd,
            nhead=n_head,
            dim_feedforward=4 * n_embd,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(n_embd)
        self.head_body = nn.Linear(n_embd, vocab_size, bias=False)
        self.head_hands = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(_init_weights)

    @classmethod
    def sg(cls, level: int, **overrides) -> SGFineGPT:
        """SG's released size (``Config/motion_fine_gpt_rq_level_{level}.yaml``)."""
        cfg = dict(
            vocab_size=512,
            n_embd=768,
            n_head=12,
            n_layer=6,
            block_size=15,
            cond_dim=437,
            dropout=0.1,
        )
        return cls(level=level, **{**cfg, **overrides})

    @classmethod
    def tiny(cls, level: int = 1, **overrides) -> SGFineGPT:
        """A CPU-test size (matches :meth:`SGCoarseGPT.tiny`)."""
        cfg = dict(
            vocab_size=16, n_embd=32, n_head=2, n_layer=1, block_size=15, cond_dim=24, dropout=0.1
        )
        return cls(level=level, **{**cfg, **overrides})

    def _check(self, body: Tensor, hands: Tensor, cond: Tensor, depth: int, name: str) -> None:
        shape = f"(B, T, {depth})"
        _check_tokens(f"body{name}", body, self.vocab_size, 3, shape)
        _check_tokens(f"hands{name}", hands, self.vocab_size, 3, shape)
        if body.shape[2] != depth or hands.shape != body.shape:
            raise TokenizerInputError(
                f"body{name}, hands{name}: expected {shape} each (level={self.level}), found "
                f"{tuple(body.shape)}, {tuple(hands.shape)}"
            )
        if not 1 <= body.shape[1] <= self.block_size:
            raise TokenizerInputError(
                f"body{name}: T={body.shape[1]}, expected 1..block_size={self.block_size} "
                "(the position table's length)"
            )
        _check_cond(cond, self.cond_dim, body.shape[0], body.shape[1])

    def _logits(
        self, body_below: Tensor, hands_below: Tensor, cond: Tensor
    ) -> tuple[Tensor, Tensor]:
        t, bs = body_below.shape[1], self.block_size
        eb = self.emb_body[0](body_below[..., 0])
        eh = self.emb_hands[0](hands_below[..., 0])
        for k in range(1, self.level):
            eb = eb + self.emb_body[k](body_below[..., k])
            eh = eh + self.emb_hands[k](hands_below[..., k])
        x = torch.cat([self.cond_emb(cond.to(self.cond_emb.weight.dtype)), eb, eh], dim=1)
        pos = self.pos_emb[:, torch.cat([torch.arange(t) + s * bs for s in range(3)]).to(x.device)]
        x = self.ln_f(self.blocks(self.drop(x + pos)))
        return _segments(x, (self.head_body, self.head_hands))

    def forward(
        self, body_below: Tensor, hands_below: Tensor, cond: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Layer-``level`` logits.

        Args:
            body_below, hands_below: ``(B, T, level)`` int64 tokens of layers ``0..level-1``.
            cond: ``(B, T, cond_dim)`` audio features, one row per token.

        Returns:
            ``logits_body, logits_hands``, each ``(B, T, vocab_size)``.
        """
        self._check(body_below, hands_below, cond, self.level, "_below")
        return self._logits(body_below, hands_below, cond)

    def loss(self, body: Tensor, hands: Tensor, cond: Tensor) -> tuple[Tensor, dict[str, float]]:
        """SG's fine objective: layers ``0..level-1`` in, layer ``level`` as the target.

        Args:
            body, hands: ``(B, T, level + 1)`` tokens of layers ``0..level``.
            cond: ``(B, T, cond_dim)``.

        Returns:
            ``CE_body + CE_hands`` and ``{"ce_body", "ce_hands", "acc_body", "acc_hands"}``.
        """
        self._check(body, hands, cond, self.level + 1, "")
        lb, lh = self._logits(body[..., : self.level], hands[..., : self.level], cond)
        return _ce_pair(lb, lh, body[..., self.level], hands[..., self.level])

    @torch.no_grad()
    def predict(
        self, body_below: Tensor, hands_below: Tensor, cond: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The reference's inference output: the most probable layer-``level`` token per
        position (``topk(softmax(logits), 1)``, as ``Fine_GPT2_2part.forward``), ``(B, T)`` each."""
        lb, lh = self.forward(body_below, hands_below, cond)
        return _top1(lb), _top1(lh)

    @classmethod
    def from_reference_state_dict(
        cls,
        state: dict[str, Tensor],
        *,
        config: dict | None = None,
        n_head: int | None = None,
        dropout: float | None = None,
        source: str = "<state dict>",
    ) -> SGFineGPT:
        """:meth:`from_reference_checkpoint` for a ``Fine_GPT2_2part`` state dict (and
        optionally its config dict) already in memory; ``source`` names it in errors."""
        state = clean_sg_state(state, source)
        gpt = _section(config or {}, "structure_gpt")
        tok = _need(state, "tok_emb_body.weight", 2, source)
        vocab, n_embd = tok.shape
        level = 1 + sum(f"tok_emb_body_{k}.weight" in state for k in (2, 3))
        for k in range(2, level + 1):
            _need(state, f"tok_emb_body_{k}.weight", 2, source)  # no gaps (_3 without _2)
        pos = _need(state, "pos_emb", 3, source)
        if pos.shape[1] % 3:
            raise CheckpointError(
                f"{source}: 'pos_emb' has {pos.shape[1]} rows, expected 3 * block_size"
            )
        config_kw = dict(
            level=level,
            vocab_size=vocab,
            n_embd=n_embd,
            n_head=n_head if n_head is not None else _config_int(gpt, "n_head", source),
            n_layer=_count_blocks(state, "blocks.layers.", source),
            block_size=pos.shape[1] // 3,
            cond_dim=_need(state, "cond_emb.weight", 2, source).shape[1],
            dropout=dropout
            if dropout is not None
            else float(gpt.get("attn_pdrop", 0.1))
            if gpt
            else 0.1,
        )
        return _load_into(cls, config_kw, state, _fine_to_reference, source)


def _fine_to_reference(name: str) -> str:
    """Our parameter name -> the one ``Fine_GPT2_2part`` stores."""
    for part in PARTS:
        prefix = f"emb_{part}."
        if name.startswith(prefix):
            k, rest = name.removeprefix(prefix).split(".", 1)
            return f"tok_emb_{part}{'' if k == '0' else '_' + str(int(k) + 1)}.{rest}"
    return name


def _top1(logits: Tensor) -> Tensor:
    # the reference ranks softmax probabilities, not logits: two logits that round to the same
    # probability keep topk's order, which an argmax over logits would not reproduce
    return torch.topk(torch.softmax(logits, dim=-1), k=1, dim=-1).indices[..., 0]


# ----- generation ---------------------------------------------------------------------------


def _check_fines(fines: list[SGFineGPT], window: int) -> None:
    if not isinstance(fines, list | tuple) or not all(isinstance(f, SGFineGPT) for f in fines):
        raise TokenizerInputError("fines: expected a list of SGFineGPT (levels 1, 2, 3)")
    levels = [f.level for f in fines]
    if levels != list(range(1, len(fines) + 1)):
        raise TokenizerInputError(
            f"fines: expected levels 1..{len(fines)} in order, found {levels}"
        )
    for f in fines:
        if window > f.block_size:
            raise TokenizerInputError(
                f"window: {window} tokens, the level-{f.level} GPT holds block_size={f.block_size}"
            )


def _windows(x: Tensor, window: int, starts: Tensor) -> Tensor:
    """``x (B, N, ...)`` -> ``(B * len(starts), window, ...)``: the windows beginning at
    ``starts``."""
    idx = (starts[:, None] + torch.arange(window, device=x.device)).reshape(-1)
    return x[:, idx].reshape(x.shape[0] * len(starts), window, *x.shape[2:])


def _fine_stage(
    fines: list[SGFineGPT],
    body0: Tensor,
    hands0: Tensor,
    cond: Tensor,
    window: int,
    positions: Tensor,
) -> tuple[Tensor, Tensor]:
    """Layers ``1..len(fines)`` at ``positions`` from layer 0 ``(B, N)`` and ``cond (B, N, C)``,
    by ``generate()``'s rule: position ``j`` comes from the stride-1 window that starts at
    ``max(0, j - window + 1)`` (window 0 for the first ``window`` positions, else the window
    that ends at ``j``). Each level reads the window-wise predictions of the levels below.
    Returns ``(B, len(positions), len(fines))`` per part."""
    B, N = body0.shape
    win = min(window, N)  # a sequence shorter than a window is one (shorter) window
    starts_of = (positions - win + 1).clamp(min=0)
    starts, inverse = torch.unique(starts_of, return_inverse=True)
    W = len(starts)
    below_b = _windows(body0, win, starts)[..., None]  # (B*W, win, 1)
    below_h = _windows(hands0, win, starts)[..., None]
    c = _windows(cond, win, starts)  # (B*W, win, C)
    for fine in fines:
        nb, nh = fine.predict(below_b, below_h, c)
        below_b = torch.cat([below_b, nb[..., None]], dim=-1)
        below_h = torch.cat([below_h, nh[..., None]], dim=-1)
    offset = positions - starts_of  # frame of position j inside its window
    pick_b = below_b.view(B, W, win, -1)[:, inverse, offset, 1:]
    pick_h = below_h.view(B, W, win, -1)[:, inverse, offset, 1:]
    return pick_b, pick_h


@torch.no_grad()
def sg_generate_codes(
    coarse: SGCoarseGPT,
    fines: list[SGFineGPT],
    cond: Tensor,
    *,
    body0: int = 40,
    hands0: int = 40,
    generator: torch.Generator | None = None,
    window: int = 15,
) -> dict[str, Tensor]:
    """SG's ``generate()`` up to the codes: coarse sampling from ``body0`` / ``hands0`` with
    ``cond[:, 1:]``, the fine GPTs over every stride-1 window of ``window`` tokens, and the
    stitching (window 0 whole, then the last frame of each later window).

    Args:
        coarse: the layer-0 GPT; fines: the layer-1.. GPTs in order (SG: three).
        cond: ``(B, N, cond_dim)`` audio features, one row per token (7.5 Hz; SG: ``B = 1``).
        body0, hands0: the first layer-0 tokens (``generate()``'s default 40).
        generator: the sampling stream (``None``: torch's global generator, as SG).

    Returns:
        ``{"body": (B, N, 1 + len(fines)), "hands": ...}`` int64 codes (layer on the last axis).
    """
    _check_fines(fines, window)
    _check_cond(cond, coarse.cond_dim, None, None)
    B, N = cond.shape[:2]
    if N < 2:
        raise TokenizerInputError(f"cond: {N} steps, expected >= 2 (one token is given)")
    for f in fines:
        if f.cond_dim != coarse.cond_dim or f.vocab_size != coarse.vocab_size:
            raise TokenizerInputError(
                f"fines: the level-{f.level} GPT has cond_dim={f.cond_dim}, vocab_size="
                f"{f.vocab_size}; the coarse GPT {coarse.cond_dim}, {coarse.vocab_size}"
            )
    start = torch.full((B, 1), 0, dtype=torch.long, device=cond.device)
    b, h = coarse.sample(start + body0, start + hands0, cond[:, 1:], generator=generator)
    codes = {"body": b[..., None], "hands": h[..., None]}
    if fines:
        fb, fh = _fine_stage(fines, b, h, cond, window, torch.arange(N, device=cond.device))
        codes = {
            "body": torch.cat([codes["body"], fb], -1),
            "hands": torch.cat([codes["hands"], fh], -1),
        }
    return codes


def sg_fine_positions(start: int, end: int, length: int, *, window: int = 15) -> Tensor:
    """Positions whose fine codes (layers 1..3) change when layer 0 changes in ``[start, end)``
    under :func:`sg_generate_codes`' windowing: ``[start, end + window - 1)``, plus the whole
    first window when the edit touches it. Pass the result to :func:`sg_regenerate_fine`."""
    if not 0 <= start < end <= length:
        raise TokenizerInputError(
            f"start, end: expected 0 <= start < end <= {length}, found {start}, {end}"
        )
    win = min(window, length)
    lo = 0 if start < win else start
    return torch.arange(lo, min(length, end + win - 1))


@torch.no_grad()
def sg_regenerate_fine(
    fines: list[SGFineGPT],
    codes: dict[str, Tensor],
    cond: Tensor,
    *,
    positions: Tensor | slice,
    window: int = 15,
) -> dict[str, Tensor]:
    """Recompute layers ``1..len(fines)`` at ``positions`` from the (edited) layer 0, with the
    windows :func:`sg_generate_codes` uses for those positions; every other entry is kept.

    Args:
        codes: ``{"body": (B, N, 1 + len(fines)), "hands": ...}`` int64.
        cond: ``(B, N, cond_dim)``, the features ``sg_generate_codes`` was given.
        positions: token positions (a slice or int tensor); :func:`sg_fine_positions` gives
            every position an edit of layer 0 influences.

    Returns:
        new codes (same shapes); at ``positions`` they equal ``sg_generate_codes``' fine stage
        for this layer 0.
    """
    _check_fines(fines, window)
    if not isinstance(codes, dict) or set(codes) != set(PARTS):
        raise TokenizerInputError(f"codes: expected a dict with keys {PARTS}, found {codes!r:.80}")
    L = 1 + len(fines)
    vocab = fines[0].vocab_size if fines else None
    for part in PARTS:
        if vocab is not None:
            _check_tokens(f"codes[{part!r}]", codes[part], vocab, 3, f"(B, N, {L})")
        if codes[part].shape[-1] != L or codes[part].shape != codes["body"].shape:
            raise TokenizerInputError(
                f"codes[{part!r}]: expected (B, N, {L}) for {len(fines)} fine GPTs, "
                f"found {tuple(codes[part].shape)} (body {tuple(codes['body'].shape)})"
            )
    B, N, _ = codes["body"].shape
    if fines:
        _check_cond(cond, fines[0].cond_dim, B, N)
    device = codes["body"].device
    if isinstance(positions, slice):
        positions = torch.arange(N, device=device)[positions]
    positions = torch.as_tensor(positions, device=device)
    if positions.ndim != 1 or positions.dtype.is_floating_point:
        raise TokenizerInputError(
            f"positions: expected a slice or 1-D int tensor, found {positions!r:.80}"
        )
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= N):
        raise TokenizerInputError(
            f"positions: expected values in [0, {N}), "
            f"found [{int(positions.min())}, {int(positions.max())}]"
        )
    positions = torch.unique(positions.long())
    out = {part: codes[part].clone() for part in PARTS}
    if not fines or not positions.numel():
        return out
    fb, fh = _fine_stage(
        fines, codes["body"][..., 0], codes["hands"][..., 0], cond, window, positions
    )
    out["body"][:, positions, 1:] = fb
    out["hands"][:, positions, 1:] = fh
    return out


# ----- reading SG's checkpoints -------------------------------------------------------------


def _read_reference(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict, str]:
    path = Path(path)
    source = str(path)
    obj = load_sg_file(path)
    config: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: expected {{'model': state_dict, 'config': ...}} or a state dict"
        )
    return obj, config, source


def _section(config: dict, key: str) -> dict:
    value = config.get(key) if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


def _config_int(section: dict, key: str, source: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or value < 1:
        raise CheckpointError(
            f"{source}: config.structure_gpt has no usable {key!r} (found {value!r}); pass {key}="
        )
    return value


def _need(state: dict[str, Tensor], key: str, ndim: int, source: str) -> Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key!r}")
    if state[key].ndim != ndim:
        raise CheckpointError(
            f"{source}: key {key!r} has shape {tuple(state[key].shape)}, expected {ndim} dimensions"
        )
    return state[key]


def _count_blocks(state: dict[str, Tensor], prefix: str, source: str) -> int:
    found = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if not found or sorted(found) != list(range(len(found))):
        raise CheckpointError(
            f"{source}: {prefix}* blocks are numbered {sorted(found)}, expected 0..N-1"
        )
    return len(found)


def _load_into(
    cls, config: dict, state: dict[str, Tensor], to_ref, source: str, skip: str | None = None
):
    try:
        model = cls(**config)
    except TokenizerInputError as e:
        raise CheckpointError(
            f"{source}: sizes {config} do not build a {cls.__name__} ({e})"
        ) from e
    own = model.state_dict()
    wanted = {to_ref(k): k for k in own}
    for k in sorted(state):
        if k not in wanted and not (skip and k.endswith(skip)):
            raise CheckpointError(f"{source}: unexpected key {k!r} for {cls.__name__}")
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing key(s) {missing[:5]}")
    loaded = {}
    for rk, ok in wanted.items():
        if state[rk].shape != own[ok].shape:
            raise CheckpointError(
                f"{source}: key {rk!r} has shape {tuple(state[rk].shape)}, expected "
                f"{tuple(own[ok].shape)} (sizes inferred: {config})"
            )
        loaded[ok] = state[rk]
    model.load_state_dict(loaded)
    return model.eval()

"""One quantizer interface over vector-quantize-pytorch.

Kinds (all take and return channel-last ``(B, N, D)`` latents):

- ``"vq"``   VQ-VAE codebook with EMA updates, k-means init and dead-code reset
             (van den Oord et al. 2017; EMA as in T2M-GPT / MoMask).
- ``"rvq"``  residual VQ (SoundStream, https://arxiv.org/abs/2107.03312) with MoMask's
             *per-batch* quantize dropout: with probability ``quantize_dropout_prob`` a batch
             keeps only layers ``0..k`` with ``k ~ U{cutoff, Q-1}``; dropped layers get index -1.
- ``"fsq"``  finite scalar quantization (https://arxiv.org/abs/2309.15505).
- ``"rfsq"`` residual FSQ.
- ``"lfq"``  lookup-free quantization (MAGVIT-v2, https://arxiv.org/abs/2310.05737).

Every kind returns a :class:`QuantizerOutput` with a scalar loss and a codebook perplexity, and
indices of shape ``(B, N, Q)`` (``Q = 1`` for single-codebook kinds).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, LFQ, ResidualFSQ, ResidualVQ, VectorQuantize
from vector_quantize_pytorch.vector_quantize_pytorch import batched_sample_vectors, noop

from .errors import TokenizerInputError

QUANTIZER_KINDS = ("vq", "rvq", "fsq", "rfsq", "lfq")


@dataclass(frozen=True)
class QuantizerOutput:
    """quantized ``(B, N, D)``, indices ``(B, N, Q)`` int64 (-1 = dropped layer),
    loss: scalar (commitment for VQ kinds, entropy aux loss for LFQ, 0 for FSQ),
    perplexity: scalar, mean over active layers of ``exp(H(code histogram))``."""

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Temporarily put ``module`` in eval mode (no EMA update, no dropout, nearest codes)."""
    if not any(m.training for m in module.modules()):
        # already there: toggling walks every submodule twice (~0.6 ms per part in a stream)
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def codebook_perplexity(indices: Tensor, codebook_size: int) -> Tensor:
    """``exp`` of the entropy of the code histogram of one layer's indices (any shape).

    Equals ``codebook_size`` when every code is used equally and 1 when one code is used.
    Negative (dropped) indices are ignored.
    """
    idx = indices[indices >= 0].reshape(-1)
    if idx.numel() == 0:
        return torch.ones((), device=indices.device)
    counts = torch.bincount(idx, minlength=codebook_size).float()
    prob = counts / counts.sum()
    entropy = -(prob * torch.log(prob.clamp_min(1e-12))).sum()
    return entropy.exp()


def _distributed() -> bool:
    """Whether a multi-process group is up *now*. Asked at every training call, never stored at
    construction: models are usually built before ``accelerate`` / ``torchrun`` create the
    process group, so a flag fixed in ``__init__`` would leave every rank training alone."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank0_randint(high: int, device: torch.device) -> int:
    """A draw in ``[0, high)`` from torch's RNG that every rank agrees on: rank 0's.

    Every rank draws (so each rank's RNG advances exactly as a single process's would) and then
    takes rank 0's value. Rank 0 seeds its RNG like a single-process run, so a data-parallel
    run makes the same random choices as one process training on the concatenated batch.
    """
    r = torch.randint(0, high, (), device=device)
    if _distributed():
        dist.broadcast(r, src=0)
    return int(r.item())


def _gather_rows(local: Tensor) -> Tensor:
    """``(1, n_rank, D)`` on every rank -> ``(1, sum n, D)``: all ranks' rows in rank order, the
    order of the concatenated batch a single process would see."""
    x = local[0].contiguous()
    sizes = [
        torch.zeros((), dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(sizes, torch.tensor(x.shape[0], device=x.device))
    n_max = int(max(s.item() for s in sizes))
    padded = x.new_zeros(n_max, x.shape[1])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes, strict=True)])[None]


def _sample_rows_synced(local: Tensor, num: int) -> Tensor:
    """k-means seeds / dead-code replacements for data-parallel training: ``num`` rows drawn
    from every rank's vectors, identical on every rank.

    The rows of all ranks are gathered in rank order and every rank runs the library's
    single-process sampler on them (keeping its RNG in step with a single process); rank 0's
    pick is broadcast. With rank 0 seeded like a single process, this is the pick one process
    would make on the concatenated batch."""
    picked = batched_sample_vectors(_gather_rows(local), num).contiguous()
    dist.broadcast(picked, src=0)
    return picked


class Quantizer(nn.Module):
    """Wraps one vector-quantize-pytorch quantizer behind a single output type.

    Args:
        kind: one of ``vq, rvq, fsq, rfsq, lfq``.
        dim: latent channels ``D``.
        codebook_size: codes per layer (vq/rvq/lfq; a power of two for lfq).
        num_quantizers: residual layers (rvq/rfsq).
        decay: EMA decay of the codebook (MoMask/T2M-GPT: 0.99).
        dead_code_threshold: codes whose EMA count falls below it are re-seeded from the batch.
        kmeans_init / kmeans_iters: initialise the codebook by k-means on the first batch.
        quantize_dropout_prob: per-batch probability of residual quantize dropout (rvq/rfsq).
        quantize_dropout_cutoff_index: the lowest layer that may be the last one kept.
        stochastic_sample_codes / sample_codebook_temp: Gumbel code choice while training
            (MoMask samples at temperature 0.5); eval always takes the nearest code.
        rotation_trick: rotation-trick gradients (https://arxiv.org/abs/2410.06424) instead of the
            plain straight-through estimator MoMask uses.
        levels: FSQ levels per channel (fsq/rfsq).
        entropy_loss_weight: LFQ entropy aux-loss weight.
    """

    def __init__(
        self,
        kind: str = "rvq",
        dim: int = 128,
        *,
        codebook_size: int = 1024,
        num_quantizers: int = 6,
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        quantize_dropout_prob: float = 0.2,
        quantize_dropout_cutoff_index: int = 0,
        stochastic_sample_codes: bool = False,
        sample_codebook_temp: float = 0.5,
        rotation_trick: bool = False,
        levels: tuple[int, ...] | list[int] = (8, 5, 5, 5),
        entropy_loss_weight: float = 0.1,
    ):
        super().__init__()
        if kind not in QUANTIZER_KINDS:
            raise ValueError(f"quantizer kind: expected one of {QUANTIZER_KINDS}, found {kind!r}")
        if not 0.0 <= quantize_dropout_prob <= 1.0:
            raise ValueError(
                f"quantize_dropout_prob must be in [0, 1], found {quantize_dropout_prob}"
            )
        self.kind, self.dim = kind, dim
        self.quantize_dropout_prob = quantize_dropout_prob
        levels = list(levels)
        vq_kwargs = dict(
            decay=decay,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=dead_code_threshold,
            commitment_weight=1.0,
            rotation_trick=rotation_trick,
            stochastic_sample_codes=stochastic_sample_codes,
            sample_codebook_temp=sample_codebook_temp,
        )
        if kind == "vq":
            self.codebook_size, self.num_quantizers = codebook_size, 1
            self.q = VectorQuantize(dim=dim, codebook_size=codebook_size, **vq_kwargs)
        elif kind == "rvq":
            self.codebook_size, self.num_quantizers = codebook_size, num_quantizers
            # quantize_dropout=True at build time is what allows coarse decoding; whether a given
            # training call drops layers is decided per batch in forward().
            self.q = ResidualVQ(
                dim=dim,
                num_quantizers=num_quantizers,
                codebook_size=codebook_size,
                quantize_dropout=num_quantizers > 1,
                quantize_dropout_cutoff_index=quantize_dropout_cutoff_index,
                **vq_kwargs,
            )
        elif kind == "fsq":
            self.codebook_size, self.num_quantizers = math.prod(levels), 1
            self.q = FSQ(levels=levels, dim=dim)
        elif kind == "rfsq":
            self.codebook_size, self.num_quantizers = math.prod(levels), num_quantizers
            self.q = ResidualFSQ(
                levels=levels,
                num_quantizers=num_quantizers,
                dim=dim,
                quantize_dropout=num_quantizers > 1,
                quantize_dropout_cutoff_index=quantize_dropout_cutoff_index,
            )
        else:  # lfq
            if codebook_size & (codebook_size - 1):
                raise ValueError(f"lfq codebook_size must be a power of two, found {codebook_size}")
            self.codebook_size, self.num_quantizers = codebook_size, 1
            self.q = LFQ(
                dim=dim, codebook_size=codebook_size, entropy_loss_weight=entropy_loss_weight
            )

    @property
    def residual(self) -> bool:
        return self.kind in ("rvq", "rfsq")

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: ``(B, N, D)`` -> :class:`QuantizerOutput`."""
        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise TokenizerInputError(
                f"quantizer input: expected (B, N, {self.dim}), found {tuple(z.shape)}"
            )
        if not self.training and self.kind in ("vq", "rvq"):
            return self._nearest_codes(z)
        # the library moves its EMA codebooks through .data, which no version counter sees
        self.__dict__.pop("_tables", None)
        # codebooks, EMA statistics and distances stay at least fp32 under autocast: bf16
        # distances flip codes and bf16 EMA sums drift; a float64 model stays float64
        with torch.autocast(z.device.type, enabled=False):
            return self._library_forward(z.to(torch.promote_types(z.dtype, torch.float32)))

    def _library_forward(self, z: Tensor) -> QuantizerOutput:
        zero = z.new_zeros(())
        self._follow_process_group()
        if self.kind == "vq":
            quantized, idx, loss = self.q(z)
            indices, loss = idx.unsqueeze(-1), loss.sum()
        elif self.kind == "fsq":
            quantized, idx = self.q(z)
            indices, loss = idx.long().unsqueeze(-1), zero
        elif self.kind == "lfq":
            quantized, idx, loss = self.q(z)
            indices = idx.long().unsqueeze(-1)
        else:
            drop = self.training and self.q.quantize_dropout and self._coin()
            seed = None
            if drop:
                # the layer cut comes from torch's RNG, so checkpoints resume it exactly, and is
                # rank 0's on every rank: under data parallel all ranks drop the same layers
                seed = _rank0_randint(1 << 30, self._device())
            saved = self.q.quantize_dropout
            self.q.quantize_dropout = drop
            try:
                out = self.q(z, rand_quantize_dropout_fixed_seed=seed)
            finally:
                self.q.quantize_dropout = saved
            if self.kind == "rvq":
                quantized, indices, losses = out
            else:
                (quantized, indices), losses = out, None
            indices = indices.long()
            active = (indices >= 0).flatten(0, -2).any(0)  # (Q,)
            # MoMask averages the commitment loss over the layers that ran
            loss = zero if losses is None else losses[active].sum() / active.sum()
        perplexity = self._perplexity(indices)
        return QuantizerOutput(quantized, indices, loss, perplexity)

    def _library_codebooks(self) -> list[nn.Module]:
        """The library's EMA codebook modules (none for FSQ / LFQ)."""
        if self.kind == "vq":
            return [self.q._codebook]
        if self.kind == "rvq":
            return [layer._codebook for layer in self.q.layers]
        return []

    def _follow_process_group(self) -> None:
        """Point the library codebooks' reductions at the process group if one is up now.

        vector-quantize-pytorch picks its all-reduce and sampling functions once, in its
        constructor; built before the process group exists, it never reduces, so each rank
        would fit k-means and the EMA statistics to its own shard (and DDP's buffer broadcast
        would then keep only rank 0's). Set per call instead: with a group, the k-means counts
        and means and the EMA cluster sizes and sums are summed over ranks (= one process on
        the concatenated batch) and k-means seeds / dead-code replacements are drawn by
        :func:`_sample_rows_synced`; without one, the library's single-process functions.
        """
        ddp = _distributed()
        reduce = dist.all_reduce if ddp else noop
        sample = _sample_rows_synced if ddp else batched_sample_vectors
        for cb in self._library_codebooks():
            cb.use_ddp = ddp
            cb.all_reduce_fn = cb.kmeans_all_reduce_fn = reduce
            cb.sample_fn = cb.replace_sample_fn = sample

    def _codebooks(self) -> Tensor:
        """The EMA codebooks as ``(Q, K, D)``."""
        return self.q.codebook.unsqueeze(0) if self.kind == "vq" else self.q.codebooks

    def _search_tables(self) -> tuple[Tensor, Tensor]:
        """fp32 codebooks ``(Q, K, D)`` and their negated squared norms ``(Q, K)``, kept between
        eval calls (stacking them every call cost more than a batch-1 search) and rebuilt after
        a training forward or when a codebook tensor is replaced or written in place."""
        embeds = [cb.embed for cb in self._library_codebooks()]
        key = tuple((e.data_ptr(), e._version, e.device) for e in embeds)
        cache = self.__dict__.get("_tables")
        if cache is None or cache[0] != key:
            codebooks = self._codebooks().detach().float()
            cache = (key, codebooks, codebooks.pow(2).sum(-1).neg())
            self.__dict__["_tables"] = cache
        return cache[1], cache[2]

    def _nearest_codes(self, z: Tensor) -> QuantizerOutput:
        """Eval path: residual nearest-code search on the library's codebooks.

        Same codes as the library's eval forward, without its per-call codebook-norm and einops
        overhead (it dominates at batch 1), always in fp32 so autocast cannot flip a code. The
        quantized output is the exact sum of codes, and the loss is the commitment error
        ``mean over layers of mse(residual, code)`` so validation can report it.
        """
        B, N, D = z.shape
        quantized, indices, losses = self._search(z, with_loss=True)
        indices_t = indices.reshape(B, N, -1)
        loss = torch.stack(losses).mean()
        return QuantizerOutput(
            quantized.reshape(B, N, D).to(z.dtype), indices_t, loss, self._perplexity(indices_t)
        )

    def nearest_indices(self, z: Tensor) -> Tensor:
        """z ``(B, N, D)`` -> the eval forward's code indices ``(B, N, Q)``, in any mode and
        without the loss and perplexity a vq/rvq forward also computes (what re-quantising
        before a decode needs)."""
        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise TokenizerInputError(
                f"quantizer input: expected (B, N, {self.dim}), found {tuple(z.shape)}"
            )
        if self.kind in ("vq", "rvq"):
            return self._search(z, with_loss=False)[1].reshape(*z.shape[:2], -1)
        with eval_mode(self):  # fsq / lfq: the eval forward is the search
            return self(z).indices

    def _search(self, z: Tensor, with_loss: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(sum of codes ``(B*N, D)`` fp32, indices ``(B*N, Q)``, per-layer losses or [])."""
        with torch.autocast(z.device.type, enabled=False):
            residual = z.reshape(-1, z.shape[-1]).float()
            quantized = torch.zeros_like(residual)
            indices, losses = [], []
            codebooks, neg_norms = self._search_tables()
            for codebook, neg_norm in zip(codebooks, neg_norms, strict=True):
                # argmin |r - c|^2 = argmax (2 r.c - |c|^2); |r|^2 is the same for every code
                scores = torch.addmm(neg_norm, residual, codebook.t(), alpha=2)
                idx = scores.argmax(-1)
                code = codebook[idx]
                if with_loss:
                    losses.append((residual - code).pow(2).mean())
                residual = residual - code
                quantized = quantized + code
                indices.append(idx)
        return quantized, torch.stack(indices, -1), losses

    def _coin(self) -> bool:
        p = self.quantize_dropout_prob
        m = 1 << 24
        return p >= 1.0 or (p > 0.0 and _rank0_randint(m, self._device()) / m < p)

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _perplexity(self, indices: Tensor) -> Tensor:
        layers = [indices[..., q] for q in range(indices.shape[-1])]
        layers = [idx for idx in layers if (idx >= 0).any()]
        values = [codebook_perplexity(idx, self.codebook_size) for idx in layers]
        return torch.stack(values).mean()

    def indices_to_latent(self, indices: Tensor, num_layers: int | None = None) -> Tensor:
        """indices ``(B, N, Q')`` -> quantized latent ``(B, N, D)``.

        Uses the first ``num_layers`` layers (default: all given). Fewer than ``Q`` layers, or
        -1 entries, decode coarsely: the missing residual layers contribute zero.
        """
        if indices.ndim != 3:
            raise TokenizerInputError(f"indices: expected (B, N, Q), found {tuple(indices.shape)}")
        if indices.dtype.is_floating_point:
            raise TokenizerInputError(f"indices: expected an integer tensor, found {indices.dtype}")
        Q = indices.shape[-1]
        if self.num_quantizers < Q:
            raise TokenizerInputError(
                f"indices: {Q} layers given but the quantizer has {self.num_quantizers}"
            )
        if num_layers is not None:
            if not 1 <= num_layers <= Q:
                raise TokenizerInputError(f"num_layers must be in [1, {Q}], found {num_layers}")
            indices = indices[..., :num_layers]
        if (indices >= self.codebook_size).any() or (indices < -1).any():
            raise TokenizerInputError(
                f"indices: values must be in [-1, {self.codebook_size - 1}], found "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        indices = indices.long()
        if self.kind in ("vq", "rvq") and self._library_codebooks()[0].embed.dtype == torch.float32:
            # the codes gathered from the cached tables and summed in layer order: the library's
            # output exactly, without its per-call stacking and einx dispatch (6-10 ms per call
            # at batch 1, more than the decoder's first layers)
            codebooks, _ = self._search_tables()
            out = None
            for q in range(indices.shape[-1]):
                i = indices[..., q]
                code = codebooks[q][i.clamp(min=0)]
                if (i < 0).any():  # an absent layer adds zero
                    code = code * (i >= 0).unsqueeze(-1)
                out = code if out is None else out + code
            return out
        if self.kind == "vq":
            return self.q.get_output_from_indices(indices[..., 0])
        if self.kind == "fsq":
            return self.q.indices_to_codes(indices[..., 0])
        if self.kind == "lfq":
            return self.q.indices_to_codes(indices[..., 0])
        missing = self.num_quantizers - indices.shape[-1]
        if missing:
            indices = nn.functional.pad(indices, (0, missing), value=-1)
        return self.q.get_output_from_indices(indices)

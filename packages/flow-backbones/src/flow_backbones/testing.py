"""Toy teachers for tests: a conditional 2-D flow model, its data, a trainer, a distance.

Nothing here is a model to ship. :class:`ToyFlowMLP` follows the
:class:`~flow_backbones.conditional.ConditionalModel` protocol and keeps its layers in a
``blocks`` list like the transformer backbones, so distillers and discriminators that hook
blocks can be tested on it in seconds on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .objectives import FlowMatchingLoss


class ToyBlock(nn.Module):
    """Residual MLP block with an additive condition: ``(B, W), (B, W) -> (B, W)``."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h) + c)))


class ToyFlowMLP(nn.Module):
    """A residual-MLP velocity model on ``(B, dim)`` points.

    ``forward(x (B, dim), t (B,), d (B,), cond (B, cond_dim) | None, keep (B,) | None)``
    returns the velocity ``(B, dim)``. Rows with ``keep = False`` (and every row when ``cond``
    is None) use a learned null embedding, so classifier-free guidance works.
    """

    def __init__(self, dim: int = 2, cond_dim: int = 2, width: int = 64, depth: int = 4):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        # sin/cos features of t at 8 frequencies: an MLP reads time far better than a raw scalar
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * math.pi)
        self.in_proj = nn.Linear(dim + 2 * 8 + 1, width)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.null = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList([ToyBlock(width) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def embed_condition(self, cond: Tensor | None, keep: Tensor | None, batch: int) -> Tensor:
        """The per-row condition embedding ``(B, width)`` the blocks add to their input."""
        if cond is None:
            return self.null.expand(batch, -1)
        c = self.cond_proj(cond.to(self.null.dtype))
        if keep is not None:
            c = torch.where(keep[:, None], c, self.null.to(c.dtype))
        return c

    def forward(self, x, t, d=None, cond=None, keep=None) -> Tensor:
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B)
        d = torch.zeros_like(t) if d is None else torch.as_tensor(d, dtype=x.dtype).expand(B)
        ang = t[:, None] * self.freqs
        h = self.in_proj(torch.cat([x, ang.sin(), ang.cos(), d[:, None].to(x.device)], -1))
        c = self.embed_condition(cond, keep, B)
        for blk in self.blocks:
            h = blk(h, c)
        return self.out(self.out_norm(h))


def toy_condition(n: int, generator: torch.Generator, classes: int = 2) -> Tensor:
    """One-hot class conditions ``(n, classes)``."""
    return F.one_hot(torch.randint(classes, (n,), generator=generator), classes).float()


def toy_data(cond: Tensor, generator: torch.Generator) -> Tensor:
    """2-D points ``(n, 2)`` given one-hot classes ``(n, K)``.

    Class ``k`` is a mixture of 3 Gaussians (std 0.15) on a circle of radius 1.5, rotated by
    ``k * pi / 3``: the classes interleave, so the unconditional model is a 6-mode mixture and
    guidance has modes to sharpen.
    """
    n = cond.shape[0]
    k = cond.argmax(-1).float()
    mode = torch.randint(3, (n,), generator=generator).float()
    ang = 2 * math.pi * mode / 3 + k * math.pi / 3
    centre = 1.5 * torch.stack([ang.cos(), ang.sin()], -1)
    return centre + 0.15 * torch.randn(n, 2, generator=generator)


def train_toy_teacher(
    steps: int = 600, *, width: int = 64, depth: int = 4, seed: int = 0, batch_size: int = 256
) -> ToyFlowMLP:
    """A flow-matching :class:`ToyFlowMLP` on :func:`toy_data`, frozen and in eval mode.

    20% of the rows train unconditionally, so the teacher supports classifier-free guidance.
    Deterministic given ``seed`` (initialisation from ``torch.manual_seed(seed)``).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ToyFlowMLP(width=width, depth=depth)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    objective = FlowMatchingLoss(cond_drop=0.2)
    for _ in range(steps):
        cond = toy_condition(batch_size, gen)
        loss = objective(model, toy_data(cond, gen), cond, generator=gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval().requires_grad_(False)


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Two-sample energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Szekely & Rizzo).

    Args:
        a: ``(n, ...)`` samples, flattened per row; ``n >= 2``.
        b: ``(m, ...)`` samples; ``m >= 2``.

    Returns:
        The statistic (0 iff the distributions agree); the within-set means leave out the
        zero diagonal, so equal distributions give values near 0 of either sign.
    """
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    xy = torch.cdist(a, b).mean()
    xx = torch.cdist(a, a).sum() / (a.shape[0] * (a.shape[0] - 1))
    yy = torch.cdist(b, b).sum() / (b.shape[0] * (b.shape[0] - 1))
    return float(2 * xy - xx - yy)

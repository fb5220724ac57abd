"""Adversarial post-training of a one-step generator (Seaweed-APT).

Lin et al. 2025, "Diffusion Adversarial Post-Training for One-Step Video Generation"
(arXiv:2501.08316):

* the discriminator is a copy of the (teacher) backbone with learnable-query cross-attention
  heads on a few intermediate blocks; each head pools its block's tokens into one vector, and
  the concatenation goes through LayerNorm + Linear to one logit;
* real and generated samples are noised to a shifted time ``t' = shift_t(u, s)`` before the
  discriminator sees them (it runs the backbone at ``t'``);
* non-saturating losses ``softplus(-D(real)) + softplus(D(fake))`` and ``softplus(-D(fake))``;
* approximate R1: ``lambda E[(D(x_real) - D(x_real + N(0, sigma^2)))^2]``, a finite-difference
  stand-in for the gradient penalty that needs no double back-propagation;
* RMSprop (``alpha = 0.9``) for both players.

In the generator step the discriminator's parameters are frozen but its graph stays live, so
the adversarial gradient reaches the generator through the backbone. The generator's EMA,
checkpoints and the loop over data belong to the caller.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FlowInputError
from ..flow import interpolate, shift_t
from ..utils import tree_map


@dataclass(frozen=True, kw_only=True)
class APTConfig:
    """Seaweed-APT settings.

    Args:
        lr_g, lr_d: RMSprop learning rates of generator and discriminator.
        rmsprop_alpha: RMSprop smoothing (the paper's 0.9).
        r1_weight: ``lambda`` of the approximate R1 penalty.
        r1_sigma: std of the real-input perturbation (paper: 0.01 images, 0.1 video).
        t_shift: shift ``s`` of the discriminator's times ``t' = shift_t(u, s)``,
            ``u ~ U[t_min, 1]``; ``s > 1`` moves them toward noise.
        t_min: lower end of ``u``.
        layers: dotted names of the backbone blocks to hook (empty: :func:`default_layers`).
        head_heads: attention heads of each query head.
        grad_clip: gradient-norm clip of both players (None: off).
        check_gradients: in :func:`generator_step`, raise when the discriminator received a
            gradient or the generator none (the routing this method depends on).
    """

    lr_g: float = 5e-6
    lr_d: float = 5e-6
    rmsprop_alpha: float = 0.9
    r1_weight: float = 100.0
    r1_sigma: float = 0.01
    t_shift: float = 1.0
    t_min: float = 0.0
    layers: tuple[str, ...] = field(default_factory=tuple)
    head_heads: int = 1
    grad_clip: float | None = 1.0
    check_gradients: bool = True

    def __post_init__(self) -> None:
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise FlowInputError(
                f"APTConfig: learning rates must be > 0, found {self.lr_g}, {self.lr_d}"
            )
        if not 0.0 <= self.t_min < 1.0 or self.t_shift <= 0:
            raise FlowInputError(
                f"APTConfig: t_min in [0, 1) and t_shift > 0, found {self.t_min}, {self.t_shift}"
            )
        if self.r1_weight < 0 or self.r1_sigma <= 0:
            raise FlowInputError(
                f"APTConfig: r1_weight >= 0 and r1_sigma > 0, found {self.r1_weight}, "
                f"{self.r1_sigma}"
            )


def block_names(model: nn.Module) -> list[str]:
    """Dotted names of the backbone's blocks in registration order: the items of every
    ``nn.ModuleList`` whose attribute name contains ``block`` (``blocks``, ``cross_blocks``)."""
    names = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and "block" in name.rsplit(".", 1)[-1]:
            names.extend(f"{name}.{i}" for i in range(len(mod)))
    return names


def default_layers(model: nn.Module, count: int = 3) -> list[str]:
    """``count`` blocks spread over the later part of the depth (the paper hooks blocks 16, 26
    and 36 of 40: positions 0.4, 0.65 and 0.9)."""
    names = block_names(model)
    if not names:
        raise FlowInputError("discriminator: the backbone has no ModuleList of blocks; pass layers")
    if len(names) <= count:
        return names
    fracs = [0.4 + 0.5 * i / max(count - 1, 1) for i in range(count)]
    idx = sorted({min(len(names) - 1, max(0, round(f * len(names)) - 1)) for f in fracs})
    return [names[i] for i in idx]


def _tokens(out: Any) -> Tensor:
    """A block's output as tokens ``(B, L, C)``: a tensor is flattened over its middle axes; a
    dict/tuple of tensors (MMDiT streams) is concatenated along the tokens."""
    if isinstance(out, Tensor):
        return out[:, None] if out.ndim == 2 else out.reshape(out.shape[0], -1, out.shape[-1])
    if isinstance(out, dict):
        parts = [_tokens(v) for v in out.values() if isinstance(v, Tensor)]
    elif isinstance(out, list | tuple):
        parts = [_tokens(v) for v in out if isinstance(v, Tensor)]
    else:
        raise FlowInputError(f"discriminator hook: cannot read a block output of {type(out)}")
    return torch.cat(parts, dim=1)


class QueryHead(nn.Module):
    """One learnable query token cross-attending to a block's tokens: ``(B, L, C) -> (B, C)``."""

    def __init__(self, dim: int, heads: int = 1):
        super().__init__()
        heads = heads if dim % heads == 0 else 1
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, feats: Tensor) -> Tensor:
        kv = self.norm(feats)
        q = self.query.expand(feats.shape[0], -1, -1).to(kv.dtype)
        return self.attn(q, kv, kv, need_weights=False)[0][:, 0]


class _StopForward(Exception):
    """Raised after the deepest hooked block: the discriminator needs no later layer."""


class Discriminator(nn.Module):
    """A copy of the backbone with query heads on intermediate blocks; one logit per sample.

    ``forward(x (B, ...), t (B,), noise (B, ...), cond) -> logits (B,)`` noises ``x`` to
    ``x_t = t x + (1 - t) noise``, runs the backbone (conditional, ``d = 0``) up to the deepest
    hooked block and reads the heads. Gradients flow into ``x`` through the backbone.

    Args:
        backbone: a :class:`~flow_backbones.conditional.ConditionalModel` module (deep-copied).
        example_x: ``(b, ...)`` a small batch, run once to size the heads.
        example_cond: its condition tree (or None).
        layers: dotted block names to hook (default :func:`default_layers`).
        head_heads: attention heads per query head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        example_x: Tensor,
        example_cond: Any = None,
        *,
        layers: Sequence[str] = (),
        head_heads: int = 1,
    ):
        super().__init__()
        self.backbone = copy.deepcopy(backbone).train().requires_grad_(True)
        self.layers = list(layers) or default_layers(self.backbone)
        modules = dict(self.backbone.named_modules())
        missing = [n for n in self.layers if n not in modules]
        if missing:
            raise FlowInputError(f"discriminator layers not in the backbone: {missing}")
        self._feats: dict[str, Tensor] = {}
        self._stop_at: str | None = None  # unknown until one full forward saw the order
        for name in self.layers:
            modules[name].register_forward_hook(self._hook(name))
        with torch.no_grad():
            t = torch.full((example_x.shape[0],), 0.5, device=example_x.device)
            feats = self._features(example_x, t, example_cond)
        widths = [f.shape[-1] for f in feats]
        self.heads = nn.ModuleList([QueryHead(w, head_heads) for w in widths])
        self.norm = nn.LayerNorm(sum(widths))
        self.out = nn.Linear(sum(widths), 1)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._feats[name] = _tokens(output)
            if name == self._stop_at:
                raise _StopForward

        return hook

    def _features(self, x_t: Tensor, t: Tensor, cond: Any) -> list[Tensor]:
        B = x_t.shape[0]
        self._feats = {}
        keep = torch.ones(B, dtype=torch.bool, device=x_t.device)
        with contextlib.suppress(_StopForward):  # the deepest hook ends the forward early
            self.backbone(x_t, t, torch.zeros_like(t), cond, keep)
        if self._stop_at is None:
            self._stop_at = list(self._feats)[-1]
        feats, self._feats = [self._feats[n] for n in self.layers], {}
        return feats

    def forward(self, x: Tensor, t: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        feats = self._features(interpolate(noise, x, t), t, cond)
        tokens = torch.cat([h(f) for h, f in zip(self.heads, feats, strict=True)], dim=-1)
        return self.out(self.norm(tokens))[:, 0]


def apt_optimizers(
    generator: nn.Module, discriminator: Discriminator, config: APTConfig
) -> tuple[torch.optim.RMSprop, torch.optim.RMSprop]:
    """``(opt_g, opt_d)``: RMSprop over each player's parameters, as in the paper."""
    opt_g = torch.optim.RMSprop(generator.parameters(), lr=config.lr_g, alpha=config.rmsprop_alpha)
    opt_d = torch.optim.RMSprop(
        discriminator.parameters(), lr=config.lr_d, alpha=config.rmsprop_alpha
    )
    return opt_g, opt_d


def discriminator_times(
    n: int, config: APTConfig, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``(n,)`` shifted times ``shift_t(u, s)``, ``u ~ U[t_min, 1]``, kept >= 1e-4 so the
    backbone never sees pure noise (where real and fake are indistinguishable)."""
    g_dev = generator.device if generator is not None else "cpu"
    u = config.t_min + (1 - config.t_min) * torch.rand(n, generator=generator, device=g_dev)
    t = shift_t(u, config.t_shift) if config.t_shift != 1.0 else u
    return t.clamp(1e-4, 1.0).to(device)


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    g_dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=g_dev, dtype=like.dtype).to(like.device)


class DiscriminatorLossOutput(NamedTuple):
    """loss = adversarial + r1_weight * r1 (scalar); real/fake logits ``(B,)`` (detached)."""

    loss: Tensor
    adversarial: Tensor
    r1: Tensor
    real_logits: Tensor
    fake_logits: Tensor


class GeneratorLossOutput(NamedTuple):
    """loss: ``softplus(-D(G(z)))`` mean (scalar); fake_logits ``(B,)`` (detached)."""

    loss: Tensor
    fake_logits: Tensor


def discriminator_loss(
    generator: nn.Module,
    discriminator: Discriminator,
    real: Tensor,
    cond: Any = None,
    *,
    config: APTConfig,
    rng: torch.Generator | None = None,
) -> DiscriminatorLossOutput:
    """Non-saturating D loss on noised real and generated samples plus approximate R1.

    Real, fake and perturbed-real rows go through D in one batch of ``3B``; the perturbed rows
    reuse the real rows' times and noise, so the R1 term measures only the input change.

    Args:
        generator: ``G(z (B, ...), cond) -> (B, ...)`` (run without gradient here).
        real: ``(B, ...)`` real (or teacher) samples; ``cond`` their condition tree.
        rng: draws ``z``, times, noise and the perturbation.
    """
    B = real.shape[0]
    with torch.no_grad():
        fake = generator(_randn(real.shape, rng, real), cond)
    t = discriminator_times(2 * B, config, rng, real.device)
    noise = _randn((2 * B, *real.shape[1:]), rng, real)
    perturb = config.r1_sigma * _randn(real.shape, rng, real)
    logits = discriminator(
        torch.cat([real, fake, real + perturb]),
        torch.cat([t[:B], t[B:], t[:B]]),
        torch.cat([noise[:B], noise[B:], noise[:B]]),
        tree_map(lambda c: torch.cat([c, c, c]), cond),
    )
    real_l, fake_l, pert_l = logits[:B], logits[B : 2 * B], logits[2 * B :]
    adv = F.softplus(-real_l).mean() + F.softplus(fake_l).mean()
    r1 = (real_l - pert_l).pow(2).mean()
    return DiscriminatorLossOutput(
        adv + config.r1_weight * r1, adv, r1, real_l.detach(), fake_l.detach()
    )


def generator_loss(
    generator: nn.Module,
    discriminator: Discriminator,
    z: Tensor,
    cond: Any = None,
    *,
    config: APTConfig,
    rng: torch.Generator | None = None,
) -> GeneratorLossOutput:
    """Non-saturating G loss ``softplus(-D(G(z)))`` at shifted times; ``z`` ``(B, ...)``.

    Freeze D's parameters around the call (:func:`generator_step` does) so only G is updated;
    the graph through D must stay live.
    """
    t = discriminator_times(z.shape[0], config, rng, z.device)
    fake = generator(z, cond)
    logits = discriminator(fake, t, _randn(z.shape, rng, z), cond)
    return GeneratorLossOutput(F.softplus(-logits).mean(), logits.detach())


def _grad_norm(params) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))


def discriminator_step(
    generator: nn.Module,
    discriminator: Discriminator,
    optimizer: torch.optim.Optimizer,
    real: Tensor,
    cond: Any = None,
    *,
    config: APTConfig,
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """One D update; returns ``d_loss`` (adversarial part), ``r1``, ``d_real``, ``d_fake``."""
    discriminator.requires_grad_(True)
    out = discriminator_loss(generator, discriminator, real, cond, config=config, rng=rng)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if config.grad_clip:
        nn.utils.clip_grad_norm_(discriminator.parameters(), config.grad_clip)
    optimizer.step()
    return {
        "d_loss": float(out.adversarial.detach()),
        "r1": float(out.r1.detach()),
        "d_real": float(out.real_logits.mean()),
        "d_fake": float(out.fake_logits.mean()),
    }


def generator_step(
    generator: nn.Module,
    discriminator: Discriminator,
    optimizer: torch.optim.Optimizer,
    z: Tensor,
    cond: Any = None,
    *,
    config: APTConfig,
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """One G update with D frozen; returns ``g_loss`` and ``g_grad_norm`` (before clipping).

    D's ``requires_grad`` flags are restored afterwards. The caller updates G's EMA.
    """
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    # D's gradients of its own last step are spent; clearing them makes the routing check
    # below see only what this step produced
    discriminator.zero_grad(set_to_none=True)
    try:
        out = generator_loss(generator, discriminator, z, cond, config=config, rng=rng)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
    finally:
        for p, f in zip(discriminator.parameters(), flags, strict=True):
            p.requires_grad_(f)
    g_norm = _grad_norm(generator.parameters())
    if config.check_gradients:
        if any(p.grad is not None for p in discriminator.parameters()):
            raise RuntimeError("APT generator step: the discriminator received gradients")
        if g_norm == 0.0:
            raise RuntimeError("APT generator step: no gradient reached the generator")
    if config.grad_clip:
        nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
    optimizer.step()
    return {"g_loss": float(out.loss.detach()), "g_grad_norm": g_norm}

"""Distillation of a flow-matching teacher into a one-step generator, generic over backbones.

Works with any module following flow_backbones' ``ConditionalModel`` protocol,
``model(x, t, d, cond, keep) -> velocity`` (``t = 0`` noise, ``t = 1`` data, ``d`` the step
size, ``keep`` False rows use the null condition): :class:`~flow_backbones.DiT`,
:class:`~flow_backbones.SpatialTemporalDenoiser`, an MMDiT wrapped to that signature, or the toy
:class:`ToyFlowMLP` used by the tests.

**Stage 1, consistency distillation** (:func:`distill_consistency`): the teacher's
classifier-free-guided ODE is solved with many steps from noise ``z`` (Euler, Heun or shortcut
steps), giving pairs ``(z, cond) -> x1 = ODE^{cfg}(z)``. A student initialised from the teacher
is trained so that one jump ``x1_hat = z + student(z, t=0, d=1, cond)`` lands on that endpoint.
This is the deterministic distillation target that the OmniHuman-1-hack ``seaweed_apt`` stage
misses: it regresses only the teacher's first velocity ``v(z, t=0)``, whose one-step sample is
the blurry mean. Stage 1 runs on :class:`~gesture_apps.runtime.Trainer` (AdamW, EMA,
TensorBoard, exactly resuming checkpoints).

**Stage 2, adversarial post-training** (:func:`adversarial_post_train`), after Seaweed-APT
(Lin et al. 2025, arXiv:2501.08316): a :class:`Discriminator` made of a copy of the backbone with
forward hooks on three intermediate blocks, each feeding a learnable-query cross-attention head;
the three pooled tokens go through LayerNorm + Linear to one logit. Real and generated samples
are noised to a shifted time ``t' = shift_t(t, s)`` before D sees them (D runs the backbone at
``t'``). Non-saturating losses, the approximate R1 penalty
``lambda (D(x_real) - D(x_real + N(0, sigma^2)))^2``, RMSprop for both players and an EMA of the
generator. In the generator step D's parameters are frozen (``requires_grad_(False)``) but the
graph runs through D's backbone, so the generator receives the adversarial gradient (the
reference hack runs D's backbone under ``no_grad``, so its generator never learns from D).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from flow_backbones import conditioned, sample_euler, sample_heun, sample_shortcut, shift_t
from flow_backbones.flow import interpolate
from gesture_apps.data.windows import DataConfig
from gesture_apps.errors import TrainingError
from gesture_apps.runtime import EMA, TrainConfig, Trainer, TrainResult
from gesture_apps.runtime.checkpoint import rng_state, set_rng_state, write_latest
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_directory, atomic_write, load_state, save_state

logger = logging.getLogger(__name__)

CondSampler = Callable[[int, torch.Generator], Any]
"""``(n, generator) -> cond``: a tree of ``(n, ...)`` tensors (or None) for ``n`` samples."""

RealSampler = Callable[[int, torch.Generator], tuple[Tensor, Any]]
"""``(n, generator) -> (x1 (n, ...), cond)``: real samples with their conditions."""


def _tree_map(fn, tree):
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tree_map(fn, v) for v in tree)
    return tree


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Two-sample energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` between ``(n, ...)`` and
    ``(m, ...)`` samples (flattened per sample); 0 iff the distributions agree."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    xy = torch.cdist(a, b).mean()
    xx = torch.cdist(a, a).sum() / (a.shape[0] * (a.shape[0] - 1))
    yy = torch.cdist(b, b).sum() / (b.shape[0] * (b.shape[0] - 1))
    return float(2 * xy - xx - yy)


# ----- the one-step generator ----------------------------------------------------------------


class OneStepGenerator(nn.Module):
    """``G(z, cond) = z + model(z, t=0, d=1, cond, keep=True)``: one jump from noise to data.

    ``model`` is any flow_backbones ``ConditionalModel``; a shortcut/MeanFlow backbone reads
    ``d = 1`` as "the whole way", a plain flow model ignores ``d``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, cond: Any = None) -> Tensor:
        B = z.shape[0]
        t = torch.zeros(B, device=z.device)
        keep = torch.ones(B, dtype=torch.bool, device=z.device)
        return z + self.model(z, t, torch.ones_like(t), cond, keep)


@torch.no_grad()
def teacher_solution(
    teacher: nn.Module,
    z: Tensor,
    cond: Any,
    *,
    guidance: float = 2.0,
    steps: int = 16,
    solver: Literal["euler", "heun", "shortcut"] = "euler",
    pass_step_size: bool = False,
) -> Tensor:
    """The teacher's classifier-free-guided ODE solution from noise ``z`` in ``steps`` steps."""
    was_training = teacher.training
    teacher.eval()
    fn = conditioned(teacher, cond, guidance=guidance)
    if solver == "euler":
        x = sample_euler(fn, z, steps, pass_step_size=pass_step_size)
    elif solver == "heun":
        x = sample_heun(fn, z, steps)
    elif solver == "shortcut":
        x = sample_shortcut(fn, z, steps)
    else:
        raise ValueError(f"solver: expected euler, heun or shortcut, found {solver!r}")
    teacher.train(was_training)
    return x


# ----- stage 1: consistency distillation -----------------------------------------------------


@dataclass
class ConsistencyConfig:
    """Stage 1 (the ``consistency:`` section): how the teacher's targets are made."""

    num_pairs: int = 4096  # (noise, cond) -> teacher endpoint pairs, drawn once from `seed`
    guidance: float = 2.0
    teacher_steps: int = 16
    solver: Literal["euler", "heun", "shortcut"] = "euler"
    pass_step_size: bool = False  # give the teacher d = 1/steps (shortcut teachers)
    pair_batch: int = 512  # teacher solves per forward batch
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_pairs < 2 or self.teacher_steps < 1 or self.pair_batch < 1:
            raise ValueError("consistency: num_pairs >= 2, teacher_steps >= 1, pair_batch >= 1")


@torch.no_grad()
def make_pairs(
    teacher: nn.Module,
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    cfg: ConsistencyConfig,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """``num_pairs`` items ``{"z", "x1", "cond"?}``: noise, the teacher's guided ODE endpoint and
    the condition; a pure function of ``cfg.seed`` and the teacher."""
    gen = torch.Generator().manual_seed(cfg.seed)
    items: list[dict[str, Any]] = []
    for start in range(0, cfg.num_pairs, cfg.pair_batch):
        n = min(cfg.pair_batch, cfg.num_pairs - start)
        cond = cond_sampler(n, gen)
        z = torch.randn((n, *sample_shape), generator=gen)
        x1 = teacher_solution(
            teacher,
            z.to(device),
            _tree_map(lambda c: c.to(device), cond),
            guidance=cfg.guidance,
            steps=cfg.teacher_steps,
            solver=cfg.solver,
            pass_step_size=cfg.pass_step_size,
        ).cpu()
        for i in range(n):
            item = {"z": z[i], "x1": x1[i]}
            if cond is not None:
                item["cond"] = _tree_map(lambda c, i=i: c[i], cond)
            items.append(item)
    return items


def consistency_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """MSE between the one-step sample and the teacher's multi-step endpoint."""
    pred = model(batch["z"], batch.get("cond"))
    loss = F.mse_loss(pred, batch["x1"])
    return loss, {}


def distill_consistency(
    teacher: nn.Module,
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    *,
    config: ConsistencyConfig | None = None,
    train: TrainConfig | None = None,
    student: nn.Module | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = False,
    pairs: list[dict[str, Any]] | None = None,
) -> tuple[OneStepGenerator, Trainer, TrainResult]:
    """Stage 1: train a one-step student on the teacher's guided multi-step ODE endpoints.

    Args:
        teacher: a ``ConditionalModel`` module (frozen here; not modified).
        cond_sampler: ``(n, generator) -> cond`` tree of ``(n, ...)`` tensors, or None.
        sample_shape: shape of one sample without the batch axis, e.g. ``(N, C)``.
        config: how targets are made (:class:`ConsistencyConfig`).
        train: optimisation (:class:`~gesture_apps.runtime.TrainConfig`).
        student: initial student backbone (default: a copy of the teacher).
        out_dir: run folder for checkpoints / TensorBoard (None: nothing written).
        resume: checkpoint or run folder to continue exactly.
        pairs: precomputed :func:`make_pairs` items (default: made here).

    Returns:
        ``(generator, trainer, result)``; ``trainer.ema`` holds the EMA weights
        (:func:`ema_generator` gives a module with them).
    """
    config = config or ConsistencyConfig()
    train = train or TrainConfig(max_steps=500, batch_size=64, lr=1e-4, ema_decay=0.99)
    teacher.requires_grad_(False)
    if pairs is None:
        pairs = make_pairs(teacher, cond_sampler, sample_shape, config)
    gen = OneStepGenerator(copy.deepcopy(teacher) if student is None else student)
    gen.requires_grad_(True)
    trainer = Trainer(
        model=gen,
        dataset=pairs,
        loss_fn=consistency_loss,
        config=train,
        out_dir=out_dir,
        run_config={"stage": "consistency", "consistency": vars(config).copy()},
        progress=progress,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    result = trainer.train(steps=steps)
    return trainer.raw_model, trainer, result


def ema_generator(trainer: Trainer) -> nn.Module:
    """A copy of the trainer's model holding its EMA weights (the model itself if no EMA)."""
    if trainer.ema is None:
        return trainer.raw_model
    m = copy.deepcopy(trainer.raw_model)
    trainer.ema.copy_to(m)
    return m


# ----- stage 2: adversarial post-training ----------------------------------------------------


class _StopForward(Exception):
    """Raised by the last hook: D needs no layer after its deepest hooked block."""


def block_names(model: nn.Module) -> list[str]:
    """Names of the backbone's blocks, in execution order as registered: the items of every
    ``nn.ModuleList`` whose attribute name contains ``block`` (``cross_blocks``, ``blocks``)."""
    names = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and "block" in name.rsplit(".", 1)[-1]:
            names.extend(f"{name}.{i}" for i in range(len(mod)))
    return names


def default_layers(model: nn.Module, count: int = 3) -> list[str]:
    """``count`` blocks spread over the depth (Seaweed-APT: blocks 16, 26, 36 of 40)."""
    names = block_names(model)
    if not names:
        raise ValueError("discriminator: the backbone has no ModuleList of blocks; pass layers=")
    if len(names) <= count:
        return names
    # evenly over the second half-ish of the network: positions 0.4, 0.65, 0.9 of the depth
    fracs = [0.4 + 0.5 * i / max(count - 1, 1) for i in range(count)]
    idx = sorted({min(len(names) - 1, round(f * len(names)) - 1) for f in fracs})
    return [names[i] for i in idx]


def _tokens(out: Any) -> Tensor:
    """A hooked block's output as tokens ``(B, L, C)``: tensors are flattened over their middle
    axes; a dict/tuple of tensors (MMDiT streams) is concatenated along tokens."""
    if isinstance(out, Tensor):
        if out.ndim == 2:
            return out[:, None]
        return out.reshape(out.shape[0], -1, out.shape[-1])
    if isinstance(out, dict):
        parts = [_tokens(v) for v in out.values() if isinstance(v, Tensor)]
    elif isinstance(out, (list, tuple)):
        parts = [_tokens(v) for v in out if isinstance(v, Tensor)]
    else:
        raise TypeError(f"discriminator hook: cannot read a block output of type {type(out)}")
    return torch.cat(parts, dim=1)


class QueryHead(nn.Module):
    """One learnable query token cross-attending to a layer's features: ``(B, L, C) -> (B, C)``."""

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


class Discriminator(nn.Module):
    """A copy of the backbone with cross-attention heads on three intermediate blocks.

    ``forward(x, t, noise, cond)`` noises ``x`` to ``x_t = t x + (1 - t) noise``, runs the
    backbone at ``t`` (conditional, ``d = 0``) until the deepest hooked block, and returns one
    logit per sample. Gradients flow into ``x`` through the backbone.

    Args:
        backbone: the teacher (deep-copied here).
        example_x, example_cond: one small batch, used once to size the heads.
        layers: dotted module names to hook (default :func:`default_layers`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        example_x: Tensor,
        example_cond: Any = None,
        *,
        layers: Sequence[str] | None = None,
        head_heads: int = 1,
    ):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.backbone.requires_grad_(True)
        self.layers = list(layers) if layers else default_layers(self.backbone)
        modules = dict(self.backbone.named_modules())
        missing = [n for n in self.layers if n not in modules]
        if missing:
            raise ValueError(f"discriminator layers not in the backbone: {missing}")
        self._feats: dict[str, Tensor] = {}
        self._stop_at: str | None = None
        for name in self.layers:
            modules[name].register_forward_hook(self._hook(name))
        with torch.no_grad():
            t = torch.full((example_x.shape[0],), 0.5)
            feats = self._features(example_x, t, example_cond)
        widths = [f.shape[-1] for f in feats]
        self.heads = nn.ModuleList([QueryHead(w, head_heads) for w in widths])
        self.norm = nn.LayerNorm(sum(widths))
        self.out = nn.Linear(sum(widths), 1)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._feats[name] = _tokens(output)
            if name == self._stop_at and len(self._feats) == len(self.layers):
                raise _StopForward

        return hook

    def _features(self, x_t: Tensor, t: Tensor, cond: Any) -> list[Tensor]:
        B = x_t.shape[0]
        self._feats = {}
        self._stop_at = None
        keep = torch.ones(B, dtype=torch.bool, device=x_t.device)
        d = torch.zeros(B, device=x_t.device)
        try:
            # the stop is armed only after the first probe has seen the execution order
            self._stop_at = getattr(self, "_last_layer", None)
            self.backbone(x_t, t, d, cond, keep)
        except _StopForward:
            pass
        if not hasattr(self, "_last_layer"):
            self._last_layer = list(self._feats)[-1]
        feats = [self._feats[n] for n in self.layers]
        self._feats = {}
        return feats

    def forward(self, x: Tensor, t: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        x_t = interpolate(noise, x, t)
        feats = self._features(x_t, t, cond)
        tokens = torch.cat([h(f) for h, f in zip(self.heads, feats, strict=True)], dim=-1)
        return self.out(self.norm(tokens))[:, 0]


@dataclass
class APTConfig:
    """Stage 2 (the ``apt:`` section), Seaweed-APT's settings scaled to the task."""

    steps: int = 300
    batch_size: int = 64
    lr_g: float = 5e-6
    lr_d: float = 5e-6
    rmsprop_alpha: float = 0.9
    ema_decay: float = 0.995
    r1_weight: float = 100.0
    r1_sigma: float = 0.01  # Seaweed-APT: 0.01 images, 0.1 video
    t_shift: float = 1.0  # D's time t' = shift_t(u, s), u ~ U[t_min, 1]; s > 1 noisier
    t_min: float = 0.0
    layers: list[str] = field(default_factory=list)  # hooked blocks (default: 3 spread)
    head_heads: int = 1
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end of each call
    check_gradients: bool = True  # assert the generator step's gradient routing every step

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError("apt: steps >= 0, batch_size >= 1 and positive learning rates")
        if not 0.0 <= self.t_min < 1.0 or self.t_shift <= 0:
            raise ValueError("apt: t_min must lie in [0, 1) and t_shift be positive")


def _d_time(n: int, cfg: APTConfig, gen: torch.Generator, device) -> Tensor:
    u = cfg.t_min + (1 - cfg.t_min) * torch.rand(n, generator=gen)
    t = shift_t(u, cfg.t_shift) if cfg.t_shift != 1.0 else u
    return t.clamp(1e-4, 1.0).to(device)


class APTState:
    """Generator, discriminator, their RMSprop optimizers, the generator EMA and the loop's
    position (step, history, data generator); saved and restored as one checkpoint."""

    def __init__(self, generator: nn.Module, discriminator: Discriminator, cfg: APTConfig):
        self.cfg = cfg
        self.G, self.D = generator, discriminator
        self.opt_g = torch.optim.RMSprop(
            [p for p in generator.parameters()], lr=cfg.lr_g, alpha=cfg.rmsprop_alpha
        )
        self.opt_d = torch.optim.RMSprop(
            [p for p in discriminator.parameters()], lr=cfg.lr_d, alpha=cfg.rmsprop_alpha
        )
        self.ema = EMA(generator, decay=cfg.ema_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.data_gen = torch.Generator().manual_seed(cfg.seed)

    def ema_generator(self) -> nn.Module:
        m = copy.deepcopy(self.G)
        self.ema.copy_to(m)
        return m

    def save(self, directory: Path) -> Path:
        state = {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "ema": self.ema.state_dict(),
            "history": self.history,
            "data_gen": self.data_gen.get_state(),
            "rng": rng_state(),
        }

        def write(tmp: Path) -> None:
            save_model(self.G, str(tmp / "generator.safetensors"))
            save_model(self.D, str(tmp / "discriminator.safetensors"))
            save_state(state, tmp, "apt_state")

        atomic_directory(directory, write)
        write_latest(directory.parent, directory.name)
        return directory

    def load(self, path: str | Path) -> Path:
        directory = _resolve_apt(Path(path))
        try:
            state = load_state(directory, "apt_state")
            load_model(self.G, str(directory / "generator.safetensors"), strict=True)
            load_model(self.D, str(directory / "discriminator.safetensors"), strict=True)
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.ema.load_state_dict(state["ema"])
            self.step = int(state["step"])
            self.history = list(state["history"])
            self.data_gen.set_state(state["data_gen"])
            set_rng_state(state["rng"])
        except CheckpointError:
            raise
        except Exception as e:  # torch/safetensors raise several types for foreign files
            msg = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"{directory}: not an APT checkpoint of this model ({msg})"
            ) from e
        return directory


def _resolve_apt(path: Path) -> Path:
    """An APT checkpoint folder, or a run folder whose ``checkpoints/latest.txt`` names one."""
    if (path / "apt_state.json").is_file():
        return path
    pointer = path / "checkpoints" / "latest.txt"
    if pointer.is_file():
        target = pointer.parent / pointer.read_text(encoding="utf-8").strip()
        if (target / "apt_state.json").is_file():
            return target
        raise CheckpointError(f"{pointer}: names {target.name!r}, which is not an APT checkpoint")
    raise CheckpointError(f"{path}: not an APT checkpoint or run folder")


def discriminator_step(state: APTState, real: Tensor, cond: Any) -> dict[str, float]:
    """One D update: non-saturating loss on noised real / generated samples at shifted times,
    plus the approximate R1 penalty (the change of D's output under a small real-input
    perturbation, same ``t`` and noise)."""
    cfg, G, D, gen = state.cfg, state.G, state.D, state.data_gen
    B, dev = real.shape[0], real.device
    D.requires_grad_(True)
    with torch.no_grad():
        z = torch.randn(real.shape, generator=gen).to(dev)
        fake = G(z, cond)
    t = _d_time(2 * B, cfg, gen, dev)
    noise = torch.randn((2 * B, *real.shape[1:]), generator=gen).to(dev)
    perturb = cfg.r1_sigma * torch.randn(real.shape, generator=gen).to(dev)
    cond3 = _tree_map(lambda c: torch.cat([c, c, c]), cond)
    x = torch.cat([real, fake, real + perturb])
    tt = torch.cat([t[:B], t[B:], t[:B]])
    nn_ = torch.cat([noise[:B], noise[B:], noise[:B]])
    logits = D(x, tt, nn_, cond3)
    real_l, fake_l, pert_l = logits[:B], logits[B : 2 * B], logits[2 * B :]
    adv = F.softplus(-real_l).mean() + F.softplus(fake_l).mean()
    r1 = ((real_l - pert_l) ** 2).mean()
    loss = adv + cfg.r1_weight * r1
    state.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(D.parameters(), cfg.grad_clip)
    state.opt_d.step()
    return {
        "d_loss": float(adv.detach()),
        "r1": float(r1.detach()),
        "d_real": float(real_l.detach().mean()),
        "d_fake": float(fake_l.detach().mean()),
    }


def generator_step(state: APTState, real: Tensor, cond: Any) -> dict[str, float]:
    """One G update: ``-log sigmoid(D(G(z)))`` with D's parameters frozen but its graph live,
    so the gradient reaches the generator through D's backbone."""
    cfg, G, D, gen = state.cfg, state.G, state.D, state.data_gen
    B, dev = real.shape[0], real.device
    D.requires_grad_(False)
    z = torch.randn(real.shape, generator=gen).to(dev)
    t = _d_time(B, cfg, gen, dev)
    noise = torch.randn(real.shape, generator=gen).to(dev)
    fake = G(z, cond)
    loss = F.softplus(-D(fake, t, noise, cond)).mean()
    state.opt_g.zero_grad(set_to_none=True)
    state.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    g_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    if cfg.check_gradients:
        if any(p.grad is not None for p in D.parameters()):
            raise RuntimeError("APT generator step: the discriminator received gradients")
        if g_norm == 0.0:
            raise RuntimeError("APT generator step: no gradient reached the generator")
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip)
    state.opt_g.step()
    state.ema.update(G)
    D.requires_grad_(True)
    return {"g_loss": float(loss.detach()), "g_grad_norm": g_norm}


def adversarial_post_train(
    generator: nn.Module,
    backbone: nn.Module,
    real_sampler: RealSampler,
    *,
    config: APTConfig | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    steps: int | None = None,
    state: APTState | None = None,
) -> APTState:
    """Stage 2: Seaweed-APT-style adversarial post-training of a one-step generator.

    Args:
        generator: ``G(z, cond) -> x1`` (an :class:`OneStepGenerator` from stage 1); trained
            in place.
        backbone: the network the discriminator is copied from (the teacher).
        real_sampler: ``(n, generator) -> (x1, cond)``, real data or teacher samples
            (:func:`pairs_sampler`).
        out_dir: folder for ``checkpoints/step_*/`` (None: nothing written).
        resume: checkpoint or run folder to continue exactly.
        steps: stop after this many more steps (default: up to ``config.steps``).
        state: continue an in-memory :class:`APTState` instead of building one.

    Returns:
        The :class:`APTState`; ``state.ema_generator()`` is the model to export.
    """
    cfg = config or APTConfig()
    if state is None:
        probe_x, probe_c = real_sampler(2, torch.Generator().manual_seed(cfg.seed + 1))
        dev = next(generator.parameters()).device
        bdev = next(backbone.parameters()).device  # the probe runs where the teacher lives
        D = Discriminator(
            backbone,
            probe_x.to(bdev),
            _tree_map(lambda c: c.to(bdev), probe_c),
            layers=cfg.layers or None,
            head_heads=cfg.head_heads,
        ).to(dev)
        state = APTState(generator, D, cfg)
        if resume is not None:
            state.load(resume)
    out = Path(out_dir) if out_dir is not None else None
    end = cfg.steps if steps is None else min(cfg.steps, state.step + steps)
    dev = next(state.G.parameters()).device
    state.G.train()
    state.D.train()
    while state.step < end:
        real, cond = real_sampler(cfg.batch_size, state.data_gen)
        real = real.to(dev)
        cond = _tree_map(lambda c: c.to(dev), cond)
        metrics = discriminator_step(state, real, cond)
        metrics.update(generator_step(state, real, cond))
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:  # stop before a diverged generator is checkpointed or exported
            raise TrainingError(
                f"apt step {state.step + 1}: {', '.join(f'{k} {v}' for k, v in bad.items())} "
                "(non-finite), training diverged; lower apt.lr_g / apt.lr_d"
            )
        state.step += 1
        if state.step % cfg.log_every == 0 or state.step == end:
            state.history.append({"step": state.step, **metrics})
            logger.info("apt step %d: %s", state.step, json.dumps(metrics))
        if out and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            state.save(out / "checkpoints" / f"step_{state.step:07d}")
    if out is not None:
        state.save(out / "checkpoints" / f"step_{state.step:07d}")
    return state


def pairs_sampler(pairs: list[dict[str, Any]]) -> RealSampler:
    """A :data:`RealSampler` drawing the teacher's endpoints (data-free APT)."""
    x1 = torch.stack([p["x1"] for p in pairs])
    has_cond = "cond" in pairs[0]
    conds = [p["cond"] for p in pairs] if has_cond else None

    def sample(n: int, gen: torch.Generator) -> tuple[Tensor, Any]:
        idx = torch.randint(len(pairs), (n,), generator=gen)
        cond = None
        if conds is not None:
            cond = torch.utils.data.default_collate([conds[i] for i in idx.tolist()])
        return x1[idx], cond

    return sample


# ----- a toy backbone and distribution (tests, the tiny preset) ------------------------------


class ToyBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h) + c)))


class ToyFlowMLP(nn.Module):
    """A residual-MLP velocity model on ``(B, dim)`` points following the flow_backbones
    ``ConditionalModel`` protocol, with ``blocks`` like the transformer backbones.

    ``cond`` is ``(B, cond_dim)`` (e.g. one-hot classes) or None; rows with ``keep = False`` (or
    ``cond = None``) use a learned null embedding.
    """

    def __init__(self, dim: int = 2, cond_dim: int = 2, width: int = 64, depth: int = 4):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * math.pi)
        self.in_proj = nn.Linear(dim + 2 * 8 + 1, width)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.null = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList([ToyBlock(width) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, x, t, d=None, cond=None, keep=None):
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B)
        d = torch.zeros_like(t) if d is None else torch.as_tensor(d, dtype=x.dtype).expand(B)
        ang = t[:, None] * self.freqs
        h = self.in_proj(torch.cat([x, ang.sin(), ang.cos(), d[:, None].to(x.device)], -1))
        if cond is None:
            c = self.null.expand(B, -1)
        else:
            c = self.cond_proj(cond.to(x.dtype))
            if keep is not None:
                c = torch.where(keep[:, None], c, self.null.to(c.dtype))
        for blk in self.blocks:
            h = blk(h, c)
        return self.out(self.out_norm(h))


def toy_condition(n: int, gen: torch.Generator, classes: int = 2) -> Tensor:
    """One-hot class conditions ``(n, classes)``."""
    return F.one_hot(torch.randint(classes, (n,), generator=gen), classes).float()


def toy_data(cond: Tensor, gen: torch.Generator) -> Tensor:
    """2-D points given one-hot classes: class k is a mixture of 3 Gaussians (std 0.15) on a
    circle of radius 1.5, rotated by ``k * pi / 3``; guidance sharpens the modes."""
    n = cond.shape[0]
    k = cond.argmax(-1).float()
    mode = torch.randint(3, (n,), generator=gen).float()
    ang = 2 * math.pi * mode / 3 + k * math.pi / 3
    centre = 1.5 * torch.stack([ang.cos(), ang.sin()], -1)
    return centre + 0.15 * torch.randn(n, 2, generator=gen)


def train_toy_teacher(
    steps: int = 600, *, width: int = 64, depth: int = 4, seed: int = 0, batch_size: int = 256
) -> ToyFlowMLP:
    """A flow-matching teacher on :func:`toy_data` with 20% condition dropout (for guidance)."""
    from flow_backbones import FlowMatchingLoss

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ToyFlowMLP(width=width, depth=depth)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    objective = FlowMatchingLoss(cond_drop=0.2)
    for _ in range(steps):
        cond = toy_condition(batch_size, gen)
        x1 = toy_data(cond, gen)
        loss = objective(model, x1, cond, generator=gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model.requires_grad_(False)


# ----- the `gesture distill` recipe ----------------------------------------------------------


@dataclass
class TeacherConfig:
    """The ``teacher:`` section.

    ``kind: toy2d`` trains (once, saved in the run folder) the 2-D :class:`ToyFlowMLP` teacher;
    ``kind: backbone`` loads a flow_backbones ``save_pretrained`` folder (``path``, or
    ``--teacher DIR``) of class ``backbone``; ``kind: lsm`` loads a ``gesture train lsm`` (or
    ``train reflow``) run and draws conditions (audio/word features + seed frames) from the
    training windows of ``data`` through the run's own encoder (``sample_shape`` and
    ``conditions`` are then taken from the run); the student is exported in the same ``lsm/``
    layout with 1 step and guidance 1, so ``gesture generate --checkpoint OUT/student`` runs it.
    ``conditions`` names a registered condition source (:func:`register_condition_source`):
    ``toy`` (one-hot classes), ``none`` (the null condition; unconditional teachers), or one a
    caller adds.
    """

    kind: Literal["toy2d", "backbone", "lsm"] = "toy2d"
    path: str | None = None
    weights: Literal["ema", "model"] = "ema"  # kind lsm: which weights of the run
    backbone: Literal["DiT", "SpatialTemporalDenoiser"] = "SpatialTemporalDenoiser"
    sample_shape: list[int] = field(default_factory=lambda: [2])
    conditions: str = "toy"
    toy_steps: int = 400
    toy_width: int = 64
    toy_depth: int = 4


@dataclass
class DistillRecipeConfig:
    recipe: Literal["distill"] = "distill"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # stage 1 optimisation
    apt: APTConfig = field(default_factory=APTConfig)
    data: DataConfig = field(default_factory=DataConfig)  # kind lsm: condition windows
    eval_samples: int = 1000  # samples for the energy distances in metrics.json


ConditionSource = Callable[[DistillRecipeConfig, nn.Module], CondSampler]
_CONDITION_SOURCES: dict[str, ConditionSource] = {
    "toy": lambda cfg, teacher: toy_condition,
    "none": lambda cfg, teacher: lambda n, gen: None,
}


def register_condition_source(name: str, source: ConditionSource) -> None:
    """Make ``teacher.conditions: <name>`` available: ``source(config, teacher)`` returns a
    :data:`CondSampler` (e.g. random training windows' audio features for GestureLSM)."""
    _CONDITION_SOURCES[name] = source


def load_teacher(cfg: DistillRecipeConfig, run_dir: Path) -> nn.Module:
    """The teacher module: the saved/trained toy teacher or a flow_backbones checkpoint."""
    tc = cfg.teacher
    if tc.kind == "toy2d":
        folder = run_dir / "teacher"
        model = ToyFlowMLP(width=tc.toy_width, depth=tc.toy_depth)
        weights = folder / "model.safetensors"
        if weights.is_file():
            load_model(model, str(weights), strict=True)
        else:
            model = train_toy_teacher(
                tc.toy_steps, width=tc.toy_width, depth=tc.toy_depth, seed=cfg.train.seed
            )
            atomic_directory(folder, lambda tmp: save_model(model, str(tmp / "model.safetensors")))
        return model.eval().requires_grad_(False)
    if not tc.path:
        raise ValueError("teacher.path: a teacher checkpoint folder is required (--teacher DIR)")
    import flow_backbones

    path = Path(tc.path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: teacher checkpoint folder not found")
    from gesture_apps.runtime.checkpoint import check_finite

    cls = getattr(flow_backbones, tc.backbone)
    try:
        model = cls.from_pretrained(path).eval().requires_grad_(False)
    except (ValueError, OSError):
        raise
    except Exception as e:  # safetensors raises its own error type for a damaged file
        message = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"{path}: cannot load the {tc.backbone} teacher ({message})"
        ) from None
    check_finite(model, path)  # a NaN teacher makes NaN targets for every pair
    return model


@dataclass
class LSMTeacher:
    """A ``gesture train lsm`` run as a distillation teacher."""

    bundle: Any  # pipelines.LSMBundle
    cond_sampler: CondSampler
    sample_shape: tuple[int, ...]


@torch.no_grad()
def load_lsm_teacher(cfg: DistillRecipeConfig) -> LSMTeacher:
    """Load the run and encode every training window's condition once (as reflow does)."""
    import dataclasses

    from gesture_apps.data.codec import DATA_KEYS
    from gesture_apps.data.latents import LatentWindows, encode_windows
    from gesture_apps.data.windows import PartWindows, load_windows
    from gesture_apps.systems.gesturelsm.pipeline import load_lsm
    from gesture_apps.systems.gesturelsm.reflow import _remap_words
    from gesture_data.datasets.windows import collate

    if not cfg.teacher.path:
        raise ValueError("teacher.path: pass a `gesture train lsm` run folder (--teacher DIR)")
    bundle = load_lsm(cfg.teacher.path, ema=cfg.teacher.weights == "ema")
    gen, tok = bundle.generator, bundle.tokenizer
    data = dataclasses.replace(cfg.data, pose_length=bundle.spec["pose_length"])
    windows, vocab = load_windows(data)
    _remap_words(windows, vocab, bundle.vocab)
    parts = [DATA_KEYS[p] for p in tok.part_names]
    latents = encode_windows(tok, PartWindows(windows, parts, bundle.normalizer))
    ds = LatentWindows(windows, latents)
    feats = []
    for i in range(0, len(ds), 64):
        b = collate([ds[j] for j in range(i, min(i + 64, len(ds)))])
        feats.append(gen.encoder(b["audio"], b["words"]))
    features = torch.cat(feats)
    s = gen.seed_frames
    seed = latents[:, :s].clone() if s else None

    def sample(n: int, g: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(len(features), (n,), generator=g)
        cond = {"features": features[idx]}
        if seed is not None:
            cond["seed"] = seed[idx]
        return cond

    return LSMTeacher(bundle, sample, tuple(latents.shape[1:]))


def export_lsm_student(teacher: LSMTeacher, student: nn.Module, folder: Path, info: dict) -> None:
    """Write the student as a ``gesture train lsm`` export: the teacher's encoder, tokenizer,
    normaliser and vocabulary with the one-step denoiser; sampling 1 step, guidance 1."""
    bundle = teacher.bundle
    gen = copy.deepcopy(bundle.generator)
    backbone = student.model if isinstance(student, OneStepGenerator) else student
    gen.denoiser.load_state_dict(backbone.state_dict())
    spec = copy.deepcopy(bundle.spec)
    spec["sample"] = {"steps": 1, "guidance": 1.0}
    spec["distill"] = info

    from gesture_apps.systems.gesturelsm.export import write_lsm_bundle

    def write(tmp: Path) -> None:
        write_lsm_bundle(
            tmp,
            spec=spec,
            generator=gen,
            tokenizer=bundle.tokenizer,
            normalizer=bundle.normalizer,
            vocab=bundle.vocab,
        )

    atomic_directory(folder, write)


@dataclass
class DistillRun:
    """What :func:`run` returns."""

    generator: nn.Module  # the exported one-step generator (APT EMA, or stage-1 EMA)
    metrics: dict[str, float]
    stage1: TrainResult
    apt: APTState | None


def _save_generator(gen: nn.Module, folder: Path, cfg: DistillRecipeConfig) -> None:
    backbone = gen.model if isinstance(gen, OneStepGenerator) else gen
    info = {
        "usage": "x1 = z + model(z, t=0, d=1, cond, keep=True), z ~ N(0, I)",
        "sample_shape": list(cfg.teacher.sample_shape),
        "teacher": to_plain(cfg.teacher),
    }

    def write(tmp: Path) -> None:
        if hasattr(backbone, "save_pretrained"):
            backbone.save_pretrained(tmp)
        else:
            save_model(backbone, str(tmp / "model.safetensors"))
        (tmp / "one_step.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    atomic_directory(folder, write)


def to_plain(obj: Any) -> Any:
    from gesture_apps.runtime import to_dict

    return to_dict(obj)


@torch.no_grad()
def distance_report(
    teacher: nn.Module,
    generators: dict[str, nn.Module],
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    cfg: ConsistencyConfig,
    n: int,
    seed: int = 12345,
) -> dict[str, float]:
    """Energy distances to the teacher's guided ``teacher_steps``-step samples (fresh noise and
    conditions from ``seed``): each generator's, the teacher's 1-step Euler sample's (the
    target of the reference hack), and a second independent teacher sample set's (the noise
    floor of the estimate)."""
    gen = torch.Generator().manual_seed(seed)
    cond = cond_sampler(n, gen)
    z_ref = torch.randn((n, *sample_shape), generator=gen)
    z = torch.randn((n, *sample_shape), generator=gen)
    kw = dict(guidance=cfg.guidance, solver=cfg.solver, pass_step_size=cfg.pass_step_size)
    ref = teacher_solution(teacher, z_ref, cond, steps=cfg.teacher_steps, **kw)
    out = {
        "teacher_resample": energy_distance(
            teacher_solution(teacher, z, cond, steps=cfg.teacher_steps, **kw), ref
        ),
        "teacher_1step": energy_distance(
            teacher_solution(teacher, z, cond, guidance=cfg.guidance, steps=1), ref
        ),
    }
    for name, g in generators.items():
        g.eval()
        out[name] = energy_distance(g(z, cond), ref)
    return out


def run(
    cfg: DistillRecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_start: Callable[[], None] | None = None,
) -> DistillRun:
    """:func:`run_stages`; the toy teacher runs on one thread (a 64-wide MLP only loses time
    to thread hand-offs, 20x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    if cfg.teacher.kind == "toy2d":
        torch.set_num_threads(1)
    try:
        return run_stages(cfg, out_dir, resume=resume, progress=progress, on_start=on_start)
    finally:
        torch.set_num_threads(threads)


def run_stages(
    cfg: DistillRecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_start: Callable[[], None] | None = None,
) -> DistillRun:
    """Both stages into ``out_dir``: ``teacher/`` (toy), ``consistency/`` and ``apt/`` (run
    folders with checkpoints), ``student/`` (the one-step model) and ``metrics.json``.
    With ``resume`` each stage continues from its latest checkpoint. Bad teacher settings
    raise before anything is written; ``on_start`` runs once the inputs are checked."""
    out = Path(out_dir)
    lsm = None
    if cfg.teacher.kind == "lsm":
        lsm = load_lsm_teacher(cfg)  # raises before anything is written
        cfg = copy.deepcopy(cfg)
        cfg.teacher.sample_shape = list(lsm.sample_shape)
        register_condition_source("lsm", lambda c, t: lsm.cond_sampler)
        cfg.teacher.conditions = "lsm"
    if cfg.teacher.conditions not in _CONDITION_SOURCES:
        known = ", ".join(sorted(_CONDITION_SOURCES))
        raise ValueError(
            f"teacher.conditions: unknown condition source {cfg.teacher.conditions!r} "
            f"(registered: {known}; the LSM recipe registers its own)"
        )
    torch.manual_seed(cfg.train.seed)
    if lsm is not None:
        teacher = lsm.bundle.generator.denoiser
    elif cfg.teacher.kind == "backbone":
        teacher = load_teacher(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start()
    if cfg.teacher.kind == "toy2d":
        teacher = load_teacher(cfg, out)
    cond_sampler = _CONDITION_SOURCES[cfg.teacher.conditions](cfg, teacher)
    shape = tuple(cfg.teacher.sample_shape)
    pairs = make_pairs(teacher, cond_sampler, shape, cfg.consistency)
    s1_dir = out / "consistency"
    s1_resume = s1_dir if resume and (s1_dir / "checkpoints" / "latest.txt").is_file() else None
    _, trainer, result = distill_consistency(
        teacher,
        cond_sampler,
        shape,
        config=cfg.consistency,
        train=cfg.train,
        out_dir=s1_dir,
        resume=s1_resume,
        progress=progress,
        pairs=pairs,
    )
    trainer.close()
    stage1 = ema_generator(trainer)
    generators = {"student_stage1": stage1}
    state = None
    final = stage1
    if cfg.apt.steps > 0:
        apt_dir = out / "apt"
        apt_resume = (
            apt_dir if resume and (apt_dir / "checkpoints" / "latest.txt").is_file() else None
        )
        state = adversarial_post_train(
            copy.deepcopy(stage1),
            teacher,
            pairs_sampler(pairs),
            config=cfg.apt,
            out_dir=apt_dir,
            resume=apt_resume,
        )
        final = state.ema_generator()
        generators["student_apt"] = final
    metrics = distance_report(
        teacher, generators, cond_sampler, shape, cfg.consistency, cfg.eval_samples
    )
    if lsm is not None:
        info = {"teacher": cfg.teacher.path, "energy_distance": metrics}
        export_lsm_student(lsm, final, out / "student", info)
    else:
        _save_generator(final, out / "student", cfg)
    text = json.dumps({"energy_distance": metrics}, indent=2)
    atomic_write(out / "metrics.json", lambda p: p.write_text(text, encoding="utf-8"))
    return DistillRun(final, metrics, result, state)

"""ODE samplers in library time (0 = noise -> 1 = data) and classifier-free guidance.

Every sampler integrates a velocity function ``model_fn(x (B, ...), t (B,), d (B,)) -> v``
from ``t = 0`` to ``t = 1``; ``d`` is the step size for models conditioned on it (shortcut,
MeanFlow) and 0 otherwise. Bind a condition and guidance with :func:`conditioned`.

* :func:`sample_euler`, :func:`sample_heun`: fixed-grid first/second-order solvers.
* :func:`sample_shortcut`: k equal steps of size ``1/k`` with ``d = 1/k`` (Frans et al. 2024,
  "One Step Diffusion via Shortcut Models", arXiv:2410.12557; GestureLSM's 2-step inference).
* :func:`sample_diffusers`: runs diffusers' ``FlowMatchEulerDiscreteScheduler`` with the
  sigma / sign conversions of :mod:`flow_backbones.flow`.
* :func:`conditioned`: binds a condition; with a guidance scale it runs the conditional and the
  unconditional branch in one batched forward (Ho & Salimans 2022, arXiv:2207.12598). A model
  with ``prepare_condition`` gets it called once per bound function (one sampling run), see
  :mod:`flow_backbones.conditional`.

:data:`ConditionalModel` lives in :mod:`flow_backbones.conditional` and is re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .conditional import ConditionalModel, PreparesCondition, prepare_condition
from .errors import FlowInputError
from .flow import (
    diffusers_timestep_to_t,
    shift_t,
    velocity_to_diffusers,
)
from .utils import tree_map

logger = logging.getLogger(__name__)

VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(x (B, ...), t (B,), d (B,)) -> velocity (B, ...)``."""


def make_noise(
    shape_or_x0: Tensor | tuple[int, ...],
    generator: torch.Generator | int | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Return ``x0`` as given, or draw ``N(0, I)`` of that shape from a generator or a seed."""
    if isinstance(shape_or_x0, Tensor):
        return shape_or_x0
    if isinstance(generator, int):
        generator = torch.Generator(device=device or "cpu").manual_seed(generator)
    gen_device = generator.device if generator is not None else device
    x = torch.randn(tuple(shape_or_x0), generator=generator, device=gen_device, dtype=dtype)
    return x.to(device) if device is not None else x


def time_grid(steps: int, *, shift: float = 1.0, device=None) -> Tensor:
    """``(steps + 1,)`` times from 0 to 1 (uniform, then :func:`~flow_backbones.flow.shift_t`)."""
    if steps < 1:
        raise FlowInputError(f"steps: expected >= 1, found {steps}")
    t = torch.linspace(0, 1, steps + 1, device=device)
    return shift_t(t, shift) if shift != 1.0 else t


def _check_grid(t_grid: Tensor) -> None:
    if t_grid.ndim != 1 or t_grid.numel() < 2:
        raise FlowInputError(
            f"t_grid: expected a 1-D grid of >= 2 times, found {tuple(t_grid.shape)}"
        )
    if (t_grid < 0).any() or (t_grid > 1).any() or (t_grid.diff() <= 0).any():
        raise FlowInputError("t_grid: expected strictly increasing times in [0, 1]")


@torch.no_grad()
def sample_euler(
    model_fn: VelocityFn,
    x0: Tensor | tuple[int, ...],
    steps: int = 20,
    *,
    t_grid: Tensor | None = None,
    shift: float = 1.0,
    pass_step_size: bool = False,
    generator: torch.Generator | int | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Euler integration ``x <- x + (t_{k+1} - t_k) v(x, t_k)`` from noise to data.

    Args:
        model_fn: velocity function (see module docstring).
        x0: starting noise ``(B, ...)``, or a shape to draw it with ``generator``.
        steps: number of steps on the uniform (optionally shifted) grid.
        t_grid: explicit increasing grid ``(K + 1,)``; overrides ``steps`` and ``shift``.
        pass_step_size: give the model ``d = t_{k+1} - t_k`` (GestureLSM does this for its
            shortcut model); otherwise ``d = 0``.
        generator: torch.Generator or seed, used only when ``x0`` is a shape.
        trajectory: if a list, the state after every step is appended (``x0`` first).

    Returns:
        The sample at ``t = 1``, same shape as ``x0``.
    """
    x = make_noise(x0, generator)
    grid = time_grid(steps, shift=shift, device=x.device) if t_grid is None else t_grid.to(x.device)
    _check_grid(grid)
    B = x.shape[0]
    if trajectory is not None:
        trajectory.append(x)
    for k in range(grid.numel() - 1):
        t, dt = grid[k], grid[k + 1] - grid[k]
        d = dt if pass_step_size else torch.zeros_like(dt)
        v = model_fn(x, t.expand(B), d.expand(B))
        x = x + dt * v
        if trajectory is not None:
            trajectory.append(x)
    return x


@torch.no_grad()
def sample_heun(
    model_fn: VelocityFn,
    x0: Tensor | tuple[int, ...],
    steps: int = 10,
    *,
    t_grid: Tensor | None = None,
    shift: float = 1.0,
    generator: torch.Generator | int | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Heun's second-order method: an Euler predictor, then the average of the velocities at
    both ends (2 model calls per step; ``t = 1`` is a valid model input in this convention)."""
    x = make_noise(x0, generator)
    grid = time_grid(steps, shift=shift, device=x.device) if t_grid is None else t_grid.to(x.device)
    _check_grid(grid)
    B = x.shape[0]
    zero = torch.zeros(B, device=x.device)
    if trajectory is not None:
        trajectory.append(x)
    for k in range(grid.numel() - 1):
        t, t_next = grid[k], grid[k + 1]
        dt = t_next - t
        v = model_fn(x, t.expand(B), zero)
        x_pred = x + dt * v
        v_next = model_fn(x_pred, t_next.expand(B), zero)
        x = x + dt * 0.5 * (v + v_next)
        if trajectory is not None:
            trajectory.append(x)
    return x


@torch.no_grad()
def sample_shortcut(
    model_fn: VelocityFn,
    x0: Tensor | tuple[int, ...],
    steps: int = 2,
    *,
    generator: torch.Generator | int | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """``steps`` equal jumps of size ``d = 1 / steps``, each telling the model ``d``.

    A shortcut (or MeanFlow) model trained on step sizes ``1, 1/2, ...`` predicts the average
    velocity over the jump, so 1 or 2 steps already land near the data.
    """
    if steps < 1:
        raise FlowInputError(f"steps: expected >= 1, found {steps}")
    if steps & (steps - 1):
        # shortcut models only ever see d = 2^-k in training
        logger.warning("sample_shortcut: steps=%d is not a power of two", steps)
    x = make_noise(x0, generator)
    B = x.shape[0]
    d = torch.full((B,), 1.0 / steps, device=x.device)
    if trajectory is not None:
        trajectory.append(x)
    for k in range(steps):
        t = torch.full((B,), k / steps, device=x.device)
        x = x + (1.0 / steps) * model_fn(x, t, d)
        if trajectory is not None:
            trajectory.append(x)
    return x


@torch.no_grad()
def sample_diffusers(
    model_fn: VelocityFn,
    x0: Tensor | tuple[int, ...],
    steps: int = 20,
    *,
    shift: float = 1.0,
    scheduler=None,
    generator: torch.Generator | int | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Sample with diffusers' ``FlowMatchEulerDiscreteScheduler`` driving our model.

    The scheduler counts noise level down (``sigma: 1 -> 0``, ``timestep = 1000 sigma``) and
    expects ``noise - data`` velocities; each step converts ``timestep -> t`` and ``v -> -v``.

    Args:
        scheduler: a configured ``FlowMatchEulerDiscreteScheduler`` (default: a new one with
            ``shift``). ``set_timesteps(steps)`` is called here, since the scheduler is stateful.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    x = make_noise(x0, generator)
    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps, device=x.device)
    n_train = scheduler.config.num_train_timesteps
    B = x.shape[0]
    zero = torch.zeros(B, device=x.device)
    if trajectory is not None:
        trajectory.append(x)
    for timestep in scheduler.timesteps:
        t = diffusers_timestep_to_t(timestep.float(), n_train).clamp(0, 1)
        v = model_fn(x, t.expand(B), zero)
        x = scheduler.step(velocity_to_diffusers(v), timestep, x).prev_sample
        if trajectory is not None:
            trajectory.append(x)
    return x


def diffusers_t_grid(steps: int, *, shift: float = 1.0) -> Tensor:
    """The time grid ``(steps + 1,)`` that :func:`sample_diffusers` walks, in library time.

    Passing it as ``t_grid`` to :func:`sample_euler` reproduces diffusers' trajectory.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    return 1 - sched.sigmas.float()


# ----- guidance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidanceSchedule:
    """Guidance weight as a function of time.

    ``kind="constant"``: ``scale`` everywhere. ``kind="linear"``: ``scale`` at ``t = 0`` (noise)
    annealed linearly to ``end_scale`` at ``t = 1`` (data), which keeps strong guidance for the
    coarse structure and relaxes it for details.
    """

    scale: float = 1.0
    kind: Literal["constant", "linear"] = "constant"
    end_scale: float = 1.0

    def __call__(self, t: Tensor) -> Tensor:
        if self.kind == "constant":
            return torch.full_like(t, self.scale)
        if self.kind == "linear":
            return self.scale + (self.end_scale - self.scale) * t
        raise FlowInputError(f"kind: expected 'constant' or 'linear', found {self.kind!r}")


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, scale: Tensor | float) -> Tensor:
    """``v_uncond + w (v_cond - v_uncond)``; ``scale`` a float or ``(B,)``."""
    if isinstance(scale, Tensor):
        scale = scale.reshape(-1, *([1] * (v_cond.ndim - 1))).to(v_cond.dtype)
    return v_uncond + scale * (v_cond - v_uncond)


def conditioned(
    model: ConditionalModel,
    cond: Any = None,
    *,
    guidance: GuidanceSchedule | float = 1.0,
) -> VelocityFn:
    """Bind ``cond`` to a :class:`~flow_backbones.conditional.ConditionalModel`, with
    classifier-free guidance.

    With a guidance weight of 1 everywhere the model runs once per call with ``keep = True``.
    Otherwise the batch is doubled, ``[conditional | unconditional]``, and the model runs once:
    one forward of batch ``2B`` instead of two of batch ``B``.

    If the model defines ``prepare_condition(cond, keep)``, it is called on the first call of
    the returned function (when the batch size is known) and its result is passed as ``cond``
    to that and every later call with the same batch size and device. One sampler run uses one
    bound function, so the preparation happens once per run; bind again after the model's
    weights change.
    """
    schedule = guidance if isinstance(guidance, GuidanceSchedule) else GuidanceSchedule(guidance)
    plain = schedule.kind == "constant" and schedule.scale == 1.0
    # only a preparing model is cached: for any other the condition is rebuilt per call as
    # before, so a bound function over a condition with autograd history can back-propagate
    # more than once
    caching = isinstance(model, PreparesCondition)
    cache: dict[tuple[int, torch.device], tuple[Any, Tensor]] = {}

    def bound(B: int, device: torch.device) -> tuple[Any, Tensor]:
        # (cond for the model, keep) of a batch of B rows; the guided batch is 2B rows
        if (B, device) in cache:
            return cache[(B, device)]
        ones = torch.ones(B, dtype=torch.bool, device=device)
        if plain:
            keep, c = ones, cond
        else:
            keep = torch.cat([ones, torch.zeros_like(ones)])
            c = tree_map(lambda c: torch.cat([c, c]), cond)
        if caching:
            cache[(B, device)] = (prepare_condition(model, c, keep), keep)
            return cache[(B, device)]
        return c, keep

    def fn(x: Tensor, t: Tensor, d: Tensor) -> Tensor:
        B = x.shape[0]
        c, keep = bound(B, x.device)
        if plain:
            return model(x, t, d, c, keep)
        v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([d, d]), c, keep)
        v_cond, v_uncond = v[:B], v[B:]
        return cfg_combine(v_cond, v_uncond, schedule(t))

    return fn


@torch.no_grad()
def sample_any_to_any(
    model: Callable[..., dict[str, Tensor]],
    conditions: dict[str, Tensor],
    generate: dict[str, Tensor | tuple[int, ...]],
    *,
    absent: dict[str, Tensor | tuple[int, ...]] | None = None,
    steps: int = 20,
    shift: float = 1.0,
    guidance: GuidanceSchedule | float = 1.0,
    x1_streams: tuple[str, ...] | set[str] = (),
    masks: dict[str, Tensor] | None = None,
    generator: torch.Generator | int | None = None,
    **model_kwargs: Any,
) -> dict[str, Tensor]:
    """Euler integration of the ``generate`` streams of a multi-stream model (an
    :class:`~flow_backbones.MMDiT`) with the other streams held fixed, OmniFlow's inference.

    Conditions are given clean (``t = 1``); ``absent`` streams are pure noise at ``t = 0``
    (drawn once). Guidance is "condition made absent": the unconditional branch replaces every
    condition stream by noise at ``t = 0``, as the model was trained with
    (:class:`~flow_backbones.MultiStreamFlowLoss`), and both branches run in one batched forward.

    Args:
        model: ``model(streams, timesteps, masks, **model_kwargs) -> {name: prediction}``.
        conditions: ``{name: (B, L, C)}`` clean condition streams.
        generate: ``{name: noise (B, L, C) or a shape}`` the streams to generate.
        absent: ``{name: noise or shape}`` streams the model carries but the task ignores.
        steps, shift: uniform grid with the SD3 resolution shift (OmniFlow infers with 3).
        guidance: weight (or :class:`GuidanceSchedule`); 1 runs the conditional branch only.
        x1_streams: streams whose model output is the clean data (converted to a velocity).
        masks: ``{name: (B, L) bool}`` real tokens (repeated for the guided batch).
        generator: draws the noise given as shapes.
        model_kwargs: passed to the model; tensors whose first dimension is the batch are
            repeated for the guided batch (``pooled=`` of the unconditional branch should be
            handled by the caller, e.g. zeroed, through ``uncond_kwargs``).

    Returns:
        ``{name: (B, L, C)}`` the generated streams at ``t = 1``.
    """
    from .flow import x1_to_velocity

    if not generate:
        raise FlowInputError("generate: expected at least one stream to generate")
    clash = set(conditions) & set(generate) | set(absent or {}) & (set(conditions) | set(generate))
    if clash:
        raise FlowInputError(f"streams {sorted(clash)} have more than one role")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    uncond_kwargs = model_kwargs.pop("uncond_kwargs", None)
    x = {n: make_noise(v, generator) for n, v in generate.items()}
    device = next(iter(x.values())).device
    x = {n: v.to(device) for n, v in x.items()}
    fixed = {n: make_noise(v, generator).to(device) for n, v in (absent or {}).items()}
    B = next(iter(x.values())).shape[0]
    schedule = guidance if isinstance(guidance, GuidanceSchedule) else GuidanceSchedule(guidance)
    plain = schedule.kind == "constant" and schedule.scale == 1.0
    ones, zeros = torch.ones(B, device=device), torch.zeros(B, device=device)
    cond_t = {n: ones for n in conditions}
    if not plain:
        # the unconditional branch: every condition becomes fresh noise at t = 0
        null = {n: make_noise(tuple(c.shape), generator).to(device) for n, c in conditions.items()}
        cond_streams = {n: torch.cat([c.to(device), null[n]]) for n, c in conditions.items()}
        cond_t = {n: torch.cat([ones, zeros]) for n in conditions}
        fixed = {n: torch.cat([v, v]) for n, v in fixed.items()}
        masks = {n: torch.cat([m, m]) for n, m in (masks or {}).items()} or None
        if uncond_kwargs is not None:
            model_kwargs = {
                k: torch.cat([v, uncond_kwargs[k]]) if k in uncond_kwargs else v
                for k, v in model_kwargs.items()
            }
    else:
        cond_streams = {n: c.to(device) for n, c in conditions.items()}
    absent_t = {n: torch.zeros(v.shape[0], device=device) for n, v in fixed.items()}
    grid = time_grid(steps, shift=shift, device=device)
    for k in range(steps):
        t, dt = grid[k], grid[k + 1] - grid[k]
        tb = t.expand(B)
        if plain:
            streams = {**cond_streams, **fixed, **x}
            times = {**cond_t, **absent_t, **{n: tb for n in x}}
        else:
            streams = {**cond_streams, **fixed, **{n: torch.cat([v, v]) for n, v in x.items()}}
            times = {**cond_t, **absent_t, **{n: torch.cat([tb, tb]) for n in x}}
        out = model(streams, times, masks, **model_kwargs)
        for n in x:
            xt = streams[n]
            v = out[n]
            if n in x1_streams:
                v = x1_to_velocity(v, xt, times[n])
            if not plain:
                v = cfg_combine(v[:B], v[B:], schedule(tb))
            x[n] = x[n] + dt * v
    return x

"""The time convention of the library and the linear (rectified) flow path.

Convention (GestureLSM's, used everywhere in ``flow_backbones``):

* ``t`` lies in ``[0, 1]``; ``t = 0`` is pure noise ``x0 ~ N(0, I)``, ``t = 1`` is data ``x1``.
* ``x_t = t * x1 + (1 - t) * x0`` and the velocity target is ``v = x1 - x0``.

diffusers' flow-matching schedulers (SD3, FlowMatchEulerDiscreteScheduler) run the other way:
``sigma = 1 - t`` is the noise level, ``timestep = 1000 * sigma`` and their model output is
``v_sd3 = x0 - x1 = -v``. Every conversion between the two lives in this module and nowhere else.

Time samplers for training: uniform, logit-normal (SD3), Beta(2, 1.2) (GestureLSM, skewed toward
data), cosmap (SD3 appendix) and a resolution shift.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .errors import FlowInputError

TimeSampler = Literal["uniform", "logit_normal", "beta", "cosmap"]

# sampled times are kept this far from the end points, so 1/t and 1/(1-t) weights stay finite
T_EPS = 1e-5


def check_t(t: Tensor, name: str = "t") -> None:
    """Raise :class:`FlowInputError` unless every value of ``t`` lies in ``[0, 1]``."""
    if not isinstance(t, Tensor):
        raise FlowInputError(f"{name}: expected a torch.Tensor, found {type(t).__name__}")
    if t.device.type == "meta":
        return
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise FlowInputError(
            f"{name}: times must lie in [0, 1] (0 = noise, 1 = data), found min "
            f"{t.min().item():.4g}, max {t.max().item():.4g}"
        )


def expand_t(
    t: Tensor | float, batch: int, device: torch.device | None = None, name: str = "t"
) -> Tensor:
    """Turn a scalar, ``()`` or ``(B,)`` time into a float ``(B,)`` tensor."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise FlowInputError(
            f"{name}: expected shape ({batch},) or a scalar, found {tuple(t.shape)}"
        )
    return t


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    # (B,) -> (B, 1, ..., 1) so that it multiplies a (B, ...) sample
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``x_t = t * x1 + (1 - t) * x0``; ``x0``/``x1`` ``(B, ...)``, ``t`` ``(B,)``."""
    if x0.shape != x1.shape:
        raise FlowInputError(
            f"x0/x1: expected equal shapes, found {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    tb = _bcast(t, x1)
    return tb * x1 + (1 - tb) * x0


def velocity_target(x0: Tensor, x1: Tensor) -> Tensor:
    """The constant velocity of the straight path, ``v = x1 - x0``."""
    return x1 - x0


def x1_to_velocity(x1_pred: Tensor, x_t: Tensor, t: Tensor, eps: float = T_EPS) -> Tensor:
    """Velocity implied by a data (x1) prediction: ``v = (x1_hat - x_t) / (1 - t)``."""
    return (x1_pred - x_t) / _bcast((1 - t).clamp_min(eps), x_t)


def velocity_to_x1(v: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """Data estimate implied by a velocity: ``x1_hat = x_t + (1 - t) * v``."""
    return x_t + _bcast(1 - t, x_t) * v


# ----- diffusers conversions -----------------------------------------------------------------


def t_to_sigma(t: Tensor) -> Tensor:
    """Library time -> diffusers noise level ``sigma = 1 - t``."""
    return 1 - t


def sigma_to_t(sigma: Tensor) -> Tensor:
    """diffusers noise level -> library time ``t = 1 - sigma``."""
    return 1 - sigma


def t_to_diffusers_timestep(t: Tensor, num_train_timesteps: int = 1000) -> Tensor:
    """Library time -> diffusers ``timestep = num_train_timesteps * sigma``."""
    return num_train_timesteps * (1 - t)


def diffusers_timestep_to_t(timestep: Tensor, num_train_timesteps: int = 1000) -> Tensor:
    """diffusers ``timestep`` (``1000 * sigma``) -> library time."""
    return 1 - timestep / num_train_timesteps


def velocity_to_diffusers(v: Tensor) -> Tensor:
    """Library velocity ``x1 - x0`` -> diffusers (SD3) model output ``x0 - x1``."""
    return -v


def velocity_from_diffusers(v_sd3: Tensor) -> Tensor:
    """diffusers (SD3) model output ``noise - data`` -> library velocity ``data - noise``."""
    return -v_sd3


# ----- time sampling ---------------------------------------------------------------------------


def shift_t(t: Tensor, shift: float) -> Tensor:
    """Resolution shift (SD3 eq. 23) in library time.

    SD3 shifts the noise level ``sigma' = s sigma / (1 + (s - 1) sigma)``; ``s > 1`` spends more
    of the schedule at high noise, i.e. small ``t``. Here ``t' = 1 - sigma'`` with
    ``sigma = 1 - t``. ``shift = 1`` is the identity.
    """
    if shift <= 0:
        raise FlowInputError(f"shift: expected a positive number, found {shift}")
    sigma = 1 - t
    return 1 - shift * sigma / (1 + (shift - 1) * sigma)


def sample_t(
    kind: TimeSampler,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    beta_alpha: float = 2.0,
    beta_beta: float = 1.2,
    shift: float = 1.0,
    eps: float = T_EPS,
) -> Tensor:
    """Draw ``n`` training times in ``[eps, 1 - eps]`` (library convention).

    Args:
        kind: ``"uniform"``; ``"logit_normal"`` (``sigmoid(N(logit_mean, logit_std))``, SD3);
            ``"beta"`` (``Beta(beta_alpha, beta_beta)``; the default (2, 1.2) is GestureLSM's,
            which puts more mass near data); ``"cosmap"`` (SD3's cosine map, inverse-CDF sampled).
        n: number of samples.
        generator: source of randomness (a CPU generator works for any ``device``).
        shift: optional resolution shift applied after sampling (see :func:`shift_t`).

    Returns:
        ``(n,)`` float32 times.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device)
    if kind == "uniform":
        t = u
    elif kind == "logit_normal":
        z = torch.randn(n, generator=generator, device=gen_device)
        t = torch.sigmoid(logit_mean + logit_std * z)
    elif kind == "beta":
        # torch.distributions.Beta takes no generator, so draw the two Gammas ourselves
        t = _beta_sample(beta_alpha, beta_beta, n, generator, gen_device)
    elif kind == "cosmap":
        # SD3 appendix: sigma = 1 - 1 / (tan(pi u / 2) + 1)
        sigma = 1 - 1 / (torch.tan(math.pi * u / 2) + 1)
        t = 1 - sigma
    else:
        raise FlowInputError(
            f"kind: expected one of uniform, logit_normal, beta, cosmap, found {kind!r}"
        )
    if shift != 1.0:
        t = shift_t(t, shift)
    t = t.clamp(eps, 1 - eps).float()
    return t.to(device) if device is not None else t


def _gamma_sample(
    alpha: float, n: int, generator: torch.Generator | None, device
) -> Tensor:  # Marsaglia & Tsang (2000); alpha < 1 via the u^(1/alpha) boost
    boost = alpha < 1
    a = alpha + 1 if boost else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(n, device=device)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 8
        z = torch.randn(m, generator=generator, device=device)
        u = torch.rand(m, generator=generator, device=device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (
            torch.log(u.clamp_min(1e-30))
            < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-30))
        )
        acc = (d * v)[ok][: n - filled]
        out[filled : filled + acc.numel()] = acc
        filled += acc.numel()
    if boost:
        u = torch.rand(n, generator=generator, device=device)
        out = out * u ** (1 / alpha)
    return out


def _beta_sample(a: float, b: float, n: int, generator, device) -> Tensor:
    if a <= 0 or b <= 0:
        raise FlowInputError(f"beta_alpha/beta_beta: expected positive values, found {a}, {b}")
    x = _gamma_sample(a, n, generator, device)
    y = _gamma_sample(b, n, generator, device)
    return x / (x + y)


def loss_weight(kind: str, t: Tensor) -> Tensor:
    """Per-sample loss weights ``(B,)`` for a flow-matching loss at times ``t``.

    ``"none"``: ones. ``"inv_t"``: ``1 / t`` (GestureLSM divides its MSE by ``t``).
    ``"cosmap"``: SD3's ``2 / (pi (1 - 2 sigma + 2 sigma^2))``. ``"sigma_sqrt"``: ``sigma^-2``.
    """
    sigma = 1 - t
    if kind == "none":
        return torch.ones_like(t)
    if kind == "inv_t":
        return 1 / t.clamp_min(T_EPS)
    if kind == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
    if kind == "sigma_sqrt":
        return sigma.clamp_min(T_EPS) ** -2.0
    raise FlowInputError(
        f"weighting: expected one of none, inv_t, cosmap, sigma_sqrt, found {kind!r}"
    )

"""Any-to-any flow matching over several streams with per-stream times.

Li et al. 2025, "OmniFlow: Any-to-Any Generation with Multi-Modal Rectified Flows"
(arXiv:2412.01169), section 3 and its training script: every stream of a multi-stream model
(:class:`~flow_backbones.MMDiT`) carries its own time, and a task is nothing more than a role per
stream:

* ``generate``: the stream is noised at a logit-normal time and its loss counts;
* ``condition``: clean (``t = 1``) with probability ``p_clean``, otherwise noised at its own
  sampled time (noise augmentation); its loss is off;
* ``absent``: pure noise (``t = 0``) and no loss, exactly what the model sees at inference for a
  stream it neither reads nor writes.

Classifier-free guidance needs no extra machinery: a dropped condition becomes ``absent``
(OmniFlow's ``cfg_mode="new"``), so the unconditional branch at inference is "condition made
pure noise". The ``any2any`` task draws a role per stream and row (OmniFlow's mixed mode).

Times follow the library convention (``t = 0`` noise, ``t = 1`` data; OmniFlow's sigma is
``1 - t``), so a stream at ``t = 0`` is the same pure noise as OmniFlow's ``timestep = 1000``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FlowInputError
from ..flow import interpolate, sample_t, velocity_target
from ._common import draw_x0

Role = Literal["generate", "condition", "absent"]
ROLES = ("generate", "condition", "absent")
ANY2ANY = "any2any"

MultiStreamModel = Callable[..., dict[str, Tensor]]
"""``model(streams {name: (B, L, C)}, timesteps {name: (B,)}, masks, **kwargs) -> {name: pred}``
(the signature of :meth:`flow_backbones.MMDiT.forward`)."""


def omniges_tasks() -> dict[str, dict[str, Role]]:
    """The six directions between text, audio and gesture (Omniges' t2g, g2t, a2g, g2a, t2a,
    a2t, mapped as Omniges maps them onto OmniFlow's image tasks)."""
    names = {"t": "text", "a": "audio", "g": "gesture"}
    tasks: dict[str, dict[str, Role]] = {}
    for src in "tag":
        for dst in "tag":
            if src == dst:
                continue
            roles: dict[str, Role] = {n: "absent" for n in names.values()}
            roles[names[src]], roles[names[dst]] = "condition", "generate"
            tasks[f"{src}2{dst}"] = roles
    return tasks


class MultiStreamLossOutput(NamedTuple):
    """loss: scalar to backprop. per_stream: ``{name: scalar}`` the weighted loss of each stream
    (summed into ``loss``). per_task: ``{task: scalar}`` the mean unweighted loss of the rows
    of each task present in the batch. t: ``{name: (B,)}`` the times used. task: ``(B,)`` the
    task index of every row (into :attr:`MultiStreamFlowLoss.task_names`)."""

    loss: Tensor
    per_stream: dict[str, Tensor]
    per_task: dict[str, Tensor]
    t: dict[str, Tensor]
    task: Tensor


class MultiStreamFlowLoss:
    """OmniFlow's any-to-any objective for a multi-stream velocity model.

    Args:
        streams: the stream names every batch carries (all present in every row; a stream's
            role decides its time and whether its loss counts).
        tasks: ``{task: {stream: role}}`` or ``{task: "any2any"}``; every stream needs a role
            (missing streams are ``absent``). Default: :func:`omniges_tasks`.
        task_probs: sampling probabilities per task (``schedule="random"``); default uniform.
        schedule: ``"random"`` draws each row's task from ``task_probs``; ``"round_robin"``
            gives the rows of a batch the tasks in turn from a random offset, so every task gets
            ``B / n_tasks`` rows of every batch (the offset comes from torch's RNG, so a resumed
            run repeats it).
        task_loss_weights: ``{task: weight}`` multiplies the loss of that task's rows (default 1).
        p_clean: probability that a condition stream is clean; otherwise it is noise-augmented
            at its own sampled time (OmniFlow: 0.8).
        cond_drop: probability that a row's condition streams are made absent (guidance).
        any2any_p: in ``any2any`` rows each stream is, with this probability, either pure noise
            with its loss kept or clean with its loss off (half each); otherwise it is noised at
            a sampled time and trained (OmniFlow: 0.2).
        x1_streams: streams whose model output is the clean data rather than a velocity
            (OmniFlow's ``--precondition_text_outputs`` for text latents).
        x1_norm_weight: extra weight on the MSE of the layer-normalised ``x1`` prediction of
            those streams (OmniFlow: 0.1), because their latents are layer-normalised.
        t_sampler, **t_kwargs: how noised times are drawn (:func:`~flow_backbones.flow.sample_t`;
            OmniFlow: logit-normal, mean 0, std 1).
    """

    def __init__(
        self,
        streams: Sequence[str],
        tasks: Mapping[str, Mapping[str, Role] | str] | None = None,
        *,
        task_probs: Mapping[str, float] | None = None,
        schedule: Literal["random", "round_robin"] = "random",
        task_loss_weights: Mapping[str, float] | None = None,
        p_clean: float = 0.8,
        cond_drop: float = 0.15,
        any2any_p: float = 0.2,
        x1_streams: Sequence[str] = (),
        x1_norm_weight: float = 0.1,
        t_sampler: str = "logit_normal",
        **t_kwargs: float,
    ) -> None:
        self.streams = list(streams)
        if not self.streams:
            raise FlowInputError("streams: expected at least one stream name")
        tasks = omniges_tasks() if tasks is None else tasks
        if not tasks:
            raise FlowInputError("tasks: expected at least one task")
        self.task_names = list(tasks)
        self.tasks: dict[str, dict[str, Role] | str] = {}
        for name, roles in tasks.items():
            if roles == ANY2ANY:
                self.tasks[name] = ANY2ANY
                continue
            if not isinstance(roles, Mapping):
                raise FlowInputError(f"tasks[{name!r}]: expected {{stream: role}} or 'any2any'")
            unknown = [s for s in roles if s not in self.streams]
            bad = {s: r for s, r in roles.items() if r not in ROLES}
            if unknown or bad:
                raise FlowInputError(
                    f"tasks[{name!r}]: unknown stream(s) {unknown} or role(s) {bad}; streams "
                    f"are {self.streams}, roles are {ROLES}"
                )
            if "generate" not in roles.values():
                raise FlowInputError(f"tasks[{name!r}]: no stream is generated")
            self.tasks[name] = {s: roles.get(s, "absent") for s in self.streams}
        probs = task_probs or {n: 1.0 for n in self.task_names}
        missing = [n for n in probs if n not in self.tasks]
        if missing or any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
            raise FlowInputError(
                f"task_probs: expected non-negative weights for tasks {self.task_names}, "
                f"found {dict(probs)}"
            )
        self.task_probs = torch.tensor([float(probs.get(n, 0.0)) for n in self.task_names])
        if schedule not in ("random", "round_robin"):
            raise FlowInputError(
                f"schedule: expected 'random' or 'round_robin', found {schedule!r}"
            )
        self.schedule = schedule
        weights = task_loss_weights or {}
        self.task_loss_weights = torch.tensor([float(weights.get(n, 1.0)) for n in self.task_names])
        for name, p in (("p_clean", p_clean), ("cond_drop", cond_drop), ("any2any_p", any2any_p)):
            if not 0.0 <= p <= 1.0:
                raise FlowInputError(f"{name}: expected a probability in [0, 1], found {p}")
        self.p_clean, self.cond_drop, self.any2any_p = p_clean, cond_drop, any2any_p
        bad_x1 = [s for s in x1_streams if s not in self.streams]
        if bad_x1:
            raise FlowInputError(f"x1_streams: unknown stream(s) {bad_x1}")
        self.x1_streams, self.x1_norm_weight = set(x1_streams), x1_norm_weight
        self.t_sampler, self.t_kwargs = t_sampler, t_kwargs

    # ----- roles -----------------------------------------------------------------------------

    def draw_tasks(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """``(B,)`` task index of every row."""
        n = len(self.task_names)
        if self.schedule == "round_robin":
            offset = int(torch.randint(n, (1,), generator=generator))
            return (torch.arange(batch) + offset) % n
        return torch.multinomial(self.task_probs, batch, replacement=True, generator=generator)

    def roles(
        self, task: Tensor, generator: torch.Generator | None = None, device=None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Times and loss masks of every stream for rows of tasks ``task (B,)``.

        Returns ``({stream: t (B,)}, {stream: loss weight (B,)})``; the weight already holds
        the task's loss weight and is 0 for a stream that is not trained in that row.
        """
        B = task.shape[0]

        def u() -> Tensor:
            return torch.rand(B, generator=generator)

        t_out, w_out = {}, {}
        drop = u() < self.cond_drop  # (B,) this row trains unconditionally
        clean = {s: u() < self.p_clean for s in self.streams}
        mix = {s: u() for s in self.streams}
        for s in self.streams:
            t = sample_t(self.t_sampler, B, generator=generator, **self.t_kwargs)
            w = torch.zeros(B)
            for k, name in enumerate(self.task_names):
                rows = task == k
                if not rows.any():
                    continue
                roles = self.tasks[name]
                if roles == ANY2ANY:
                    m = mix[s]
                    noise = m < self.any2any_p / 2
                    given = (m >= self.any2any_p / 2) & (m < self.any2any_p)
                    t = torch.where(rows & noise, 0.0, t)
                    t = torch.where(rows & given, 1.0, t)
                    w = torch.where(rows & ~given, 1.0, w)
                    continue
                role = roles[s]
                if role == "generate":
                    w = torch.where(rows, 1.0, w)
                elif role == "absent":
                    t = torch.where(rows, 0.0, t)
                else:  # condition: clean or noise-augmented, made absent when dropped
                    t = torch.where(rows & clean[s], 1.0, t)
                    t = torch.where(rows & drop, 0.0, t)
            t_out[s] = t.to(device)
            w_out[s] = (w * self.task_loss_weights[task]).to(device)
        return t_out, w_out

    # ----- loss ------------------------------------------------------------------------------

    def __call__(
        self,
        model: MultiStreamModel,
        x1: Mapping[str, Tensor],
        *,
        masks: Mapping[str, Tensor] | None = None,
        task: Tensor | None = None,
        x0: Mapping[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        **model_kwargs,
    ) -> MultiStreamLossOutput:
        """Loss of ``model`` on clean streams ``x1 {name: (B, L, C)}``.

        Args:
            masks: ``{name: (B, L) bool}`` real tokens (padded tokens carry no loss).
            task: ``(B,)`` fixed task indices (default: drawn per :attr:`schedule`).
            x0: fixed noise per stream (default ``N(0, I)``).
            generator: CPU generator for roles, times and noise (default: torch's RNG).
            model_kwargs: passed to ``model`` (``pooled=``, ``positions=``...).
        """
        missing = [s for s in self.streams if s not in x1]
        if missing:
            raise FlowInputError(f"x1: stream(s) {missing} missing; the loss needs {self.streams}")
        ref = x1[self.streams[0]]
        B, device = ref.shape[0], ref.device
        if task is None:
            task = self.draw_tasks(B, generator)
        task = task.cpu()
        if task.shape != (B,) or task.min() < 0 or task.max() >= len(self.task_names):
            raise FlowInputError(f"task: expected {B} indices < {len(self.task_names)}")
        t, w = self.roles(task, generator, device)
        xt, target = {}, {}
        for s in self.streams:
            noise = draw_x0(x1[s], None if x0 is None else x0.get(s), generator)
            xt[s] = interpolate(noise, x1[s], t[s])
            target[s] = x1[s] if s in self.x1_streams else velocity_target(noise, x1[s])
        pred = model(xt, t, dict(masks) if masks else None, **model_kwargs)

        per_stream, rows_loss = {}, torch.zeros(B, device=device)
        for s in self.streams:
            if s not in pred:
                if bool((w[s] > 0).any()):
                    raise FlowInputError(f"model output: no prediction for trained stream {s!r}")
                continue
            err = (pred[s] - target[s]).pow(2).mean(-1)  # (B, L)
            if s in self.x1_streams and self.x1_norm_weight:
                ln = F.layer_norm(pred[s], pred[s].shape[-1:]) - F.layer_norm(
                    target[s], target[s].shape[-1:]
                )
                err = err + self.x1_norm_weight * ln.pow(2).mean(-1)
            m = None if masks is None else masks.get(s)
            if m is None:
                row = err.mean(1)
            else:
                m = m.to(err.dtype)
                row = (err * m).sum(1) / m.sum(1).clamp_min(1.0)
            per_stream[s] = (w[s] * row).mean()
            rows_loss = rows_loss + (w[s] > 0) * row.detach()
        loss = sum(per_stream.values()) if per_stream else ref.new_zeros(())
        per_task = {}
        for k, name in enumerate(self.task_names):
            rows = (task == k).to(device)
            if rows.any():
                per_task[name] = rows_loss[rows].mean()
        return MultiStreamLossOutput(loss, per_stream, per_task, t, task)

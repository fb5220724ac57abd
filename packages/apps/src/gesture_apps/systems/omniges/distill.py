"""One-step Omniges: a ``gesture train omniges`` bundle as a teacher of the generic distill system.

``teacher.kind: omniges`` in a ``distill`` config resolves to :func:`load_omniges_teacher`
through :data:`gesture_apps.systems.distill.teachers.TEACHER_KINDS`. One direction is distilled
at a time, ``teacher.task`` ``a2g`` (audio -> gesture) or ``t2g`` (text -> gesture): the
teacher is the bundle's MMDiT read as a ``ConditionalModel`` of the gesture tokens
(:class:`OmnigesTaskModel`, OmniFlow's inference roles as in
:func:`flow_backbones.sample_any_to_any`), its conditions are the condition stream of the
training windows of ``data`` encoded once by the bundle's frozen codecs, and the student is
exported as an Omniges bundle that samples in 1 step with guidance 1 and serves only that task,
so ``gesture generate --checkpoint OUT/student --task a2g --audio x.wav`` runs it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flow_backbones import MMDiT
from flow_backbones.distillation import OneStepGenerator
from gesture_apps.errors import ConfigError
from gesture_apps.systems.distill.config import DistillRecipeConfig
from gesture_apps.systems.distill.teachers import Teacher
from gesture_apps.systems.omniges.data import load_wave_windows, window_sources
from gesture_apps.systems.omniges.model import PositionedMMDiT, StreamGeometry
from gesture_apps.systems.omniges.pipeline import NAMES, OmnigesPipeline
from motion_tokenizers.io import atomic_directory

logger = logging.getLogger(__name__)

DISTILLED_TASKS = ("a2g", "t2g")


class OmnigesTaskModel(nn.Module):
    """One gesture-generating task of an Omniges MMDiT as a ``ConditionalModel``.

    ``model(x, t, d, cond, keep) -> v``: ``x`` ``(B, Ng, Dg)`` the gesture tokens at time ``t``
    ``(B,)``; ``d`` is ignored (a plain flow model). ``cond`` is a dict of

    * ``"tokens"`` ``(B, Lc, Cc)``: the standardised condition stream (audio or text tokens),
      given clean at ``t = 1`` on the ``keep`` rows;
    * ``"null"`` ``(B, Lc, Cc)``: the noise that replaces it at ``t = 0`` on the other rows
      (guidance is "condition made absent", as the model was trained);
    * ``"absent"`` ``(B, L3, C3)``: the third stream, pure noise at ``t = 0``.

    The noises travel in ``cond`` (drawn by the condition sampler) so that the teacher is a
    deterministic function of ``(x, t, cond, keep)``, which distillation targets need.
    """

    def __init__(self, mmdit: MMDiT, geometry: StreamGeometry, task: str):
        super().__init__()
        if task not in DISTILLED_TASKS:
            raise ConfigError(
                f"teacher.task: expected one of {', '.join(DISTILLED_TASKS)}, found {task!r}"
            )
        self.net = PositionedMMDiT(mmdit, geometry)
        self.task = task
        self.source = NAMES[task[0]]
        self.third = next(n for n in NAMES.values() if n not in (self.source, "gesture"))

    @property
    def mmdit(self) -> MMDiT:
        return self.net.mmdit

    def forward(
        self, x: Tensor, t: Tensor, d: Tensor, cond: dict[str, Tensor], keep: Tensor
    ) -> Tensor:
        tokens = torch.where(keep[:, None, None], cond["tokens"], cond["null"])
        streams = {self.source: tokens, self.third: cond["absent"], "gesture": x}
        times = {
            self.source: keep.to(x.dtype),  # 1: clean condition, 0: condition made absent
            self.third: torch.zeros_like(t),
            "gesture": t,
        }
        return self.net(streams, times)["gesture"]


@torch.no_grad()
def encode_conditions(pipe: OmnigesPipeline, cfg: DistillRecipeConfig) -> Tensor:
    """The condition stream of every training window of ``cfg.data`` (at the bundle's window
    length): standardised audio tokens ``(N, La, Ca)`` (a2g) or text latents ``(N, n, dv)``
    (t2g), encoded by the bundle's frozen codecs as ``gesture train omniges`` does."""
    data = dataclasses.replace(cfg.data, pose_length=pipe.pose_length)
    windows, vocab = load_wave_windows(data)
    sources = window_sources(windows, vocab)
    if not sources.waves:
        raise ConfigError(
            f"data: no windows of {pipe.pose_length} frames in {data.source} (the teacher's "
            "window length): use longer clips"
        )
    geo = pipe.geo
    if cfg.teacher.task == "a2g":
        chunks = []
        for s in range(0, len(sources.waves), 16):
            wave = torch.from_numpy(np.stack(sources.waves[s : s + 16]))
            chunks.append(geo.audio_to_tokens(pipe.codec.encode(wave.to(pipe.device))))
        tokens = geo.normalize("audio", torch.cat(chunks))
        expected = (geo.audio_tokens, geo.audio_dim)
    else:
        tokens = torch.cat(
            [pipe.encode_text(sources.texts[s : s + 64]) for s in range(0, len(sources.texts), 64)]
        )
        expected = (geo.text_tokens, geo.text_dim)
    if tuple(tokens.shape[1:]) != expected:
        # a data source whose sample rate or window differs from the teacher's training data
        raise ConfigError(
            f"data: {cfg.teacher.task} condition tokens of shape {tuple(tokens.shape[1:])}, "
            f"the teacher's streams expect {expected}"
        )
    return tokens.float().cpu()


@torch.no_grad()
def load_omniges_teacher(cfg: DistillRecipeConfig, run_dir: Path | None = None) -> Teacher:
    """The Omniges bundle ``teacher.path`` distilled for ``teacher.task``.

    ``sample_shape`` is one window's gesture tokens ``(Ng, Dg)``; the condition sampler draws
    training windows' condition tokens with fresh guidance / third-stream noises. ``run_dir``
    (the distill run folder) is not used: nothing is written before training.
    """
    tc = cfg.teacher
    if not tc.path:
        raise ValueError("teacher.path: pass a `gesture train omniges` bundle (--teacher DIR)")
    if tc.task not in DISTILLED_TASKS:
        raise ConfigError(
            f"teacher.task: expected one of {', '.join(DISTILLED_TASKS)}, found {tc.task!r}"
        )
    pipe = OmnigesPipeline.from_pretrained(tc.path, ema=tc.weights == "ema")
    trained = pipe.spec.get("tasks", [])
    if tc.task not in trained:
        raise ConfigError(
            f"teacher.task: {tc.path} was trained for {', '.join(trained)}, not {tc.task}"
        )
    model = OmnigesTaskModel(pipe.mmdit, pipe.geo, tc.task).eval().requires_grad_(False)
    conditions = encode_conditions(pipe, cfg)
    geo = pipe.geo
    third = (geo.audio_tokens, geo.audio_dim) if model.third == "audio" else None
    third = third or (geo.text_tokens, geo.text_dim)
    logger.info("omniges %s teacher: %d condition windows", tc.task, len(conditions))

    def sample(n: int, g: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(len(conditions), (n,), generator=g)
        tokens = conditions[idx]
        return {
            "tokens": tokens,
            "null": torch.randn(tokens.shape, generator=g),
            "absent": torch.randn((n, *third), generator=g),
        }

    def export(student: nn.Module, folder: Path, info: dict) -> None:
        export_omniges_student(pipe, student, folder, tc.task, info)

    return Teacher(model, sample, (geo.gesture_tokens, geo.gesture_dim), export)


def export_omniges_student(
    pipe: OmnigesPipeline, student: nn.Module, folder: Path, task: str, info: dict
) -> None:
    """Write the student as an Omniges bundle: the teacher's codecs and geometry with the
    student's MMDiT; sampling 1 step, guidance 1, and ``tasks`` ``[task]`` so that the pipeline
    refuses the directions the student was not trained for."""
    backbone = student.model if isinstance(student, OneStepGenerator) else student
    if not isinstance(backbone, OmnigesTaskModel):
        raise TypeError(f"expected an OmnigesTaskModel student, found {type(backbone).__name__}")
    mmdit = copy.deepcopy(backbone.mmdit).eval()
    spec = copy.deepcopy(pipe.spec)
    # one Euler step over [0, 1] lands on the same point whatever the grid's shift
    spec["sample"] = {**spec["sample"], "steps": 1, "guidance": 1.0}
    spec["tasks"] = [task]
    spec["distill"] = info
    out = OmnigesPipeline(
        mmdit=mmdit,
        geometry=pipe.geo,
        tokenizer=pipe.tokenizer,
        normalizer=pipe.normalizer,
        codec=pipe.codec,
        text_vae=pipe.text_vae,
        spec=spec,
    )
    atomic_directory(folder, out.save_pretrained)


def one_step_student(pipe: OmnigesPipeline, task: str) -> OneStepGenerator:
    """The one-step generator ``G(z (B, Ng, Dg), cond) -> (B, Ng, Dg)`` of an exported student
    bundle (or a one-step Euler of any Omniges bundle), ``cond`` as :class:`OmnigesTaskModel`."""
    return OneStepGenerator(OmnigesTaskModel(pipe.mmdit, pipe.geo, task)).eval()

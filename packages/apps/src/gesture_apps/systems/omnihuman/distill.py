"""One-step OmniHuman: a ``gesture train omnihuman`` bundle as a teacher of the generic distill
system (endpoint or consistency stage 1, then Seaweed-APT).

``teacher.kind: omnihuman`` resolves to :func:`load_omnihuman_teacher` through
:data:`gesture_apps.systems.distill.teachers.TEACHER_KINDS`. One condition mode is distilled at
a time (``teacher.task``: ``audio``, text + reference + audio, or ``pose``, every condition):
the teacher is the bundle's model read as a ``ConditionalModel`` of one segment's latents
(:class:`OmniHumanTaskModel`; its ``keep`` flag is classifier-free guidance's, dropping text
and audio), its conditions are the segments of ``data`` encoded once by the bundle's VAE, and
the student is exported as an OmniHuman bundle that samples in one step without guidance, so
``gesture generate --checkpoint OUT/student --reference ... --audio ...`` runs it. Seaweed-APT's
discriminator is a copy of the backbone with query heads on three of its blocks; video uses
the time shift 12 and R1 sigma 0.1 (the preset ``distill/omnihuman``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from flow_backbones.distillation import OneStepGenerator
from gesture_apps.errors import ConfigError
from gesture_apps.systems.distill.config import DistillRecipeConfig
from gesture_apps.systems.distill.teachers import Teacher
from gesture_apps.systems.omnihuman.data import VideoDataConfig, build_segments, load_clips
from gesture_apps.systems.omnihuman.model import CONDITIONS, OmniHumanModel
from gesture_apps.systems.omnihuman.pipeline import MODES, OmniHumanPipeline
from motion_tokenizers.io import atomic_directory

logger = logging.getLogger(__name__)

DISTILLED_MODES = ("audio", "pose")
_COND_KEYS = ("reference", "motion", "has_motion", "audio", "audio_motion", "text", "text_mask")


class OmniHumanTaskModel(nn.Module):
    """One condition mode of an OmniHuman model as a ``ConditionalModel``.

    ``model(x, t, d, cond, keep) -> v`` with ``x`` ``(B, C, n, h, w)``; ``cond`` holds the
    tensors of a training segment (``reference``, ``motion``, ``has_motion``, ``audio``,
    ``audio_motion``, ``text``, ``text_mask`` and, for ``pose``, ``keypoints`` and
    ``confidence``); ``keep`` False rows drop text and audio (the guidance baseline)."""

    def __init__(self, model: OmniHumanModel, mode: str):
        super().__init__()
        if mode not in DISTILLED_MODES:
            raise ConfigError(
                f"teacher.task: expected one of {', '.join(DISTILLED_MODES)}, found {mode!r}"
            )
        self.model, self.mode = model, mode

    def forward(self, x: Tensor, t: Tensor, d: Tensor | None, cond: dict, keep: Tensor) -> Tensor:
        B = x.shape[0]
        on = set(MODES[self.mode])
        use = {
            c: torch.full((B,), c in on, dtype=torch.bool, device=x.device)
            for c in CONDITIONS
            if c != "motion"
        }
        use["motion"] = cond["has_motion"].bool()
        return self.model(x, t, d, {**cond, "use": use}, keep)


def _data_config(cfg: DistillRecipeConfig, spec: dict) -> VideoDataConfig:
    d = cfg.data
    return VideoDataConfig(
        source=d.source,
        num_clips=d.num_clips,
        seconds=d.seconds,
        seed=d.seed,
        split=d.split,
        speakers=d.speakers,
        size=int(spec["size"]),
        fps=float(spec["fps"]),
        segment_frames=int(spec["segment_frames"]),
        stride=d.stride,
    )


@torch.no_grad()
def load_omnihuman_teacher(cfg: DistillRecipeConfig, run_dir: Path | None = None) -> Teacher:
    """The OmniHuman bundle ``teacher.path`` distilled for the condition mode ``teacher.task``;
    ``sample_shape`` is one segment's latents ``(C, n, h, w)``."""
    tc = cfg.teacher
    if not tc.path:
        raise ValueError("teacher.path: pass a `gesture train omnihuman` bundle (--teacher DIR)")
    if tc.task not in DISTILLED_MODES:
        raise ConfigError(
            f"teacher.task: expected one of {', '.join(DISTILLED_MODES)} for an OmniHuman "
            f"teacher, found {tc.task!r}"
        )
    pipe = OmniHumanPipeline.from_pretrained(tc.path, ema=tc.weights == "ema")
    model = OmniHumanTaskModel(pipe.model, tc.task).eval().requires_grad_(False)
    data = _data_config(cfg, pipe.spec)
    mc = pipe.model.config
    segs = build_segments(
        load_clips(data),
        pipe.vae,
        data,
        text_encoder=mc.text_encoder,
        text_tokens=mc.text_tokens,
    )
    items = segs.dataset.items
    keys = _COND_KEYS + (("keypoints", "confidence") if tc.task == "pose" else ())
    conditions = {k: items[k] for k in keys}
    shape = tuple(items["latents"].shape[1:])
    logger.info("omnihuman %s teacher: %d condition segments", tc.task, len(segs.dataset))

    def sample(n: int, g: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(len(segs.dataset), (n,), generator=g)
        return {k: v[idx] for k, v in conditions.items()}

    def export(student: nn.Module, folder: Path, info: dict) -> None:
        export_omnihuman_student(pipe, student, folder, tc.task, info)

    return Teacher(model, sample, shape, export)


def export_omnihuman_student(
    pipe: OmniHumanPipeline, student: nn.Module, folder: Path, mode: str, info: dict
) -> None:
    """Write the student as an OmniHuman bundle sampling in one step without guidance."""
    backbone = student.model if isinstance(student, OneStepGenerator) else student
    if not isinstance(backbone, OmniHumanTaskModel):
        raise TypeError(f"expected an OmniHumanTaskModel student, found {type(backbone).__name__}")
    spec = copy.deepcopy(pipe.spec)
    # one Euler step over [0, 1] lands on the same point whatever the grid's shift
    spec["sample"] = {
        **spec["sample"],
        "steps": 1,
        "audio_guidance": 1.0,
        "audio_guidance_end": 1.0,
        "text_guidance": 1.0,
        "text_guidance_end": 1.0,
    }
    spec["distill"] = {**info, "mode": mode}
    out = OmniHumanPipeline(vae=pipe.vae, model=copy.deepcopy(backbone.model).eval(), spec=spec)
    atomic_directory(folder, out.save_pretrained)

"""Teachers of the generic distill system: ``teacher.kind`` -> loader.

Import rule: a system imports the runtime, ``data/``, the libraries and the generic distill
system, never another paper's system. So a paper's teacher loader (kind ``lsm``) is named in
:data:`TEACHER_KINDS` by a ``"module:function"`` string and imported only when that kind runs;
the paper system (``gesture_apps.systems.gesturelsm.distill``) imports this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

import flow_backbones
from flow_backbones.testing import ToyFlowMLP, toy_condition, train_toy_teacher
from gesture_apps.runtime.checkpoint import check_finite
from gesture_apps.systems.distill.config import DistillRecipeConfig, TeacherConfig
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_directory

CondSampler = Callable[[int, torch.Generator], Any]
"""``(n, generator) -> cond``: a tree of ``(n, ...)`` tensors (or None) for ``n`` samples."""


@dataclass
class Teacher:
    """What a teacher loader returns.

    Args:
        model: the flow model, a ``ConditionalModel`` module (frozen).
        cond_sampler: ``(n, generator) -> cond``, the conditions distilled over.
        sample_shape: one sample's shape without the batch axis.
        export: ``(student, folder, info)`` writes the student in the teacher's own layout
            (None: a flow_backbones ``save_pretrained`` folder with ``one_step.json``).
    """

    model: nn.Module
    cond_sampler: CondSampler
    sample_shape: tuple[int, ...]
    export: Callable[[nn.Module, Path, dict], None] | None = None


TeacherLoader = Callable[[DistillRecipeConfig, Path], Teacher]
"""``(config, run_dir) -> Teacher``; raises on bad input before anything is written (``toy2d``
is the exception: it trains and saves its teacher inside the run folder)."""

CONDITION_SOURCES: dict[str, CondSampler] = {
    "toy": toy_condition,
    "none": lambda n, gen: None,
}
"""``teacher.conditions`` of the ``toy2d`` and ``backbone`` kinds."""


def check_conditions(tc: TeacherConfig) -> CondSampler:
    """The condition source named by ``teacher.conditions`` (ValueError if unknown)."""
    if tc.conditions not in CONDITION_SOURCES:
        known = ", ".join(sorted(CONDITION_SOURCES))
        raise ValueError(
            f"teacher.conditions: unknown condition source {tc.conditions!r} (known: {known})"
        )
    return CONDITION_SOURCES[tc.conditions]


def load_toy_teacher(cfg: DistillRecipeConfig, run_dir: Path) -> Teacher:
    """Kind ``toy2d``: the toy teacher saved in ``run_dir/teacher``, trained there if absent."""
    tc = cfg.teacher
    cond = check_conditions(tc)
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
    return Teacher(model.eval().requires_grad_(False), cond, tuple(tc.sample_shape))


def load_backbone_teacher(cfg: DistillRecipeConfig, run_dir: Path) -> Teacher:
    """Kind ``backbone``: a flow_backbones ``save_pretrained`` folder of class
    ``teacher.backbone``."""
    tc = cfg.teacher
    cond = check_conditions(tc)
    if not tc.path:
        raise ValueError("teacher.path: a teacher checkpoint folder is required (--teacher DIR)")
    path = Path(tc.path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: teacher checkpoint folder not found")
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
    return Teacher(model, cond, tuple(tc.sample_shape))


TEACHER_KINDS: dict[str, TeacherLoader | str] = {
    "toy2d": load_toy_teacher,
    "backbone": load_backbone_teacher,
    "lsm": "gesture_apps.systems.gesturelsm.distill:load_lsm_teacher",
    "omniges": "gesture_apps.systems.omniges.distill:load_omniges_teacher",
    "omnihuman": "gesture_apps.systems.omnihuman.distill:load_omnihuman_teacher",
}
"""``teacher.kind`` -> loader. A paper system's loader is a ``"module:function"`` string,
imported when that kind runs: this generic system never imports another system at load time
(the paper system imports this one)."""


def teacher_loader(kind: str) -> TeacherLoader:
    """The loader of ``teacher.kind`` (resolving a ``"module:function"`` entry)."""
    if kind not in TEACHER_KINDS:
        raise ValueError(
            f"teacher.kind: expected one of {', '.join(TEACHER_KINDS)}, found {kind!r}"
        )
    entry = TEACHER_KINDS[kind]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = getattr(importlib.import_module(module), name)
    return entry

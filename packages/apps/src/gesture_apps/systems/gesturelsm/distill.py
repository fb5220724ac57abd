"""A ``gesture train lsm`` (or ``train reflow``) run as a teacher of the generic distill system.

``teacher.kind: lsm`` in a ``distill`` config resolves to :func:`load_lsm_teacher` through
:data:`gesture_apps.systems.distill.teachers.TEACHER_KINDS`. Conditions are the run's own encoder
features (audio/words, plus seed frames) of the training windows of ``data``; the student is
exported in the run's ``lsm`` bundle layout with 1 step and guidance 1, so
``gesture generate --checkpoint OUT/student`` runs it.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from flow_backbones.distillation import OneStepGenerator
from gesture_apps.data.latents import LatentWindows, encode_windows
from gesture_apps.data.windows import PartWindows, load_windows
from gesture_apps.systems.distill.config import DistillRecipeConfig
from gesture_apps.systems.distill.teachers import Teacher
from gesture_apps.systems.gesturelsm.export import LSMBundle, load_lsm, write_lsm_bundle
from gesture_apps.systems.gesturelsm.reflow import _remap_words
from gesture_data.datasets.windows import collate
from motion_tokenizers.io import atomic_directory


@torch.no_grad()
def load_lsm_teacher(cfg: DistillRecipeConfig, run_dir: Path | None = None) -> Teacher:
    """Load the run and encode every training window's condition once (as reflow does).

    ``run_dir`` (the distill run folder) is not used: nothing is written before training.
    """
    if not cfg.teacher.path:
        raise ValueError("teacher.path: pass a `gesture train lsm` run folder (--teacher DIR)")
    bundle = load_lsm(cfg.teacher.path, ema=cfg.teacher.weights == "ema")
    gen, tok = bundle.generator, bundle.tokenizer
    data = dataclasses.replace(cfg.data, pose_length=bundle.spec["pose_length"])
    windows, vocab = load_windows(data)
    _remap_words(windows, vocab, bundle.vocab)
    parts = list(tok.part_names)
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

    def export(student: nn.Module, folder: Path, info: dict) -> None:
        export_lsm_student(bundle, student, folder, info)

    return Teacher(gen.denoiser, sample, tuple(latents.shape[1:]), export)


def export_lsm_student(bundle: LSMBundle, student: nn.Module, folder: Path, info: dict) -> None:
    """Write the student as a ``gesture train lsm`` export: the teacher's encoder, tokenizer,
    normaliser and vocabulary with the one-step denoiser; sampling 1 step, guidance 1."""
    gen = copy.deepcopy(bundle.generator)
    backbone = student.model if isinstance(student, OneStepGenerator) else student
    gen.denoiser.load_state_dict(backbone.state_dict())
    spec = copy.deepcopy(bundle.spec)
    spec["sample"] = {"steps": 1, "guidance": 1.0}
    spec["distill"] = info

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

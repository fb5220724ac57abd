"""Distillation of a flow-matching teacher into a one-step generator, generic over backbones.

The methods live in :mod:`flow_backbones.distillation`; this module is the training system
around them: the loops (stage 1 on :class:`~gesture_apps.runtime.Trainer`, stage 2 with its own
exactly resuming checkpoints), teacher loading, evaluation and export. Any module following
flow_backbones' ``ConditionalModel`` protocol, ``model(x, t, d, cond, keep) -> velocity``, can
be the teacher.

**Stage 1** (``stage1:``), from the teacher's classifier-free-guided multi-step ODE endpoints
``(z, cond) -> x1`` (:func:`make_pairs`):

* ``endpoint`` (default): the student regresses the endpoint in one jump,
  :class:`~flow_backbones.distillation.EndpointLoss` (Luhman & Luhman 2021);
* ``consistency``: :class:`~flow_backbones.distillation.ConsistencyDistillation` with an EMA
  target on the endpoints as data (Song et al. 2023); evaluated one-step and with the multistep
  consistency sampler.

**Stage 2** (:func:`adversarial_post_train`): Seaweed-APT (Lin et al. 2025) with the library's
:class:`~flow_backbones.distillation.Discriminator` and its single-step updates.

Teachers are chosen by ``teacher.kind`` from :data:`TEACHER_KINDS`. Import rule: a system
imports the runtime, ``data/``, the libraries and this generic distill system, never another
paper's system; so a paper's teacher (kind ``lsm``) is named here by a module path string and
imported only when that kind is run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

import flow_backbones
from flow_backbones.distillation import (
    ConsistencyDistillation,
    Discriminator,
    EndpointLoss,
    OneStepGenerator,
    apt_optimizers,
    discriminator_step,
    generator_step,
    sample_consistency,
    teacher_solution,
)
from flow_backbones.testing import energy_distance
from flow_backbones.utils import tree_map
from gesture_apps.errors import TrainingError
from gesture_apps.runtime import EMA, TrainConfig, Trainer, TrainResult, to_dict
from gesture_apps.runtime.checkpoint import rng_state, set_rng_state, write_latest
from gesture_apps.systems.distill.config import (
    APTConfig,
    CMConfig,
    DistillRecipeConfig,
    PairsConfig,
    TeacherConfig,
)
from gesture_apps.systems.distill.teachers import (
    TEACHER_KINDS,
    CondSampler,
    Teacher,
    check_conditions,
    teacher_loader,
)
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_directory, atomic_write, load_state, save_state

logger = logging.getLogger(__name__)

__all__ = [
    "TEACHER_KINDS",
    "APTConfig",
    "CMConfig",
    "DistillRecipeConfig",
    "PairsConfig",
    "Teacher",
    "TeacherConfig",
    "teacher_loader",
]

RealSampler = Callable[[int, torch.Generator], tuple[Tensor, Any]]
"""``(n, generator) -> (x1 (n, ...), cond)``: real samples with their conditions."""


# ----- stage 1 -------------------------------------------------------------------------------


@torch.no_grad()
def make_pairs(
    teacher: nn.Module,
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    cfg: PairsConfig,
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
            teacher, z.to(device), tree_map(lambda c: c.to(device), cond), cfg.ode()
        ).cpu()
        for i in range(n):
            item = {"z": z[i], "x1": x1[i]}
            if cond is not None:
                item["cond"] = tree_map(lambda c, i=i: c[i], cond)
            items.append(item)
    return items


_ENDPOINT_LOSS = EndpointLoss(distance="mse")


def endpoint_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """The one-step sample's distance to the teacher's multi-step endpoint."""
    return _ENDPOINT_LOSS(model, batch["z"], batch["x1"], batch.get("cond")).loss, {}


def consistency_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """The consistency loss on the endpoints as data (noise and intervals from torch's RNG,
    which the Trainer's checkpoints restore)."""
    out = model.loss(batch["x1"], batch.get("cond"))
    return out.loss, {}


class _ConsistencyTrainer(Trainer):
    """A Trainer whose model is a :class:`ConsistencyDistillation`: the EMA target follows the
    student after every optimizer step (the target is part of the checkpointed model)."""

    def training_step(self) -> dict[str, float]:
        out = super().training_step()
        self.raw_model.update_target()
        return out


def distill_stage1(
    teacher: nn.Module,
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    *,
    method: str = "endpoint",
    config: PairsConfig | None = None,
    cm: CMConfig | None = None,
    train: TrainConfig | None = None,
    student: nn.Module | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = False,
    pairs: list[dict[str, Any]] | None = None,
) -> tuple[OneStepGenerator, Trainer, TrainResult]:
    """Stage 1: train a one-step student from the teacher's guided multi-step endpoints.

    Args:
        teacher: a ``ConditionalModel`` module (frozen here; not modified).
        cond_sampler: ``(n, generator) -> cond`` tree of ``(n, ...)`` tensors, or None.
        sample_shape: shape of one sample without the batch axis, e.g. ``(N, C)``.
        method: ``"endpoint"`` or ``"consistency"``.
        config: how the endpoints are made (:class:`PairsConfig`).
        cm: consistency settings (``method="consistency"``).
        train: optimisation (:class:`~gesture_apps.runtime.TrainConfig`).
        student: initial student backbone (default: a copy of the teacher).
        out_dir: run folder for checkpoints / TensorBoard (None: nothing written).
        resume: checkpoint or run folder to continue exactly.
        pairs: precomputed :func:`make_pairs` items (default: made here).

    Returns:
        ``(generator, trainer, result)``; :func:`ema_generator` gives the EMA student.
    """
    if method not in ("endpoint", "consistency"):
        raise ValueError(f"stage1: expected endpoint or consistency, found {method!r}")
    config = config or PairsConfig()
    train = train or TrainConfig(max_steps=500, batch_size=64, lr=1e-4, ema_decay=0.99)
    teacher.requires_grad_(False)
    if pairs is None:
        pairs = make_pairs(teacher, cond_sampler, sample_shape, config)
    if student is None:
        gen = OneStepGenerator.from_teacher(teacher)
    else:
        gen = OneStepGenerator(student.requires_grad_(True))
    run_config: dict[str, Any] = {"stage": method, "consistency": vars(config).copy()}
    if method == "endpoint":
        model, loss_fn, cls = gen, endpoint_loss, Trainer
    else:
        cm = cm or CMConfig()
        model = ConsistencyDistillation(gen, teacher, config=cm.library(config))
        loss_fn, cls = consistency_loss, _ConsistencyTrainer
        run_config["cm"] = to_dict(cm)
    trainer = cls(
        model=model,
        dataset=pairs,
        loss_fn=loss_fn,
        config=train,
        out_dir=out_dir,
        run_config=run_config,
        progress=progress,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    result = trainer.train(steps=steps)
    return gen, trainer, result


def ema_generator(trainer: Trainer) -> OneStepGenerator:
    """A copy of the trainer's one-step generator holding its EMA weights (the generator
    itself if no EMA); for consistency distillation, the student's."""
    model = trainer.raw_model
    if trainer.ema is not None:
        model = copy.deepcopy(model)
        trainer.ema.copy_to(model)
    return model.student if isinstance(model, ConsistencyDistillation) else model


# ----- stage 2: adversarial post-training ----------------------------------------------------


class APTState:
    """Generator, discriminator, their RMSprop optimizers, the generator EMA and the loop's
    position (step, history, data generator); saved and restored as one checkpoint."""

    def __init__(self, generator: nn.Module, discriminator: Discriminator, cfg: APTConfig):
        self.cfg, self.method = cfg, cfg.library()
        self.G, self.D = generator, discriminator
        self.opt_g, self.opt_d = apt_optimizers(generator, discriminator, self.method)
        self.ema = EMA(generator, decay=cfg.ema_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.data_gen = torch.Generator().manual_seed(cfg.seed)

    def ema_generator(self) -> nn.Module:
        m = copy.deepcopy(self.G)
        self.ema.copy_to(m)
        return m

    def update_discriminator(self, real: Tensor, cond: Any) -> dict[str, float]:
        """One discriminator step on ``real`` ``(B, ...)`` and generated samples."""
        return discriminator_step(
            self.G, self.D, self.opt_d, real, cond, config=self.method, rng=self.data_gen
        )

    def update_generator(self, real: Tensor, cond: Any) -> dict[str, float]:
        """One generator step (``B`` fresh noises, D frozen), then the generator's EMA."""
        z = torch.randn(real.shape, generator=self.data_gen).to(real.device)
        out = generator_step(
            self.G, self.D, self.opt_g, z, cond, config=self.method, rng=self.data_gen
        )
        self.ema.update(self.G)
        return out

    def update(self, real: Tensor, cond: Any) -> dict[str, float]:
        """One discriminator and one generator step."""
        return {**self.update_discriminator(real, cond), **self.update_generator(real, cond)}

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
        generator: ``G(z, cond) -> x1`` (the stage-1 :class:`OneStepGenerator`); trained in
            place.
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
            tree_map(lambda c: c.to(bdev), probe_c),
            layers=cfg.layers,
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
        metrics = state.update(real.to(dev), tree_map(lambda c: c.to(dev), cond))
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
    conds = [p["cond"] for p in pairs] if "cond" in pairs[0] else None

    def sample(n: int, gen: torch.Generator) -> tuple[Tensor, Any]:
        idx = torch.randint(len(pairs), (n,), generator=gen)
        cond = None
        if conds is not None:
            cond = torch.utils.data.default_collate([conds[i] for i in idx.tolist()])
        return x1[idx], cond

    return sample


# ----- evaluation, export and the run --------------------------------------------------------


@dataclass
class DistillRun:
    """What :func:`run` returns."""

    generator: nn.Module  # the exported one-step generator (APT EMA, or stage-1 EMA)
    metrics: dict[str, float]
    stage1: TrainResult
    apt: APTState | None


def save_generator(gen: nn.Module, folder: Path, info: dict) -> None:
    """The student's backbone (``save_pretrained`` or ``model.safetensors``) and
    ``one_step.json`` (how to sample, plus ``info``)."""
    backbone = gen.model if isinstance(gen, OneStepGenerator) else gen
    info = {"usage": "x1 = z + model(z, t=0, d=1, cond, keep=True), z ~ N(0, I)", **info}

    def write(tmp: Path) -> None:
        if hasattr(backbone, "save_pretrained"):
            backbone.save_pretrained(tmp)
        else:
            save_model(backbone, str(tmp / "model.safetensors"))
        (tmp / "one_step.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    atomic_directory(folder, write)


@torch.no_grad()
def distance_report(
    teacher: nn.Module,
    generators: dict[str, nn.Module],
    cond_sampler: CondSampler,
    sample_shape: Sequence[int],
    cfg: PairsConfig,
    n: int,
    seed: int = 12345,
    *,
    multistep: dict[str, tuple[OneStepGenerator, Sequence[float]]] | None = None,
) -> dict[str, float]:
    """Energy distances to the teacher's guided ``teacher_steps``-step samples (fresh noise and
    conditions from ``seed``): each generator's one-step sample's, each ``multistep`` entry's
    multistep consistency sample's (re-noising times given), the teacher's 1-step Euler
    sample's, and a second independent teacher sample set's (the noise floor)."""
    gen = torch.Generator().manual_seed(seed)
    cond = cond_sampler(n, gen)
    z_ref = torch.randn((n, *sample_shape), generator=gen)
    z = torch.randn((n, *sample_shape), generator=gen)
    ref = teacher_solution(teacher, z_ref, cond, cfg.ode())
    one = flow_backbones.distillation.TeacherODE(steps=1, guidance=cfg.guidance)
    out = {
        "teacher_resample": energy_distance(teacher_solution(teacher, z, cond, cfg.ode()), ref),
        "teacher_1step": energy_distance(teacher_solution(teacher, z, cond, one), ref),
    }
    for name, g in generators.items():
        g.eval()
        out[name] = energy_distance(g(z, cond), ref)
    for name, (g, times) in (multistep or {}).items():
        g.eval()
        sample = sample_consistency(g, z, cond, times=times, generator=seed + 1)
        out[name] = energy_distance(sample, ref)
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


def _resume_from(folder: Path, resume: bool) -> Path | None:
    return folder if resume and (folder / "checkpoints" / "latest.txt").is_file() else None


def run_stages(
    cfg: DistillRecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_start: Callable[[], None] | None = None,
    teacher: Teacher | None = None,
) -> DistillRun:
    """Both stages into ``out_dir``: ``teacher/`` (toy), ``consistency/`` (stage 1, either
    method) and ``apt/`` (run folders with checkpoints), ``student/`` (the one-step model) and
    ``metrics.json``. With ``resume`` each stage continues from its latest checkpoint. Bad
    teacher settings raise before anything is written; ``on_start`` runs once the inputs are
    checked. ``teacher`` overrides ``teacher.kind``'s loader."""
    out = Path(out_dir)
    if cfg.stage1 not in ("endpoint", "consistency"):
        raise ValueError(f"stage1: expected endpoint or consistency, found {cfg.stage1!r}")
    load = teacher_loader(cfg.teacher.kind)
    if teacher is None and cfg.teacher.kind == "toy2d":
        check_conditions(cfg.teacher)  # the toy teacher is trained inside the run folder
    elif teacher is None:
        teacher = load(cfg, out)  # raises before anything is written
    torch.manual_seed(cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start()
    if teacher is None:
        teacher = load(cfg, out)
    model, cond_sampler, shape = teacher.model, teacher.cond_sampler, teacher.sample_shape
    pairs = make_pairs(model, cond_sampler, shape, cfg.consistency)
    s1_dir = out / "consistency"
    _, trainer, result = distill_stage1(
        model,
        cond_sampler,
        shape,
        method=cfg.stage1,
        config=cfg.consistency,
        cm=cfg.cm,
        train=cfg.train,
        out_dir=s1_dir,
        resume=_resume_from(s1_dir, resume),
        progress=progress,
        pairs=pairs,
    )
    trainer.close()
    stage1 = ema_generator(trainer)
    generators: dict[str, nn.Module] = {"student_stage1": stage1}
    multistep = {}
    if cfg.stage1 == "consistency" and cfg.cm.eval_times:
        multistep["student_stage1_multistep"] = (stage1, cfg.cm.eval_times)
    state = None
    final = stage1
    if cfg.apt.steps > 0:
        apt_dir = out / "apt"
        state = adversarial_post_train(
            copy.deepcopy(stage1),
            model,
            pairs_sampler(pairs),
            config=cfg.apt,
            out_dir=apt_dir,
            resume=_resume_from(apt_dir, resume),
        )
        final = state.ema_generator()
        generators["student_apt"] = final
    metrics = distance_report(
        model,
        generators,
        cond_sampler,
        shape,
        cfg.consistency,
        cfg.eval_samples,
        multistep=multistep,
    )
    info = {"stage1": cfg.stage1, "energy_distance": metrics}
    if teacher.export is not None:
        teacher.export(final, out / "student", {"teacher": cfg.teacher.path, **info})
    else:
        plain = {"sample_shape": list(shape), "teacher": to_dict(cfg.teacher), **info}
        save_generator(final, out / "student", plain)
    text = json.dumps({"energy_distance": metrics}, indent=2)
    atomic_write(out / "metrics.json", lambda p: p.write_text(text, encoding="utf-8"))
    return DistillRun(final, metrics, result, state)

"""Configuration of the generic distillation system (``gesture distill``, preset ``distill/*``).

Sections: ``teacher`` (what is distilled), ``consistency`` (the teacher's guided multi-step
targets, shared by both stage-1 choices, the APT real samples and the evaluation; the section
keeps its historic name), ``stage1`` (``endpoint`` or ``consistency``), ``train`` (stage-1
optimisation), ``cm`` (consistency-distillation settings, ``stage1: consistency`` only),
``apt`` (stage 2), ``data`` (teacher kinds ``lsm``, ``omniges``: condition windows) and
``eval_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flow_backbones.distillation import APTConfig as LibraryAPTConfig
from flow_backbones.distillation import ConsistencyConfig as LibraryConsistencyConfig
from flow_backbones.distillation import TeacherODE
from gesture_apps.data.windows import DataConfig
from gesture_apps.runtime import TrainConfig
from gesture_apps.runtime.config import BACKFILL


@dataclass
class TeacherConfig:
    """The ``teacher:`` section.

    ``kind`` picks a loader from :data:`gesture_apps.systems.distill.teachers.TEACHER_KINDS`:
    ``toy2d`` trains (once, saved in the run folder) the 2-D
    :class:`flow_backbones.testing.ToyFlowMLP` teacher; ``backbone`` loads a flow_backbones
    ``save_pretrained`` folder (``path``, or ``--teacher DIR``) of class ``backbone``; ``lsm``
    loads a ``gesture train lsm`` (or ``train reflow``) run through
    ``gesture_apps.systems.gesturelsm.distill`` (conditions, ``sample_shape`` and the student's
    export layout come from the run). ``omniges`` loads a ``gesture train omniges`` bundle (or
    run folder) through ``gesture_apps.systems.omniges.distill`` and distils its ``task``
    (``a2g`` or ``t2g``: gesture generated from audio or text). ``omnihuman`` loads a
    ``gesture train omnihuman`` bundle through ``gesture_apps.systems.omnihuman.distill`` and
    distils the condition mode ``task`` (``audio`` or ``pose``). ``conditions`` (kinds ``toy2d``
    and ``backbone``) names a condition source: ``toy`` (one-hot classes) or ``none`` (the null
    condition).
    """

    kind: Literal["toy2d", "backbone", "lsm", "omniges", "omnihuman"] = "toy2d"
    path: str | None = None
    weights: Literal["ema", "model"] = "ema"  # kinds lsm, omniges: which weights of the run
    # kind omniges: the direction distilled (runs saved before it resume with the default);
    # kind omnihuman: the condition mode (audio or pose)
    task: Literal["a2g", "t2g", "audio", "pose"] = field(default="a2g", metadata={BACKFILL: True})
    backbone: Literal["DiT", "SpatialTemporalDenoiser"] = "SpatialTemporalDenoiser"
    sample_shape: list[int] = field(default_factory=lambda: [2])
    conditions: str = "toy"
    toy_steps: int = 400
    toy_width: int = 64
    toy_depth: int = 4


@dataclass
class PairsConfig:
    """The ``consistency:`` section: the teacher's guided multi-step ODE endpoints.

    ``num_pairs`` (noise, cond) -> endpoint pairs are drawn once from ``seed``; they are the
    regression targets of ``stage1: endpoint``, the data of ``stage1: consistency`` and the
    real samples of APT.
    """

    num_pairs: int = 4096
    guidance: float = 2.0
    teacher_steps: int = 16
    solver: Literal["euler", "heun", "shortcut"] = "euler"
    pass_step_size: bool = False  # give the teacher d = 1/steps (shortcut teachers)
    # Euler/Heun time-grid shift (Omniges samples with OmniFlow's 3); runs saved before it
    # existed used 1, the default
    shift: float = field(default=1.0, metadata={BACKFILL: True})
    pair_batch: int = 512  # teacher solves per forward batch
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_pairs < 2 or self.teacher_steps < 1 or self.pair_batch < 1:
            raise ValueError("consistency: num_pairs >= 2, teacher_steps >= 1, pair_batch >= 1")
        if not self.shift > 0:
            raise ValueError(f"consistency.shift: expected a positive number, found {self.shift}")

    def ode(self, steps: int | None = None) -> TeacherODE:
        """The teacher's ODE solve (``steps`` default ``teacher_steps``)."""
        return TeacherODE(
            steps=steps or self.teacher_steps,
            guidance=self.guidance,
            solver=self.solver,
            pass_step_size=self.pass_step_size,
            shift=self.shift,
        )


@dataclass
class CMConfig:
    """The ``cm:`` section (``stage1: consistency``): consistency distillation with an EMA
    target (Song et al. 2023) on the pairs' endpoints; the teacher step uses
    ``consistency.guidance``. ``eval_times``: re-noising times of the multistep consistency
    sampler reported as ``student_stage1_multistep`` (empty: not reported)."""

    intervals: int = 18
    shift: float = 1.0
    solver: Literal["euler", "heun"] = "heun"
    target_decay: float = 0.95  # mu of the target network
    distance: Literal["mse", "pseudo_huber"] = "mse"
    eval_times: list[float] = field(default_factory=lambda: [0.5])

    def library(self, pairs: PairsConfig) -> LibraryConsistencyConfig:
        return LibraryConsistencyConfig(
            intervals=self.intervals,
            shift=self.shift,
            guidance=pairs.guidance,
            solver=self.solver,
            pass_step_size=pairs.pass_step_size,
            ema_decay=self.target_decay,
            distance=self.distance,
        )


@dataclass
class APTConfig:
    """Stage 2 (the ``apt:`` section), Seaweed-APT's settings scaled to the task; the loop's
    settings here, the method's in :meth:`library`."""

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

    def library(self) -> LibraryAPTConfig:
        return LibraryAPTConfig(
            lr_g=self.lr_g,
            lr_d=self.lr_d,
            rmsprop_alpha=self.rmsprop_alpha,
            r1_weight=self.r1_weight,
            r1_sigma=self.r1_sigma,
            t_shift=self.t_shift,
            t_min=self.t_min,
            layers=tuple(self.layers),
            head_heads=self.head_heads,
            grad_clip=self.grad_clip,
            check_gradients=self.check_gradients,
        )


@dataclass
class DistillRecipeConfig:
    recipe: Literal["distill"] = "distill"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    consistency: PairsConfig = field(default_factory=PairsConfig)
    stage1: Literal["endpoint", "consistency"] = "endpoint"
    train: TrainConfig = field(default_factory=TrainConfig)  # stage 1 optimisation
    cm: CMConfig = field(default_factory=CMConfig)
    apt: APTConfig = field(default_factory=APTConfig)
    data: DataConfig = field(default_factory=DataConfig)  # kinds lsm, omniges: conditions
    eval_samples: int = 1000  # samples for the energy distances in metrics.json

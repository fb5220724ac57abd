"""Distilling a flow teacher into a one-step generator.

* :mod:`.generator`: :class:`OneStepGenerator` (a copy of the teacher's backbone read as a jump
  to data) and the teacher's guided ODE solutions (:func:`teacher_solution`).
* :mod:`.endpoint`: regression onto the teacher's multi-step ODE endpoints (Luhman & Luhman
  2021).
* :mod:`.consistency`: consistency distillation with an EMA target and the multistep
  consistency sampler (Song et al. 2023).
* :mod:`.apt`: Seaweed-APT adversarial post-training: a discriminator built from the backbone,
  its losses and one-step update functions (Lin et al. 2025).

The library gives losses, single optimisation steps and samplers; loops over datasets,
checkpointing and logging belong to the caller.
"""

from .apt import (
    APTConfig,
    Discriminator,
    DiscriminatorLossOutput,
    GeneratorLossOutput,
    QueryHead,
    apt_optimizers,
    block_names,
    default_layers,
    discriminator_loss,
    discriminator_step,
    discriminator_times,
    generator_loss,
    generator_step,
)
from .consistency import (
    ConsistencyConfig,
    ConsistencyDistillation,
    ConsistencyLossOutput,
    sample_consistency,
)
from .endpoint import (
    DistillLossOutput,
    EndpointConfig,
    EndpointLoss,
    make_endpoint_pairs,
    per_sample_distance,
)
from .generator import OneStepGenerator, TeacherODE, boundary_scalings, ode_step, teacher_solution

__all__ = [
    "APTConfig",
    "ConsistencyConfig",
    "ConsistencyDistillation",
    "ConsistencyLossOutput",
    "Discriminator",
    "DiscriminatorLossOutput",
    "DistillLossOutput",
    "EndpointConfig",
    "EndpointLoss",
    "GeneratorLossOutput",
    "OneStepGenerator",
    "QueryHead",
    "TeacherODE",
    "apt_optimizers",
    "block_names",
    "boundary_scalings",
    "default_layers",
    "discriminator_loss",
    "discriminator_step",
    "discriminator_times",
    "generator_loss",
    "generator_step",
    "make_endpoint_pairs",
    "ode_step",
    "per_sample_distance",
    "sample_consistency",
    "teacher_solution",
]

"""flow-backbones: flow-matching backbones, objectives and samplers for motion generation.

Time convention: ``t`` in [0, 1], ``t = 0`` noise, ``t = 1`` data, ``x_t = t x1 + (1 - t) x0``,
``v = x1 - x0`` (see :mod:`flow_backbones.flow` for the diffusers conversions).

Subpackages: :mod:`flow_backbones.distillation` (one-step students: endpoint, consistency and
adversarial distillation); :mod:`flow_backbones.testing` holds the toy teachers of the tests.
:mod:`flow_backbones.omniflow` imports OmniFlow's transformer (``MMDiT.from_omniflow``), runs it
with OmniFlow's own arguments (``omniflow_forward``) and holds ``patchify``/``unpatchify``.
:mod:`flow_backbones.conditions` holds the staged per-condition keep ratios of omni-condition
training (OmniHuman).
"""

from . import omniflow
from .conditional import ConditionalModel, PreparesCondition, prepare_condition
from .conditions import ConditionSchedule, ConditionStage
from .dit import DiT
from .embeddings import RotaryEmbedding, TimeEmbedding, grid_positions_3d, sincos_1d
from .errors import CheckpointError, FlowInputError
from .flow import (
    interpolate,
    loss_weight,
    sample_t,
    shift_t,
    sigma_to_t,
    t_to_sigma,
    velocity_from_diffusers,
    velocity_target,
    velocity_to_diffusers,
    x1_to_velocity,
)
from .mmdit import MMDiT, MMDiTOutput, StreamSpec
from .objectives import (
    FlowLossOutput,
    FlowMatchingLoss,
    MeanFlowLoss,
    MeanFlowLossOutput,
    MultiStreamFlowLoss,
    MultiStreamLossOutput,
    ReflowPairs,
    ShortcutLoss,
    ShortcutLossOutput,
    build_reflow_pairs,
    omniges_tasks,
)
from .samplers import (
    GuidanceSchedule,
    VelocityFn,
    cfg_combine,
    conditioned,
    diffusers_t_grid,
    make_noise,
    sample_any_to_any,
    sample_diffusers,
    sample_euler,
    sample_heun,
    sample_shortcut,
    time_grid,
)
from .spatial_temporal import SpatialTemporalDenoiser
from .utils import tree_map, tree_map2

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConditionSchedule",
    "ConditionStage",
    "ConditionalModel",
    "DiT",
    "FlowInputError",
    "FlowLossOutput",
    "FlowMatchingLoss",
    "GuidanceSchedule",
    "MMDiT",
    "MMDiTOutput",
    "MeanFlowLoss",
    "MeanFlowLossOutput",
    "MultiStreamFlowLoss",
    "MultiStreamLossOutput",
    "PreparesCondition",
    "ReflowPairs",
    "RotaryEmbedding",
    "ShortcutLoss",
    "ShortcutLossOutput",
    "SpatialTemporalDenoiser",
    "StreamSpec",
    "TimeEmbedding",
    "VelocityFn",
    "build_reflow_pairs",
    "cfg_combine",
    "conditioned",
    "diffusers_t_grid",
    "grid_positions_3d",
    "interpolate",
    "loss_weight",
    "make_noise",
    "omniflow",
    "omniges_tasks",
    "prepare_condition",
    "sample_any_to_any",
    "sample_diffusers",
    "sample_euler",
    "sample_heun",
    "sample_shortcut",
    "sample_t",
    "shift_t",
    "sigma_to_t",
    "sincos_1d",
    "t_to_sigma",
    "time_grid",
    "tree_map",
    "tree_map2",
    "velocity_from_diffusers",
    "velocity_target",
    "velocity_to_diffusers",
    "x1_to_velocity",
]

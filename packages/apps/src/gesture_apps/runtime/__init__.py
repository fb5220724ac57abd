"""Shared training runtime: typed configs, the accelerate training loop, EMA, checkpoints,
bundles (the one export format) and the system registry."""

from .checkpoint import read_run_config, resolve_checkpoint, rng_state, set_rng_state
from .config import (
    apply_overrides,
    from_dict,
    list_presets,
    load_config,
    parse_override,
    preset_path,
    presets_dir,
    read_preset,
    to_dict,
)
from .ema import EMA
from .trainer import TrainConfig, Trainer, TrainResult, model_loss, write_json

__all__ = [
    "EMA",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "from_dict",
    "list_presets",
    "load_config",
    "model_loss",
    "parse_override",
    "preset_path",
    "presets_dir",
    "read_preset",
    "read_run_config",
    "resolve_checkpoint",
    "rng_state",
    "set_rng_state",
    "to_dict",
    "write_json",
]

"""Shared training runtime: typed configs, the accelerate training loop, EMA, checkpoints,
bundles (the one export format) and the system registry.

The names below load their module on first use (PEP 562), so that ``gesture --help`` and the
system registry do not import torch and accelerate.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "read_run_config": "checkpoint",
    "resolve_checkpoint": "checkpoint",
    "rng_state": "checkpoint",
    "set_rng_state": "checkpoint",
    "apply_overrides": "config",
    "from_dict": "config",
    "list_presets": "config",
    "load_config": "config",
    "parse_override": "config",
    "preset_path": "config",
    "presets_dir": "config",
    "read_preset": "config",
    "to_dict": "config",
    "EMA": "ema",
    "TrainConfig": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "model_loss": "trainer",
    "write_json": "trainer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])

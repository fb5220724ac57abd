"""gesture_data: co-speech gesture datasets, rotations, features and a synthetic corpus.

Dataset modules live in :mod:`gesture_data.datasets` and are also reachable from the top
level (``from gesture_data import beat2, synthetic, bvh, humanml3d``), imported lazily.
"""

from __future__ import annotations

import importlib

from .errors import DataError
from .layout import BodyPartLayout, Normalizer, trans_to_velocity, velocity_to_trans

__version__ = "0.1.0"

_LAZY = {
    "beat2": ".datasets.beat2",
    "synthetic": ".datasets.synthetic",
    "bvh": ".datasets.bvh",
    "humanml3d": ".datasets.humanml3d",
    "ktubeum": ".datasets.ktubeum",
    "seg": ".datasets.seg",
    "textgrid": ".datasets.textgrid",
    "windows": ".datasets.windows",
    "rotations": ".rotations",
    "cache": ".cache",
    "motion": ".motion",
    "render": ".render",
    "skeleton": ".skeleton",
    "features": ".features",
    "video": ".video",
}

__all__ = [
    "BodyPartLayout",
    "DataError",
    "Normalizer",
    "trans_to_velocity",
    "velocity_to_trans",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name], __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'gesture_data' has no attribute {name!r}")

"""gesture_data: co-speech gesture datasets, rotations, features and a synthetic corpus."""

from .errors import DataError
from .layout import BodyPartLayout, Normalizer, trans_to_velocity, velocity_to_trans

__version__ = "0.1.0"

__all__ = [
    "BodyPartLayout",
    "DataError",
    "Normalizer",
    "trans_to_velocity",
    "velocity_to_trans",
]

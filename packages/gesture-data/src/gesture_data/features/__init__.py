"""Frame-aligned audio and text features."""

from .audio import (
    OnsetAmplitudeStream,
    causal_onset_amplitude,
    log_mel,
    mfcc,
    onset_amplitude,
    onset_strength,
    resample,
)
from .sg_audio import SG_AUDIO_DIM, SGScaler, read_sg_scaler, sg_align, sg_audio_features

__all__ = [
    "SG_AUDIO_DIM",
    "OnsetAmplitudeStream",
    "SGScaler",
    "causal_onset_amplitude",
    "log_mel",
    "mfcc",
    "onset_amplitude",
    "onset_strength",
    "read_sg_scaler",
    "resample",
    "sg_align",
    "sg_audio_features",
]

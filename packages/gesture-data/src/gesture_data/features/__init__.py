"""Frame-aligned audio and text features."""

from .audio import log_mel, mfcc, onset_amplitude, onset_strength, resample

__all__ = ["log_mel", "mfcc", "onset_amplitude", "onset_strength", "resample"]

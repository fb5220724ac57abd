"""Audio metrics for gesture->audio and text->audio.

- :func:`log_spectral_distance`: ``mean_t sqrt(mean_f (log10 P_pred - log10 P_target)^2)`` on
  STFT power spectra (n_fft 2048, hop 512, +1e-8 inside the log), the audio super-resolution
  convention.
- :func:`mel_cepstral_distortion`: ``10 / ln 10 * sqrt(2 * sum_{k>=1} (c_k - c'_k)^2)``
  averaged over frames, on librosa MFCCs (13 coefficients, c0 dropped); frames are paired
  by index, or by a DTW path with ``align="dtw"``.
- :func:`audio_gesture_alignment`: BC between a (generated) audio and a gesture, i.e.
  :func:`gesture_eval.beat_consistency` with the audio's onsets.

All take mono float arrays (N,) at the same ``sample_rate``.
"""

from __future__ import annotations

import numpy as np

from gesture_eval._checks import as_audio
from gesture_eval.beat import beat_consistency
from gesture_eval.errors import EvalError

__all__ = ["audio_gesture_alignment", "log_spectral_distance", "mel_cepstral_distortion"]


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_audio(pred, "pred_audio"), as_audio(target, "target_audio")
    n = min(len(p), len(t))
    if n < 2048:
        raise EvalError(f"audio too short for a 2048-sample STFT: {len(p)} and {len(t)} samples")
    return p[:n].astype(np.float64), t[:n].astype(np.float64)


def log_spectral_distance(
    pred_audio, target_audio, *, n_fft: int = 2048, hop_length: int = 512
) -> float:
    """Log-spectral distance between two signals (N,), cut to the shorter one."""
    import librosa

    p, t = _pair(pred_audio, target_audio)
    sp = np.abs(librosa.stft(p, n_fft=n_fft, hop_length=hop_length)) ** 2
    st = np.abs(librosa.stft(t, n_fft=n_fft, hop_length=hop_length)) ** 2
    diff = np.log10(sp + 1e-8) - np.log10(st + 1e-8)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))


def mel_cepstral_distortion(
    pred_audio, target_audio, *, sample_rate: int = 16000, n_mfcc: int = 13, align: str = "index"
) -> float:
    """Mel-cepstral distortion in dB between two signals (N,)."""
    import librosa

    if align not in ("index", "dtw"):
        raise EvalError(f"align must be 'index' or 'dtw', found {align!r}")
    p, t = _pair(pred_audio, target_audio)
    cp = librosa.feature.mfcc(y=p, sr=sample_rate, n_mfcc=n_mfcc)[1:]
    ct = librosa.feature.mfcc(y=t, sr=sample_rate, n_mfcc=n_mfcc)[1:]
    if align == "dtw":
        _, path = librosa.sequence.dtw(X=cp, Y=ct, metric="euclidean")
        path = path[::-1]
        cp, ct = cp[:, path[:, 0]], ct[:, path[:, 1]]
    dist = np.sqrt(2 * np.sum((cp - ct) ** 2, axis=0))
    return float(10 / np.log(10) * np.mean(dist))


def audio_gesture_alignment(joints, audio, **kwargs) -> float:
    """Beat alignment of generated ``audio`` (N,) with a gesture ``joints`` (T, 55, 3)."""
    return beat_consistency(joints, audio, **kwargs)

"""Audio features, numpy/scipy only (no librosa, so import is instant).

- :func:`onset_amplitude`: GestureLSM's 2-channel ``onset+amplitude`` representation at the
  audio sample rate, ``(N, 2)`` = [amplitude envelope, onset impulses].
- :func:`log_mel` / :func:`mfcc`: one analysis frame centred on every motion frame
  (``t = i / fps``), so feature frame i lines up with motion frame i exactly, even when
  ``sample_rate / fps`` is not an integer (16000 / 30).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.fft import dct
from scipy.ndimage import maximum_filter1d
from scipy.signal import resample_poly


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling ``(N,) -> (N * sr_out / sr_in,)`` float32."""
    if sr_in == sr_out:
        return np.asarray(audio, np.float32)
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def amplitude_envelope(audio: np.ndarray, frame_length: int = 1024) -> np.ndarray:
    """Max of ``|audio|`` over the next ``frame_length`` samples, ``(N,)``.

    Same values as GestureLSM's strided ``max`` over a rolling view (padded with the last
    value), but a running-max filter: O(N) memory instead of an ``(N, 1024)`` view."""
    a = np.abs(np.asarray(audio, np.float32))
    if a.size == 0:
        return a
    # origin shifts the window so it covers [i, i + frame_length - 1] (forward-looking).
    env = maximum_filter1d(a, size=frame_length, origin=-(frame_length // 2), mode="nearest")
    n_full = a.size - frame_length + 1
    if n_full > 0:
        env[n_full:] = env[n_full - 1]
    return env


@lru_cache(maxsize=16)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin=0.0, fmax=None) -> np.ndarray:
    """Slaney-style triangular mel filters ``(n_mels, n_fft // 2 + 1)``, area-normalised."""
    fmax = fmax or sr / 2

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        lin = f / (200.0 / 3)
        return np.where(
            f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), lin
        )

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200.0 / 3)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def _power_spectrum(audio: np.ndarray, centers: np.ndarray, n_fft: int) -> np.ndarray:
    """Hann-windowed power spectra of frames centred on ``centers`` (samples), reflect-padded."""
    audio = np.asarray(audio, np.float32)
    pad = n_fft // 2
    x = np.pad(audio, pad, mode="reflect" if audio.size > pad else "constant")
    idx = centers[:, None] + np.arange(n_fft)[None, :]
    frames = x[np.clip(idx, 0, x.size - 1)] * np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spec = np.fft.rfft(frames, axis=-1)
    return (spec.real**2 + spec.imag**2).astype(np.float32)


def _centers(n_samples: int, sr: int, fps: float, n_frames: int | None) -> np.ndarray:
    if n_frames is None:
        n_frames = int(np.floor(n_samples / sr * fps))
    return np.round(np.arange(n_frames) * sr / fps).astype(np.int64)


def log_mel(
    audio: np.ndarray,
    sample_rate: int = 16000,
    fps: float = 30,
    n_mels: int = 80,
    n_fft: int = 1024,
    n_frames: int | None = None,
) -> np.ndarray:
    """``(N,)`` audio -> ``(T, n_mels)`` log10 mel power, frame i centred at ``i / fps`` s.
    ``T = n_frames`` or ``floor(N / sample_rate * fps)``."""
    c = _centers(len(audio), sample_rate, fps, n_frames)
    p = _power_spectrum(audio, c, n_fft)
    mel = p @ mel_filterbank(sample_rate, n_fft, n_mels).T
    return np.log10(np.maximum(mel, 1e-10)).astype(np.float32)


def mfcc(
    audio: np.ndarray,
    sample_rate: int = 16000,
    fps: float = 30,
    n_mfcc: int = 13,
    n_mels: int = 40,
    n_fft: int = 1024,
    n_frames: int | None = None,
) -> np.ndarray:
    """``(T, n_mfcc)`` MFCCs: orthonormal DCT-II of the dB log-mel spectrum."""
    lm = 10.0 * log_mel(audio, sample_rate, fps, n_mels, n_fft, n_frames)
    return dct(lm, type=2, axis=-1, norm="ortho")[:, :n_mfcc].astype(np.float32)


def onset_strength(
    audio: np.ndarray, sample_rate: int = 16000, hop: int = 512, n_fft: int = 2048, n_mels=128
) -> np.ndarray:
    """Spectral flux of the dB mel spectrogram (half-wave rectified, mean over bands),
    one value per ``hop`` samples, ``(ceil(N / hop),)``."""
    n = len(audio)
    centers = np.arange(0, max(n, 1), hop, dtype=np.int64)
    p = _power_spectrum(audio, centers, n_fft)
    mel = p @ mel_filterbank(sample_rate, n_fft, n_mels).T
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, np.diff(db, axis=0, prepend=db[:1])).mean(axis=1)
    return flux.astype(np.float32)


def onset_times(
    audio: np.ndarray,
    sample_rate: int = 16000,
    hop: int = 512,
    delta: float = 0.07,
    wait_s: float = 0.03,
) -> np.ndarray:
    """Onset times (s) by peak picking the normalised onset strength: a peak is a local max
    over the previous 30 ms, exceeds the local mean (+-100 ms) by ``delta`` and is at least
    ``wait_s`` after the previous onset (librosa's default rule, plus a one-hop look-ahead)."""
    env = onset_strength(audio, sample_rate, hop)
    if env.size == 0 or env.max() <= 0:
        return np.zeros(0, np.float32)
    env = (env - env.min()) / (env.max() - env.min())
    fr = sample_rate / hop
    pre_max = max(1, int(0.03 * fr))
    avg = max(1, int(0.1 * fr))
    wait = max(1, int(wait_s * fr))
    mov_max = maximum_filter1d(env, size=pre_max + 1, origin=pre_max // 2, mode="nearest")
    kernel = np.ones(2 * avg + 1) / (2 * avg + 1)
    mov_avg = np.convolve(np.pad(env, avg, mode="edge"), kernel, mode="valid")
    # a peak must also not be lower than its successor, so a rising edge that spans two
    # hops is reported once, at its top
    nxt = np.append(env[1:], 0.0)
    cand = np.flatnonzero((env >= mov_max) & (env >= nxt) & (env >= mov_avg + delta) & (env > 0))
    picked, last = [], -(10**9)
    for i in cand:
        if i - last > wait:
            picked.append(i)
            last = i
    return np.asarray(picked, np.float32) * hop / sample_rate


def onset_amplitude(
    audio: np.ndarray, sample_rate: int = 16000, frame_length: int = 1024
) -> np.ndarray:
    """GestureLSM ``onset+amplitude``: ``(N, 2)`` float32 at the audio rate, channel 0 the
    amplitude envelope, channel 1 is 1.0 at detected onset samples and 0 elsewhere."""
    audio = np.asarray(audio, np.float32)
    out = np.zeros((audio.size, 2), np.float32)
    out[:, 0] = amplitude_envelope(audio, frame_length)
    idx = np.round(onset_times(audio, sample_rate) * sample_rate).astype(np.int64)
    out[idx[idx < audio.size], 1] = 1.0
    return out

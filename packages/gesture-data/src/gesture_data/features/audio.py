"""Audio features, numpy/scipy only (no librosa, so import is instant).

- :func:`onset_amplitude`: GestureLSM's 2-channel ``onset+amplitude`` representation at the
  audio sample rate, ``(N, 2)`` = [amplitude envelope, onset impulses];
  :class:`OnsetAmplitudeStream` computes it causally, chunk by chunk, for live audio.
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

from ..errors import DataError


def _check_audio(audio, sample_rate, *, allow_empty: bool = False) -> np.ndarray:
    """Mono float32 ``(N,)`` or :class:`DataError`. Stereo would be read as N frames of
    one channel per row (index errors or features of the wrong length), NaN spreads through
    every STFT frame it touches, and a zero rate divides by zero."""
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise DataError(None, "bad rate", key="sample_rate", expected="int > 0", found=sample_rate)
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise DataError(None, "not real numbers", key="audio", expected="float", found=a.dtype)
    if a.ndim != 1:
        raise DataError(None, "not mono", key="audio", expected="(N,)", found=a.shape)
    if a.size == 0 and not allow_empty:
        raise DataError(None, "empty", key="audio", expected="N > 0", found=0)
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise DataError(None, "non-finite samples", key="audio")
    return a


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling ``(N,) -> (N * sr_out / sr_in,)`` float32."""
    audio = _check_audio(audio, sr_in, allow_empty=True)
    _check_audio(audio[:0], sr_out, allow_empty=True)
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


def _power_spectrum(
    audio: np.ndarray, centers: np.ndarray, n_fft: int, pad_mode: str = "reflect"
) -> np.ndarray:
    """Hann-windowed power spectra of frames centred on ``centers`` (samples)."""
    audio = np.asarray(audio, np.float32)
    pad = n_fft // 2
    if pad_mode == "reflect" and audio.size <= pad:
        pad_mode = "constant"
    x = np.pad(audio, pad, mode=pad_mode)
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
    audio = _check_audio(audio, sample_rate)
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
    """librosa's default onset envelope: spectral flux of the dB mel spectrogram (128 bands,
    80 dB range, zero-padded centred STFT), half-wave rectified and averaged over bands,
    shifted by ``1 + n_fft // (2 * hop)`` frames so a peak sits on the onset rather than
    where the centred window first sees it. One value per ``hop``, ``(1 + N // hop,)``."""
    audio = _check_audio(audio, sample_rate)
    n = len(audio)
    n_frames = 1 + n // hop
    centers = np.arange(n_frames, dtype=np.int64) * hop
    p = _power_spectrum(audio, centers, n_fft, pad_mode="constant")
    mel = p @ mel_filterbank(sample_rate, n_fft, n_mels).T
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, db[1:] - db[:-1]).mean(axis=1)
    lag_pad = 1 + n_fft // (2 * hop)
    env = np.concatenate([np.zeros(lag_pad), flux])[:n_frames]
    return env.astype(np.float32)


def peak_pick(
    x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """librosa's ``peak_pick``: x[n] is a peak if it is the max of ``x[n-pre_max:n+post_max]``,
    at least ``delta`` above the mean of ``x[n-pre_avg:n+post_avg]`` (windows truncated at
    the ends) and more than ``wait`` after the previous peak."""
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(x, np.float64)
    if x.size == 0:
        return np.zeros(0, np.int64)
    max_len = pre_max + post_max
    mov_max = maximum_filter1d(
        x,
        max(1, max_len),
        mode="constant",
        origin=int(np.ceil(0.5 * (pre_max - post_max))),
        cval=x.min(),
    )
    avg_len = pre_avg + post_avg
    mov_avg = uniform_filter1d(
        x, avg_len, mode="nearest", origin=int(np.ceil(0.5 * (pre_avg - post_avg)))
    )
    edge = list(range(min(pre_avg, x.size))) + list(range(max(x.size - post_avg, 0), x.size))
    for n in edge:
        mov_avg[n] = x[max(n - pre_avg, 0) : n + post_avg].mean()
    det = x * (x == mov_max)
    det = det * (det >= mov_avg + delta)
    peaks, last = [], -np.inf
    for i in np.flatnonzero(det):
        if i > last + wait:
            peaks.append(i)
            last = i
    return np.asarray(peaks, np.int64)


def onset_frames(audio: np.ndarray, sample_rate: int = 16000, hop: int = 512) -> np.ndarray:
    """Onset frame indices (units of ``hop`` samples) with librosa ``onset_detect``'s
    defaults: normalised envelope, 30 ms pre-max, 100 ms averages, delta 0.07, 30 ms wait
    (window sizes in whole frames as librosa floors them: at 16 kHz / 512 the max window is
    one frame, so consecutive frames of a strong rise are all reported, as in GestureLSM)."""
    env = onset_strength(audio, sample_rate, hop)
    if env.size == 0 or env.max() <= env.min():
        return np.zeros(0, np.int64)
    env = (env - env.min()) / (env.max() - env.min())
    pre_max = int(0.03 * sample_rate // hop)
    post_max = int(0.00 * sample_rate // hop + 1)
    pre_avg = int(0.10 * sample_rate // hop)
    post_avg = int(0.10 * sample_rate // hop + 1)
    wait = int(0.03 * sample_rate // hop)
    return peak_pick(env, pre_max, post_max, pre_avg, post_avg, 0.07, wait)


def onset_times(audio: np.ndarray, sample_rate: int = 16000, hop: int = 512) -> np.ndarray:
    """Onset times in seconds, ``onset_frames * hop / sample_rate`` (float32)."""
    return (onset_frames(audio, sample_rate, hop) * hop / sample_rate).astype(np.float32)


def onset_amplitude(
    audio: np.ndarray,
    sample_rate: int = 16000,
    frame_length: int = 1024,
    reference_indexing: bool = False,
) -> np.ndarray:
    """GestureLSM ``onset+amplitude``: ``(N, 2)`` float32 at the audio rate, channel 0 the
    amplitude envelope, channel 1 is 1.0 at detected onset samples and 0 elsewhere.

    With ``reference_indexing=True`` channel 1 reproduces the reference code exactly: it
    writes onset *frame* numbers (units of 512 samples) as *sample* indices, so all the
    impulses land in the first ~0.1 s of the clip. The default puts them at the onset
    samples (frame * 512), which is what the representation is meant to carry."""
    audio = _check_audio(audio, sample_rate)
    out = np.zeros((audio.size, 2), np.float32)
    out[:, 0] = amplitude_envelope(audio, frame_length)
    frames = onset_frames(audio, sample_rate)
    idx = frames if reference_indexing else frames * 512
    out[idx[idx < audio.size], 1] = 1.0
    return out


class OnsetAmplitudeStream:
    """:func:`onset_amplitude` computed causally, chunk by chunk, with a bounded look-ahead.

    ``push(samples)`` returns the ``(M, 2)`` features of the samples that became final (those
    at least :attr:`lookahead` samples behind the newest one); ``flush()`` returns the rest at
    the end of the recording. The concatenated output has one row per sample and is the same
    whatever the chunking (10 ms or 2 s pieces give identical arrays).

    Channel 0 (amplitude envelope) equals the offline function exactly. Channel 1 (onsets) needs
    two whole-recording quantities that a stream does not have yet; both become running values:

    - the onset envelope is normalised by its maximum *so far* instead of over the recording;
    - the dB floor (80 dB below the loudest mel bin) uses the loudest bin *so far*.

    Once the loudest part of a recording has been heard the decisions are the offline ones; before
    it, quieter onsets pass the threshold more easily. Peak picking waits for 3 onset frames of
    look-ahead (librosa's 100 ms moving average at 16 kHz / 512), which with the 1024-sample
    envelope bounds :attr:`lookahead` at 3 * 512 samples (96 ms at 16 kHz).
    """

    HOP, N_FFT, N_MELS, LAG = 512, 2048, 128, 3

    def __init__(self, sample_rate: int = 16000, frame_length: int = 1024) -> None:
        _check_audio(np.zeros(1, np.float32), sample_rate)
        self.sample_rate, self.frame_length = int(sample_rate), int(frame_length)
        hop = self.HOP
        # librosa's onset_detect windows in frames, as onset_frames() floors them
        self._pre_avg = int(0.10 * sample_rate // hop)
        self._post_avg = int(0.10 * sample_rate // hop + 1)
        # an onset at sample n * hop waits for envelope frame n + post_avg - 1, which needs the
        # audio up to that frame's sample; the amplitude waits for its frame_length window
        self.lookahead = max(frame_length - 1, (self._post_avg - 1) * hop)
        self._fb = mel_filterbank(self.sample_rate, self.N_FFT, self.N_MELS)
        self._window = np.hanning(self.N_FFT + 1)[:-1].astype(np.float32)
        self._buf = np.zeros(0, np.float32)  # audio from sample self._buf_start on
        self._buf_start = 0
        self.received = 0  # samples pushed
        self.emitted = 0  # samples whose features were returned
        self._next_frame = 0  # next spectral frame (centred at frame * HOP) to analyse
        self._prev_db: np.ndarray | None = None  # the last analysed frame's dB mel bins
        self._db_max = -np.inf
        self._env: list[float] = [0.0] * self.LAG  # onset envelope per HOP (offline lag pad)
        self._env_start = 0  # frame index of _env[0]
        self._env_max, self._max_seen = 0.0, 0  # max of the envelope's first _max_seen frames
        self._decided = 0  # onset frames decided
        self._onsets: list[int] = []  # decided onset frames not yet emitted
        self._done = False

    def push(self, audio: np.ndarray) -> np.ndarray:
        """``(n,)`` float samples -> ``(M, 2)`` float32 features of the samples now final."""
        if self._done:
            raise DataError(None, "stream already flushed", key="audio")
        a = _check_audio(audio, self.sample_rate, allow_empty=True)
        self._buf = np.concatenate([self._buf, a])
        self.received += a.size
        self._analyse(end=None)
        final = min(self.received - (self.frame_length - 1), self._decided * self.HOP)
        return self._emit(final, end=None)

    def flush(self) -> np.ndarray:
        """The features of every sample not yet returned (the recording's end: no more audio)."""
        if self._done:
            raise DataError(None, "stream already flushed", key="audio")
        self._done = True
        if self.received == 0:
            return np.zeros((0, 2), np.float32)
        self._analyse(end=self.received)
        return self._emit(self.received, end=self.received)

    # ----- internals -----

    def _analyse(self, end: int | None) -> None:
        """New spectral frames -> onset envelope -> onset decisions. ``end``: the recording's
        length at flush (frames past it see zeros, as the offline STFT's padding), else None."""
        H, half = self.HOP, self.N_FFT // 2
        n_frames = 1 + end // H if end is not None else None  # offline frame count
        # frame j is analysable once audio reaches j * H + half (or at flush); env[k] is the
        # flux from frame k - LAG to k - LAG + 1, so the offline envelope needs frames up to
        # n_frames - LAG
        last = (self.received - half) // H if end is None else n_frames - self.LAG
        j0, j1 = self._next_frame, max(self._next_frame, last + 1)
        if j1 > j0:
            lo = j0 * H - half
            seg = np.zeros((j1 - 1) * H + half - lo, np.float32)
            a, b = max(lo, self._buf_start), min((j1 - 1) * H + half, self.received)
            seg[a - lo : b - lo] = self._buf[a - self._buf_start : b - self._buf_start]
            idx = (np.arange(j1 - j0) * H)[:, None] + np.arange(self.N_FFT)[None, :]
            spec = np.fft.rfft(seg[idx] * self._window, axis=-1)
            p = (spec.real**2 + spec.imag**2).astype(np.float32)
            db = 10 * np.log10(np.maximum(p @ self._fb.T, 1e-10))
            # the floor uses the loudest bin so far, frame by frame (chunking-invariant)
            run_max = np.maximum.accumulate(np.maximum(db.max(axis=1), self._db_max))
            self._db_max = float(run_max[-1])
            for i in range(j1 - j0):
                cur = np.maximum(db[i], run_max[i] - 80.0)
                if self._prev_db is not None:
                    prev = np.maximum(self._prev_db, run_max[i] - 80.0)
                    self._env.append(float(np.maximum(0.0, cur - prev).mean()))
                self._prev_db = db[i]
            self._next_frame = j1
        # the envelope from frame e0 on (older values are dropped once no window reads them)
        e0, env = self._env_start, np.asarray(self._env, np.float32)
        if end is not None:
            env = env[: n_frames - e0]
        n_env = e0 + len(env)
        # a frame is decided once post_avg - 1 later envelope values exist (or at flush)
        stop = n_env if end is not None else n_env - (self._post_avg - 1)
        pre, post = self._pre_avg, self._post_avg
        for n in range(self._decided, max(self._decided, stop)):
            # the normalising maximum: over everything heard when frame n is decided
            seen = n_env if end is not None else n + post
            if seen > self._max_seen:
                self._env_max = max(
                    self._env_max, float(env[self._max_seen - e0 : seen - e0].max())
                )
                self._max_seen = seen
            if self._env_max <= 0:
                continue
            m = np.float32(self._env_max)
            x = (env[max(n - pre, 0) - e0 : n + post - e0] / m).astype(np.float64)
            xn = float(env[n - e0] / m)
            if xn > 0 and xn >= x.mean() + 0.07:
                self._onsets.append(n)
        self._decided = max(self._decided, stop)
        drop = max(0, self._decided - pre) - e0
        if drop > 0:
            del self._env[:drop]
            self._env_start += drop
        # keep the audio that later frames and envelope windows still need
        keep = max(0, min(self.emitted, self._next_frame * H - half) - self.frame_length)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep

    def _emit(self, final: int, end: int | None) -> np.ndarray:
        s0 = self.emitted
        if final <= s0:
            return np.zeros((0, 2), np.float32)
        out = np.zeros((final - s0, 2), np.float32)
        seg = self._buf[s0 - self._buf_start :]
        if end is None:
            out[:, 0] = amplitude_envelope(seg, self.frame_length)[: final - s0]
        else:
            # the offline end rule (the last full window's max) needs that window in the buffer
            lo = max(0, min(s0, end - self.frame_length))
            env = amplitude_envelope(self._buf[lo - self._buf_start :], self.frame_length)
            out[:, 0] = env[s0 - lo :]
        keep = []
        for n in self._onsets:
            i = n * self.HOP
            if i < s0:
                continue
            if i < final:
                out[i - s0, 1] = 1.0
            else:
                keep.append(n)
        self._onsets = keep
        self.emitted = final
        return out


def causal_onset_amplitude(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``(N, 2)``: what :class:`OnsetAmplitudeStream` gives for a whole recording (the causal
    counterpart of :func:`onset_amplitude`, for comparing streamed and offline generation)."""
    stream = OnsetAmplitudeStream(sample_rate)
    return np.concatenate([stream.push(audio), stream.flush()])

"""Semantic Gesticulator: Rhythmic and Semantic Co-Speech Gesture Generation
(Zhang et al., SIGGRAPH 2024) -- its 437-d audio features and its scaler files.

SG (``SG_code/prepare_data.py``, ``Processor._extract_audio_features``) reads the wav with
``librosa.load(sr=512 * fps // ds_rate)``: 3840 Hz for 60 fps motion and the tokenizer's
8x downsampling, so librosa's default hop of 512 samples gives exactly one feature row per
motion token (7.5 Hz). Per row, in this order:

====================  ====  ==========================================================
``mfcc``                20  ``mfcc(S=power_to_db(melspectrogram(y), ref=max))``
``mfcc_delta``          20  ``delta(mfcc, width=3)``
``chroma_cqt``          12  ``chroma_cqt(harmonic(y), n_octaves=7 if sr == 30720 else 5)``
``onset_env``            1  ``onset_strength(percussive(y), aggregate=median)``
``tempogram``          384  ``tempogram(onset_envelope=onset_env)``
====================  ====  ==========================================================

``process_for_generation`` then standardises them with ``audio_feature_scaler.sav`` (an
sklearn ``StandardScaler`` written by ``joblib.dump``); :func:`read_sg_scaler` reads that file
without sklearn and without running arbitrary pickled code.

librosa is imported when the features are computed (it is a dependency of gesture-eval, not
yet of gesture-data; the scaler reader needs only numpy).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .audio import _check_audio

SG_AUDIO_DIM = 437
SG_HOP = 512  # librosa's default hop; SG picks the sample rate so that one hop is one token
SG_FEATURE_TABLE = {
    "mfcc": 20,
    "mfcc_delta": 20,
    "chroma_cqt": 12,
    "onset_env": 1,
    "tempogram": 384,
}


def sg_feature_rate(fps: float = 60, ds_rate: int = 8) -> int:
    """SG's analysis sample rate ``512 * fps // ds_rate`` (3840 Hz for 60 fps, 8x)."""
    sr = SG_HOP * fps / ds_rate
    if not (np.isfinite(sr) and sr > 0 and float(sr).is_integer()):
        # SG asserts fps / ds_rate == sr / 512; a fractional rate would break that alignment
        raise DataError(
            None, "512 * fps / ds_rate must be a positive integer", key="fps", found=(fps, ds_rate)
        )
    return int(sr)


def sg_audio_features(
    audio: np.ndarray,
    sr: int,
    *,
    fps: float = 60,
    ds_rate: int = 8,
    scaler: SGScaler | None = None,
) -> np.ndarray:
    """SG's audio features, one row per motion token (``fps / ds_rate`` Hz).

    Args:
        audio: ``(S,)`` mono waveform at ``sr`` Hz: float in [-1, 1], or integer PCM (scaled
            to [-1, 1) as soundfile/librosa.load would read it).
        sr: its sample rate; it is resampled to ``512 * fps / ds_rate`` Hz with soxr (HQ),
            which is what ``librosa.load(path, sr=...)`` does in the reference.
        scaler: SG's ``audio_feature_scaler.sav`` (:func:`read_sg_scaler`); ``None`` returns
            the raw features.

    Returns:
        float32 ``(N, 437)`` with ``N = 1 + S' // 512`` (librosa's centred frames) and
        ``S' = ceil(S * rate / sr)``: row ``i`` covers motion frames ``[8i, 8i + 8)``. SG's
        training data crops motion to ``8 * N`` frames, or the rows to ``T // 8``.
    """
    import librosa  # heavy (numba); only this function needs it

    rate = sg_feature_rate(fps, ds_rate)
    a = np.asarray(audio)
    if a.dtype.kind in "iu":  # integer PCM: the reference reads floats in [-1, 1) from the file
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        # 8-bit PCM is unsigned, centred on 128
        a = (a.astype(np.float64) - (half if a.dtype.kind == "u" else 0.0)) / half
    y = _check_audio(a, sr)
    if sr != rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=rate, res_type="soxr_hq")
    if y.shape[0] < 2 * SG_HOP:
        # delta(width=3) needs 3 frames; librosa would fail deep inside with a bare message
        raise DataError(
            None,
            "audio too short for SG features",
            key="audio",
            expected=f">= {2 * SG_HOP / rate:.3f} s",
            found=f"{y.shape[0] / rate:.3f} s",
        )
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=rate), ref=np.max)
    mfcc = librosa.feature.mfcc(S=mel_db)
    mfcc_delta = librosa.feature.delta(mfcc, width=3)
    harmonic, percussive = librosa.effects.hpss(y)
    # the reference's rule: 7 octaves only at 60 fps x 512 Hz, else 5 (fits under Nyquist)
    octaves = 7 if rate == 60 * SG_HOP else 5
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=rate, n_octaves=octaves)
    onset = librosa.onset.onset_strength(y=percussive, sr=rate, aggregate=np.median)
    tempogram = librosa.feature.tempogram(onset_envelope=onset, sr=rate)
    # float64 like the reference (the tempogram is float64, so its concatenation is); scaled
    # in float64, then float32 as SG's generator reads it (``.astype(np.float32)``)
    feats = np.concatenate([mfcc, mfcc_delta, chroma, onset[None], tempogram], axis=0).T
    feats = feats.astype(np.float64)
    if scaler is not None:
        feats = scaler.transform(feats)
    return feats.astype(np.float32)


def sg_align(
    motion: np.ndarray, features: np.ndarray, *, ds_rate: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """SG's training crop (``Processor_h5._align``): ``motion (T, C)`` and ``features
    (N, D)`` -> ``motion[:8n]``, ``features[:n]`` with ``n = min(T, 8 N) // 8`` (``ds_rate``
    = 8), so every feature row has its 8 motion frames."""
    motion, features = np.asarray(motion), np.asarray(features)
    if motion.ndim != 2 or features.ndim != 2:
        raise DataError(
            None, "expected 2-d arrays", key="motion/features", found=(motion.shape, features.shape)
        )
    n = min(motion.shape[0], features.shape[0] * ds_rate) // ds_rate
    if n < 1:
        raise DataError(None, "nothing left after alignment", key="motion", found=motion.shape)
    return motion[: n * ds_rate], features[:n]


# --- scaler ------------------------------------------------------------------------------
@dataclass
class SGScaler:
    """sklearn ``StandardScaler`` parameters: ``mean (D,)``, ``scale (D,)`` (std, with
    sklearn's zero-variance entries already set to 1)."""

    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64)
        self.scale = np.asarray(self.scale, np.float64)
        if self.mean.ndim != 1 or self.scale.shape != self.mean.shape:
            raise DataError(
                None,
                "mean/scale shapes",
                key="scale",
                expected=self.mean.shape,
                found=self.scale.shape,
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all()):
            raise DataError(None, "non-finite scaler values", key="mean/scale")
        if (self.scale <= 0).any():
            raise DataError(
                None, "scale must be positive", key="scale", found=float(self.scale.min())
            )

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[-1:] != (self.dim,):
            raise DataError(
                None, "feature width", key="x", expected=("...", self.dim), found=x.shape
            )
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(..., D) -> (x - mean) / scale``, in x's float dtype (sklearn keeps float32)."""
        x = self._check(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
        return ((x - self.mean) / self.scale).astype(dtype)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """``(..., D) -> x * scale + mean``."""
        x = self._check(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
        return (x * self.scale + self.mean).astype(dtype)


class _ScalerState:
    """Stand-in for ``sklearn.preprocessing.StandardScaler``: keeps the pickled state dict."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("StandardScaler state is not a dict")
        self.state = state


class _JoblibArray:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: the array's bytes follow it
    in the file, outside the pickle stream."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("NumpyArrayWrapper state is not a dict")
        self.__dict__.update(state)


class _NdarrayName:
    """``numpy.ndarray`` is only ever an argument (joblib's ``subclass``, ``_reconstruct``);
    calling it would allocate arbitrary memory, so it cannot be called."""

    def __init__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray may not be called")


class _PickledArray:
    """What ``numpy.core.multiarray._reconstruct`` builds; ``__setstate__`` gets numpy's
    ``(version, shape, dtype, is_fortran, raw bytes)``."""

    def __setstate__(self, state):
        _, shape, dtype, fortran, raw = state
        self.array = _from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _numeric_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"array dtype {dtype!r} is not numeric")
    return dtype


def _from_bytes(raw, dtype, shape, order="C") -> np.ndarray:
    dtype = _numeric_dtype(dtype)
    shape = tuple(int(s) for s in shape)
    a = np.frombuffer(bytes(raw), dtype=dtype)
    if a.size != int(np.prod(shape)):
        raise pickle.UnpicklingError(f"array bytes for {a.size} values, shape {shape}")
    return a.reshape(shape, order=order).copy()


def _reconstruct(cls, shape, typecode):
    if cls is not _NdarrayName:
        raise pickle.UnpicklingError("only plain numpy arrays")
    return _PickledArray()


def _scalar(dtype, raw=b""):
    return _from_bytes(raw, dtype, ())[()]


def _frombuffer(buf, dtype, shape, order):
    return _from_bytes(buf, dtype, shape, order)


def _latin1(text, encoding="latin1"):
    # protocol 2 writes bytes as _codecs.encode(str, "latin1"); only that is allowed
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode only for latin1 bytes")
    return text.encode("latin1")


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED = {
    # sklearn >= 0.22 keeps StandardScaler in _data, older versions in data
    ("sklearn.preprocessing._data", "StandardScaler"): _ScalerState,
    ("sklearn.preprocessing.data", "StandardScaler"): _ScalerState,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _JoblibArray,
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"): _JoblibArray,
    # dtype construction from ('f8', False, True) + its state tuple is pure data
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): _NdarrayName,
    ("_codecs", "encode"): _latin1,
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


class _ScalerUnpickler(pickle._Unpickler):  # the Python one: its BUILD can be extended
    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                self.path,
                "refusing to unpickle a global a StandardScaler file does not need",
                key=f"{module}.{name}",
                expected="StandardScaler + numpy/joblib array classes",
                found=f"{module}.{name}",
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")

    def load_build(self):
        super().load_build()
        top = self.stack[-1]
        if isinstance(top, _JoblibArray):
            self.stack[-1] = self._read_joblib_array(top)
        elif isinstance(top, _PickledArray):
            self.stack[-1] = top.array

    dispatch[pickle.BUILD[0]] = load_build

    def _exact(self, n: int) -> bytes:
        data = self.read(n) if n else b""
        if len(data) != n:
            raise EOFError("array data truncated")
        return data

    def _read_joblib_array(self, w: _JoblibArray) -> np.ndarray:
        # joblib writes the raw bytes right after the wrapper's BUILD (the pickle frame is
        # committed first), optionally after a 1-byte count + that many alignment bytes
        if getattr(w, "subclass", _NdarrayName) is not _NdarrayName:
            raise pickle.UnpicklingError("only plain numpy arrays")
        dtype = _numeric_dtype(getattr(w, "dtype", None))
        shape = tuple(int(s) for s in w.shape)
        if getattr(w, "numpy_array_alignment_bytes", None) is not None:
            self._exact(self._exact(1)[0])
        raw = self._exact(int(np.prod(shape)) * dtype.itemsize)
        order = "F" if getattr(w, "order", "C") == "F" else "C"
        return _from_bytes(raw, dtype, shape, order)


def read_sg_scaler(path: str | Path) -> SGScaler:
    """Read SG's ``*_scaler.sav`` (``joblib.dump`` of an sklearn ``StandardScaler``; a plain
    ``pickle.dump`` of one also works) without importing sklearn.

    Only the classes such a file needs are resolved, each to a harmless stand-in; any other
    global (``os.system``, ...) raises :class:`DataError` naming the file and the global.
    Compressed joblib files are not supported (SG writes uncompressed ones)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "scaler file missing") from None
    if raw[:1] != b"\x80":
        # joblib's compressed formats start with zlib/gzip/xz/lz4 magic, never PROTO
        raise DataError(path, "not an uncompressed pickle", key="header", found=raw[:4])
    try:
        obj = _ScalerUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise DataError(
            path, f"corrupt or truncated scaler pickle: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(obj, _ScalerState):
        raise DataError(
            path, "not a StandardScaler", expected="StandardScaler", found=type(obj).__name__
        )
    st = obj.state
    mean, scale, var = st.get("mean_"), st.get("scale_"), st.get("var_")
    ref = next((a for a in (mean, scale, var) if isinstance(a, np.ndarray)), None)
    if ref is None:
        raise DataError(path, "scaler has no fitted arrays", key="mean_/scale_/var_")
    dim = ref.shape[-1] if ref.ndim else 0
    for key, a in (("mean_", mean), ("scale_", scale), ("var_", var)):
        if a is not None and (not isinstance(a, np.ndarray) or a.shape != (dim,)):
            found = a.shape if isinstance(a, np.ndarray) else type(a).__name__
            raise DataError(path, "bad scaler array", key=key, expected=(dim,), found=found)
    n_in = st.get("n_features_in_")
    if n_in is not None and int(n_in) != dim:
        raise DataError(path, "feature count", key="n_features_in_", expected=dim, found=n_in)
    # with_mean=False / with_std=False still store the fitted mean_/var_, but transform
    # ignores them
    if mean is None or st.get("with_mean") is False:
        mean = np.zeros(dim)
    if st.get("with_std") is False:
        scale = np.ones(dim)
    elif scale is None:  # an old pickle with only var_
        scale = np.ones(dim) if var is None else np.where(var > 0, np.sqrt(var), 1.0)
    try:
        return SGScaler(mean, scale)
    except DataError as e:
        raise DataError(path, str(e).split(": ", 1)[-1]) from None

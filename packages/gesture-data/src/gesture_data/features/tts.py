"""Real synthesized speech from eSpeak NG (the ``espeakng-loader`` wheel), via ctypes.

Words are synthesised one at a time so every word's audio, and therefore its timing in a
concatenated utterance, is known exactly. The library keeps global state, so all calls go
through one lock; output is deterministic for a given (text, voice, rate, pitch).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import resample

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_espeakRATE, _espeakVOLUME, _espeakPITCH = 1, 2, 3

_lock = threading.Lock()
_state: dict = {}
_SYNTH_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _lib():
    """Load and initialise libespeak-ng once per process."""
    if "lib" in _state:
        return _state["lib"]
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("espeakng-loader is required for synthetic speech") from e
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
    if sr <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({sr})")
    chunks: list[np.ndarray] = []

    def _cb(wav, n, _events):
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    cb = _SYNTH_CB(_cb)
    lib.espeak_SetSynthCallback(cb)
    _state.update(lib=lib, sr=sr, cb=cb, chunks=chunks, voice=None)
    return lib


def native_rate() -> int:
    with _lock:
        _lib()
        return _state["sr"]


@lru_cache(maxsize=4096)
def _synth_cached(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    with _lock:
        lib = _lib()
        if _state["voice"] != voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            _state["voice"] = voice
        lib.espeak_SetParameter(_espeakRATE, int(rate), 0)
        lib.espeak_SetParameter(_espeakPITCH, int(pitch), 0)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        _state["chunks"].clear()
        err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
        pcm = np.concatenate(_state["chunks"]) if _state["chunks"] else np.zeros(0, np.int16)
        _state["chunks"].clear()
    return (pcm.astype(np.float32) / 32768.0).copy()


def synthesize(
    text: str,
    voice: str = "en",
    rate: int = 165,
    pitch: int = 50,
    sample_rate: int = 16000,
    trim: bool = True,
) -> np.ndarray:
    """Speak ``text`` -> float32 ``(N,)`` at ``sample_rate``. ``rate`` is words per minute,
    ``pitch`` 0-100. With ``trim`` leading/trailing silence (< -46 dBFS) is cut, so the
    returned samples are the word itself."""
    pcm = _synth_cached(text, voice, rate, pitch)
    out = resample(pcm, native_rate(), sample_rate)
    if trim and out.size:
        loud = np.flatnonzero(np.abs(out) > 0.005)
        out = out[loud[0] : loud[-1] + 1] if loud.size else out[:0]
    return out.astype(np.float32)

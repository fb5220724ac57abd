"""Real synthesized speech from eSpeak NG (the ``espeakng-loader`` wheel), via ctypes.

Words are synthesised one at a time so every word's audio, and therefore its timing in a
concatenated utterance, is known exactly.

Determinism. eSpeak NG keeps synthesis state in C ``static`` variables that no API call
resets: ``wavegen.c``'s pitch-flutter phase (``Flutter_ix`` in ``AdvanceParameters``) and
glottal-cycle counter (``cycle_count`` in ``Wavegen``) carry over from one ``espeak_Synth``
to the next, so the same word came out with other samples and another length depending on
what the process had spoken before. Setting the voice and parameters again,
``espeak_Cancel``, ``espeak_Terminate`` + ``espeak_Initialize`` and a fixed spoken preamble
were measured and none of them resets that state. So every synthesis runs in a freshly
loaded copy of the library: its data segment is mapped from the file again, i.e. exactly
the state of a new process. The library's noise generator (used by breathy voices) is seeded
from the wall clock at initialisation; it is re-seeded with a constant. The output is then a
pure function of (text, voice, rate, pitch) and the eSpeak build (:func:`engine_version`),
and the per-process cache is a plain memo.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import tempfile
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
# Any constant works: it only has to be the same in every process.
_RAND_SEED = 0

_lock = threading.Lock()
_state: dict = {}
_SYNTH_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_chunks: list[np.ndarray] = []


def _cb(wav, n, _events):
    if n > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


# One callback object for the life of the process: the library keeps only a raw pointer.
_CALLBACK = _SYNTH_CB(_cb)


def _loader():
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("espeakng-loader is required for synthetic speech") from e
    return espeakng_loader


def _private_library() -> str:
    """Path of this process's own copy of libespeak-ng.

    The dynamic loader shares one instance per file, so if anything else in the process had
    the wheel's library open, unloading ours would not really unload it and its state would
    survive. A private copy is only ever opened here."""
    if "path" not in _state:
        src = _loader().get_library_path()
        tmp = tempfile.mkdtemp(prefix="gesture-data-espeak-")
        atexit.register(shutil.rmtree, tmp, True)
        dst = os.path.join(tmp, os.path.basename(src))
        shutil.copyfile(src, dst)
        _state["path"] = dst
    return _state["path"]


def _unload(lib: ctypes.CDLL, path: str) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary
    close(lib._handle)
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # Windows: FreeLibrary unloads once the count reaches 0
        return
    try:  # succeeds only if the library is still mapped
        still = ctypes.CDLL(path, mode=no_load)
    except OSError:
        return
    close(still._handle)
    raise RuntimeError(
        f"{path}: the dynamic loader kept libespeak-ng loaded after dlclose, so its "
        "internal state would leak from one synthesis into the next"
    )


def _open() -> ctypes.CDLL:
    """A freshly loaded, initialised eSpeak NG (state as in a new process)."""
    path = _private_library()
    mode = getattr(os, "RTLD_LOCAL", 0)
    try:
        lib = ctypes.CDLL(path, mode=mode)
    except OSError as e:
        # e.g. a temporary folder mounted noexec. The wheel's own file works as well as long
        # as nothing else holds it open, which _unload checks after every synthesis.
        wheel = _loader().get_library_path()
        if path == wheel:
            raise
        log.warning("cannot load a private copy of libespeak-ng (%s); using %s", e, wheel)
        path = _state["path"] = wheel
        lib = ctypes.CDLL(path, mode=mode)
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
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    data_parent = str(Path(_loader().get_data_path()).parent).encode()
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
    if sr <= 0:
        _unload(lib, path)
        raise RuntimeError(f"espeak_Initialize failed ({sr})")
    _state["sr"] = sr
    try:  # eSpeak NG >= 1.51; older builds seed nothing we use
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed(_RAND_SEED)
    except AttributeError:
        pass
    lib.espeak_SetSynthCallback(_CALLBACK)
    return lib


def _close(lib: ctypes.CDLL) -> None:
    lib.espeak_Terminate()  # frees the buffers Initialize allocated before we unmap the code
    _unload(lib, _state["path"])


def native_rate() -> int:
    with _lock:
        if "sr" not in _state:
            _close(_open())
        return _state["sr"]


def engine_version() -> str:
    """The eSpeak NG build that produces the audio, e.g. ``espeak-ng 1.52.0 (espeakng-loader
    0.2.4)``. Synthesis is deterministic for one build; keys of anything stored from it
    (caches, corpora on disk) include this string."""
    with _lock:
        if "version" not in _state:
            from importlib.metadata import version

            lib = _open()
            try:
                ver = lib.espeak_Info(None).decode()
            finally:
                _close(lib)
            _state["version"] = f"espeak-ng {ver} (espeakng-loader {version('espeakng-loader')})"
        return _state["version"]


@lru_cache(maxsize=4096)
def _synth_cached(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    with _lock:
        lib = _open()
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            lib.espeak_SetParameter(_espeakRATE, int(rate), 0)
            lib.espeak_SetParameter(_espeakPITCH, int(pitch), 0)
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            _chunks.clear()
            err = lib.espeak_Synth(
                buf, len(buf), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None
            )
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        finally:
            _chunks.clear()
            _close(lib)
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
    returned samples are the word itself.

    The result depends only on the arguments and :func:`engine_version`, not on anything
    synthesised before in the process (each call gets a freshly loaded eSpeak NG)."""
    pcm = _synth_cached(text, voice, rate, pitch)
    out = resample(pcm, native_rate(), sample_rate)
    if trim and out.size:
        loud = np.flatnonzero(np.abs(out) > 0.005)
        out = out[loud[0] : loud[-1] + 1] if loud.size else out[:0]
    return out.astype(np.float32)

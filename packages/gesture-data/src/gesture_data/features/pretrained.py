"""Frame-aligned features from a pretrained speech encoder (wav2vec2 / WavLM / HuBERT)
loaded from a local folder through ``transformers`` (no network access: weights are the
user's, e.g. a ``save_pretrained`` folder or a downloaded hub snapshot)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

log = logging.getLogger(__name__)


class SpeechEncoder:
    """``encoder(audio (N,), sample_rate) -> (T, D)`` hidden states of ``layer`` resampled to
    ``fps`` so feature frame i lines up with motion frame i (``T = n_frames`` or
    ``floor(N / sample_rate * fps)``)."""

    def __init__(self, path: str | Path, *, layer: int = -1, device: str | torch.device = "cpu"):
        from transformers import AutoFeatureExtractor, AutoModel

        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise DataError(self.path / "config.json", "not a transformers model folder")
        try:
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(self.path, f"cannot load encoder: {e}") from None
        self.model.eval().to(device)
        self.device = torch.device(device)
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError):
            self.extractor = None  # fall back to zero-mean / unit-variance, as wav2vec2 does
        self.layer = layer
        self.sample_rate = getattr(self.extractor, "sampling_rate", 16000) or 16000

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(
        self,
        audio: np.ndarray,
        sample_rate: int = 16000,
        fps: float = 30.0,
        n_frames: int | None = None,
    ) -> np.ndarray:
        from .audio import resample

        x = resample(np.asarray(audio, np.float32), sample_rate, self.sample_rate)
        if self.extractor is not None:
            inp = self.extractor(x, sampling_rate=self.sample_rate, return_tensors="pt")
            values = inp["input_values"]
        else:
            values = torch.from_numpy((x - x.mean()) / (x.std() + 1e-7))[None]
        out = self.model(values.to(self.device), output_hidden_states=True)
        h = out.hidden_states[self.layer][0].float().cpu().numpy()  # (L, D)
        T = n_frames if n_frames is not None else int(np.floor(x.size / self.sample_rate * fps))
        # encoder frames are centred at (k + 0.5) * hop; interpolate onto motion frame times
        hop = x.size / max(h.shape[0], 1)
        src = (np.arange(h.shape[0]) + 0.5) * hop / self.sample_rate
        dst = np.arange(T) / fps
        idx = np.clip(np.searchsorted(src, dst) - 1, 0, max(h.shape[0] - 2, 0))
        if h.shape[0] == 1:
            return np.repeat(h, T, 0).astype(np.float32)
        w = np.clip((dst - src[idx]) / (src[idx + 1] - src[idx]), 0, 1)[:, None]
        return ((1 - w) * h[idx] + w * h[idx + 1]).astype(np.float32)

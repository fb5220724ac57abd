"""Captions -> the word vectors and part-of-speech one-hots Guo et al.'s text encoder reads.

English follows HumanML3D: ``sos`` + up to ``max_words`` GloVe tokens + ``eos``, padded with
``unk`` (Guo's ``WordVectorizer`` from a local GloVe folder). Korean (the KTubeUM default) has
no GloVe table and no spaCy tags: kiwipiepy morphemes are embedded one by one with the
multilingual-e5-small encoder (384-d) and their Sejong tags are mapped onto Guo's 15 POS
categories (:data:`KIWI_TO_GUO`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from gesture_apps.errors import ConfigError
from gesture_eval.text2motion import POS_CATEGORIES, WordVectorizer

__all__ = ["KIWI_TO_GUO", "CaptionFeatures", "caption_features", "korean_tokens"]

# Sejong tag (kiwipiepy) -> Guo category. Korean has no articles or prepositions; the closest
# functional matches are used so the one-hot still separates content words (what motion
# follows) from grammar: case/auxiliary particles play the role of adpositions, copulas and
# auxiliary predicates the role of AUX, determiners (관형사) DET. Endings, affixes and symbols
# carry no motion content and go to OTHER. Guo's five VIP lists are English words, so Korean
# tokens never get a VIP category.
KIWI_TO_GUO: dict[str, str] = {
    "VV": "VERB",
    "VA": "ADJ",
    "VX": "AUX",
    "VCP": "AUX",
    "VCN": "AUX",
    "NNG": "NOUN",
    "NNP": "NOUN",
    "NNB": "NOUN",
    "NR": "NUM",
    "SN": "NUM",
    "NP": "PRON",
    "MM": "DET",
    "MAG": "ADV",
    "MAJ": "ADV",
    "JKS": "ADP",
    "JKC": "ADP",
    "JKG": "ADP",
    "JKO": "ADP",
    "JKB": "ADP",
    "JKV": "ADP",
    "JKQ": "ADP",
    "JX": "ADP",
    "JC": "ADP",
}

_E5: dict[str, object] = {}  # the encoder, built once per process
_MORPHEME_CACHE: dict[str, np.ndarray] = {}  # E5 vector of each morpheme seen


class CaptionFeatures(NamedTuple):
    word_emb: Tensor  # (B, L, dim_word) float32
    pos_ohot: Tensor  # (B, L, 15) float32
    cap_lens: Tensor  # (B,) int64, tokens used per caption


def korean_tokens(caption: str) -> list[tuple[str, str]]:
    """``[(morpheme, Guo category)]`` of a Korean caption."""
    from gesture_data.features.text import korean_morphemes

    # kiwipiepy marks irregular conjugation as "VV-I" etc.: the base tag decides
    morphemes = korean_morphemes(caption)
    return [(form, KIWI_TO_GUO.get(tag.split("-")[0], "OTHER")) for form, tag in morphemes]


def _e5_vectors(forms: list[str]) -> np.ndarray:
    new = [f for f in dict.fromkeys(forms) if f not in _MORPHEME_CACHE]
    if new:
        if "e5" not in _E5:
            from gesture_data.features.text import E5TextEncoder

            _E5["e5"] = E5TextEncoder()
        for f, v in zip(new, _E5["e5"].embed(new), strict=True):  # type: ignore[attr-defined]
            _MORPHEME_CACHE[f] = v
    return np.stack([_MORPHEME_CACHE[f] for f in forms])


def _english_tokens(caption: str) -> list[str]:
    # a HumanML3D token line ("walk/VERB forward/ADV") is used as is; raw text gets no tags
    # (words outside the VIP lists then count as OTHER)
    items = caption.split()
    if items and all("/" in t for t in items):
        return items
    return [f"{w.strip('.,!?;:').lower()}/OTHER" for w in items if w.strip(".,!?;:")]


def caption_features(
    captions: list[str],
    *,
    language: str = "ko",
    vectorizer: WordVectorizer | None = None,
    max_words: int = 20,
) -> CaptionFeatures:
    """``captions`` (B strings) -> ``word_emb (B, L, D)``, ``pos_ohot (B, L, 15)``,
    ``cap_lens (B,)``; ``L`` is the longest caption's token count (English: ``max_words + 2``
    as HumanML3D pads). ``D`` is 384 for Korean (E5) and the GloVe size for English."""
    if language not in ("ko", "en"):
        raise ConfigError(f"language: expected 'ko' or 'en', found {language!r}")
    if max_words < 1:
        raise ConfigError(f"max_words must be at least 1, found {max_words}")
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for i, caption in enumerate(captions):
        if language == "en":
            if vectorizer is None:
                raise ConfigError("English captions need a WordVectorizer (a GloVe folder)")
            tokens = ["sos/OTHER", *_english_tokens(caption)[:max_words], "eos/OTHER"]
            pairs = [vectorizer[t] for t in tokens]
            vecs = np.stack([p[0] for p in pairs]).astype(np.float32)
            pos = np.stack([p[1] for p in pairs]).astype(np.float32)
        else:
            tokens = korean_tokens(caption)[:max_words]
            if not tokens:
                raise ConfigError(f"caption {i}: no Korean morphemes in {caption!r}")
            vecs = _e5_vectors([f for f, _ in tokens]).astype(np.float32)
            pos = np.stack([WordVectorizer.pos_one_hot(c) for _, c in tokens]).astype(np.float32)
        rows.append((vecs, pos))
    if not rows:
        raise ConfigError("captions: expected at least one caption")
    lens = [len(v) for v, _ in rows]
    width = max_words + 2 if language == "en" else max(lens)
    dim = rows[0][0].shape[1]
    word = np.zeros((len(rows), width, dim), np.float32)
    pos = np.zeros((len(rows), width, len(POS_CATEGORIES)), np.float32)
    for i, (v, p) in enumerate(rows):
        word[i, : len(v)], pos[i, : len(p)] = v, p
        if language == "en" and vectorizer is not None:
            # HumanML3D pads with the 'unk' vector tagged OTHER, not zeros
            pad_v, pad_p = vectorizer["unk/OTHER"]
            word[i, len(v) :], pos[i, len(p) :] = pad_v, pad_p
    return CaptionFeatures(torch.from_numpy(word), torch.from_numpy(pos), torch.tensor(lens))

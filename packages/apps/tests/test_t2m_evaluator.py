"""`gesture train t2m-evaluator` and `gesture eval t2m` on synthetic Korean utterances.

One tiny evaluator (preset t2m_evaluator/tiny: 32 clips, 200 steps) is trained once per module
through the command line and scored on the clips it saw (the test checks the recipe learns the
caption/motion match, not generalisation).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gesture_apps.cli import main
from gesture_apps.errors import GenerationError
from gesture_apps.systems.t2m_gpt.evaluate import evaluate_t2m, ground_truth_generate, split_items
from gesture_apps.systems.t2m_gpt.evaluator import load_evaluator
from gesture_apps.systems.t2m_gpt.words import caption_features, korean_tokens


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2m_eval_run")
    assert main(["train", "t2m-evaluator", "--preset", "t2m_evaluator/tiny", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def data(run):
    return run / "synthetic_data"


def test_korean_caption_features():
    assert korean_tokens("당신은 도시") == [("당신", "PRON"), ("은", "ADP"), ("도시", "NOUN")]
    f = caption_features(["당신은 도시", "주말"], language="ko")
    assert f.word_emb.shape == (2, 3, 384) and f.pos_ohot.shape == (2, 3, 15)
    assert f.cap_lens.tolist() == [3, 1]
    assert f.pos_ohot[1, 1:].abs().sum() == 0 and f.word_emb[1, 1:].abs().sum() == 0  # padding
    # one E5 vector per morpheme, cached: the same morpheme gets the same row
    again = caption_features(["도시"], language="ko")
    assert torch.equal(again.word_emb[0, 0], f.word_emb[0, 2])


def test_export_bundle(run):
    ev = load_evaluator(run)
    assert ev.language == "ko" and ev.model.dim_word == 384 and ev.mean.shape == (263,)
    assert (run / "t2m_evaluator" / "evaluator" / "model.safetensors").is_file()
    with pytest.raises(GenerationError, match="not found"):
        load_evaluator(run / "missing")


def test_matched_text_ranks_above_mismatched(run, data):
    ev = load_evaluator(run)
    gt = ground_truth_generate(data, "all")
    matched = evaluate_t2m(gt, data, ev, split="all")

    def other_utterance(captions, lengths):  # each caption gets the next caption's motion
        motions = gt(captions, torch.full_like(lengths, 10**6))
        return [m[: int(n)] for m, n in zip(motions[1:] + motions[:1], lengths, strict=True)]

    mismatched = evaluate_t2m(other_utterance, data, ev, split="all")
    print("matched", matched, "mismatched", mismatched)
    # measured (seed 0, one batch of 32): matched top-3 1.0, top-1 0.97, MM-Dist 1.52;
    # mismatched top-3 0.06 (chance 3/32 = 0.094), MM-Dist 9.94. The bounds leave wide margins
    # for other thread counts and platforms (GRU sums round differently).
    assert matched["r_precision_top3"] >= 0.7
    assert matched["r_precision_top1"] >= 0.5
    assert mismatched["r_precision_top3"] <= 0.35
    assert matched["matching_score"] < 0.5 * mismatched["matching_score"]
    # the same motion set in another order: FID is 0 up to sqrtm rounding (measured |FID|
    # < 1e-7 at D = 32) in both rows; R-precision alone tells them apart
    assert abs(matched["fid"]) < 1e-4 and abs(mismatched["fid"]) < 1e-4


def test_fid_separates_degraded_motion(run, data):
    ev = load_evaluator(run)
    gt = ground_truth_generate(data, "all")

    def frozen(captions, lengths):  # each clip's first frame held still: no gesture at all
        return [np.repeat(m[:1], len(m), axis=0) for m in gt(captions, lengths)]

    result = evaluate_t2m(frozen, data, ev, split="all")
    print("frozen", result)
    # measured: FID 13.7 for frozen motion (ground truth: |FID| < 1e-7), top-3 0.19
    assert result["fid"] > 5.0
    assert result["r_precision_top3"] < 0.5


def test_eval_cli_ground_truth_row(run, data, tmp_path):
    out = tmp_path / "m.json"
    args = ["eval", "t2m", "--evaluator", str(run), "--data", str(data), "--split", "all"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scored"] == "ground truth" and abs(result["metrics"]["fid"]) < 1e-4
    assert result["metrics"]["r_precision_top3"] >= 0.7
    _, captions, _ = split_items(data, "all")
    assert result["metrics"]["num_samples"] == len(captions) // 32 * 32
    # bad input is one line and exit status 2
    assert main(["eval", "t2m", "--evaluator", str(run), "--data", str(tmp_path / "nope")]) == 2


def test_english_caption_features_follow_humanml3d(tmp_path):
    import pickle

    from gesture_eval.text2motion import POS_CATEGORIES, WordVectorizer

    words = ["unk", "sos", "eos", "a", "person", "walk"]
    np.save(tmp_path / "our_vab_data.npy", np.eye(6, dtype=np.float32))
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    f = caption_features(
        ["a/DET person/NOUN walk/VERB", "A person."],
        language="en",
        vectorizer=WordVectorizer(tmp_path),
        max_words=4,
    )
    # sos + tokens + eos, padded with 'unk' to max_words + 2
    assert f.word_emb.shape == (2, 6, 6) and f.cap_lens.tolist() == [5, 4]
    assert f.word_emb[0].argmax(-1).tolist() == [1, 3, 4, 5, 2, 0]
    cats = [POS_CATEGORIES[i] for i in f.pos_ohot[0].argmax(-1).tolist()]
    assert cats == ["OTHER", "DET", "NOUN", "Act_VIP", "OTHER", "OTHER"]
    # raw text: lower-cased words without tags
    assert f.word_emb[1, :4].argmax(-1).tolist() == [1, 3, 4, 2]

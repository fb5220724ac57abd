"""Text (BLEU, ROUGE-L) and audio (LSD, MCD) metrics: identities and hand-computed values."""

import numpy as np
import pytest

from gesture_eval import EvalError
from gesture_eval import synthetic as S
from gesture_eval.audio import (
    audio_gesture_alignment,
    log_spectral_distance,
    mel_cepstral_distortion,
)
from gesture_eval.text import bleu, rouge_l


def test_bleu_and_rouge_values():
    hyp = ["the cat sat on the mat", "a quick brown fox"]
    assert bleu(hyp, hyp) == pytest.approx(100.0)
    assert rouge_l(hyp, hyp) == pytest.approx(1.0)
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 tokens each: P = R = F = 5/6
    assert rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(5 / 6)
    # Same sentence pair: BLEU = BP * exp(mean log p_n) with p1..p4 = 5/6, 3/5, 1/4, 0/3 -> 0
    # after sacrebleu's default 'exp' smoothing: 100 * (5/6 * 3/5 * 1/4 * 1/6) ** 0.25 (no BP)
    value = bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert value == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, rel=1e-6)
    assert bleu(["the cat sat on the mat"], [["a dog", "the cat sat on the mat"]]) == pytest.approx(
        100.0
    )
    with pytest.raises(EvalError, match=r"hypotheses \(2\) and references \(1\)"):
        bleu(hyp, hyp[:1])
    with pytest.raises(EvalError, match="empty"):
        rouge_l([], [])


def test_audio_metrics():
    a, _ = S.click_track(3.0, seed=1)
    b, _ = S.click_track(3.0, seed=2)
    assert log_spectral_distance(a, a) == 0.0
    assert mel_cepstral_distortion(a, a) == 0.0
    assert log_spectral_distance(a, b) > 0.1
    assert mel_cepstral_distortion(a, b) > mel_cepstral_distortion(a, a * 0.999)
    assert mel_cepstral_distortion(a, b, align="dtw") <= mel_cepstral_distortion(a, b) + 1e-9
    with pytest.raises(EvalError, match="too short"):
        log_spectral_distance(a[:100], b[:100])
    with pytest.raises(ValueError, match="NaN"):
        log_spectral_distance(np.full(4000, np.nan), b)


def test_audio_gesture_alignment_is_bc():
    joints = S.random_walk_joints(300, seed=3)
    audio, _ = S.click_track(10.3, seed=3)
    mv = S.synthetic_mean_velocity(seed=5)
    from gesture_eval import beat_consistency

    assert audio_gesture_alignment(joints, audio, mean_velocity=mv) == beat_consistency(
        joints, audio, mean_velocity=mv
    )

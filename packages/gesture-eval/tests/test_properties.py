"""Properties and input validation (no reference values needed)."""

import numpy as np
import pytest
import torch

from gesture_eval import (
    BeatConsistency,
    EvalError,
    FrechetDistance,
    L1Diversity,
    beat_consistency,
    frechet_distance,
    l1_diversity,
)
from gesture_eval import synthetic as S

MV = np.full(55, 0.2, np.float32)


@pytest.mark.parametrize("variant", ["evaltools", "cvpr24"])
def test_fgd_self_is_zero_up_to_eps_and_symmetric(variant):
    a = S.gaussian_features(300, 24, mix=0.2, seed=1)
    b = S.gaussian_features(250, 24, shift=0.3, mix=0.2, seed=2)
    eps_term = -2 * 24 * 1e-6 if variant == "evaltools" else 0.0
    assert frechet_distance(a, a, variant=variant) == pytest.approx(eps_term, abs=1e-8)
    assert frechet_distance(a, b, variant=variant) == pytest.approx(
        frechet_distance(b, a, variant=variant), rel=1e-7
    )
    assert frechet_distance(a, b, variant=variant, eps=0.0) == pytest.approx(
        frechet_distance(a, b, variant="cvpr24"), rel=1e-6
    )


def test_fgd_batch_splitting_and_merge_do_not_change_result():
    a = S.gaussian_features(300, 16, seed=3)
    b = S.gaussian_features(200, 16, shift=0.5, seed=4)
    whole = FrechetDistance()
    whole.update(torch.from_numpy(a), torch.from_numpy(b))
    split, other = FrechetDistance(), FrechetDistance()
    split.update(a[:100], b[:50])
    other.update(a[100:], b[50:])
    split.merge_state(other)  # what a DDP all-gather does
    assert float(split.compute()) == pytest.approx(float(whole.compute()), rel=1e-6)
    assert float(whole.compute()) == pytest.approx(frechet_distance(a, b), rel=1e-6)


def _beat_motion(beat_times, seconds, fps=30):
    """Upper-body joints that move along x and pause (speed minima) at ``beat_times``."""
    t = np.arange(int(seconds * fps)) / fps
    d = np.min(np.abs(t[:, None] - np.asarray(beat_times)[None]), axis=1)
    speed = 0.05 + 1.0 * (1 - np.exp(-(d**2) / (2 * 0.1**2)))
    x = np.cumsum(speed) / fps
    joints = np.zeros((len(t), 55, 3), np.float32)
    joints[:, :, 0] = x[:, None]
    return joints


def test_bc_beats_on_onsets_beat_shifted_motion():
    audio, clicks = S.click_track(30.0, interval=1.0, jitter=0.3, seed=5)
    aligned = _beat_motion(clicks, 29.5)
    shifted = _beat_motion(clicks + 0.5, 29.5)
    for variant in ("evaltools", "cvpr24"):
        good = beat_consistency(aligned, audio, mean_velocity=MV, variant=variant)
        bad = beat_consistency(shifted, audio, mean_velocity=MV, variant=variant)
        assert good > 0.9 and good > bad + 0.2, (variant, good, bad)


def test_bc_and_l1_batch_splitting_and_merge():
    seqs = [
        (S.random_walk_joints(t, seed=i), S.click_track(t / 30 + 0.3, seed=i)[0])
        for i, t in enumerate((300, 420, 360))
    ]
    full, part_a, part_b = (BeatConsistency(mean_velocity=MV) for _ in range(3))
    for j, a in seqs:
        full.update(j, a)
    part_a.update(*seqs[0])
    for j, a in seqs[1:]:
        part_b.update(j, a)
    part_a.merge_state(part_b)
    assert float(part_a.compute()) == pytest.approx(float(full.compute()), rel=1e-12)
    weights = np.array([t - 120 for t in (300, 420, 360)])
    vals = np.array([beat_consistency(j, a, mean_velocity=MV) for j, a in seqs])
    assert float(full.compute()) == pytest.approx((vals * weights).sum() / weights.sum(), rel=1e-12)

    same = [S.random_walk_joints(200, seed=i) for i in range(4)]
    batched, one_by_one = L1Diversity(), L1Diversity()
    batched.update(np.stack(same))
    for j in same:
        one_by_one.update(j)
    assert float(batched.compute()) == pytest.approx(float(one_by_one.compute()), rel=1e-12)
    assert float(batched.compute()) == pytest.approx(
        np.mean([l1_diversity(j) for j in same]), rel=1e-6
    )
    batched.reset()
    with pytest.warns(UserWarning), pytest.raises(EvalError, match="before any update"):
        batched.compute()


def test_bad_inputs_raise_clear_value_errors():
    joints = S.random_walk_joints(300, seed=0)
    audio, _ = S.click_track(10.5, seed=0)
    # NaN
    bad = joints.copy()
    bad[5, 3, 1] = np.nan
    with pytest.raises(ValueError, match="joints contains 1 NaN"):
        beat_consistency(bad, audio, mean_velocity=MV)
    with pytest.raises(ValueError, match="NaN"):
        l1_diversity(bad)
    feats = S.gaussian_features(10, 4, seed=0)
    feats[0, 0] = np.inf
    with pytest.raises(ValueError, match="feats_a contains"):
        frechet_distance(feats, feats)
    # wrong joint counts / shapes
    with pytest.raises(ValueError, match=r"uses joint index 21.*\(T, 55, 3\)"):
        beat_consistency(joints[:, :20], audio, mean_velocity=MV[:20])
    with pytest.raises(ValueError, match=r"mean_velocity must be \(55,\).*\(52,\)"):
        beat_consistency(joints, audio, mean_velocity=MV[:52])
    with pytest.raises(ValueError, match=r"\(T, J, 3\) or \(T, J\*3\), found shape \(300, 55, 2\)"):
        l1_diversity(joints[..., :2])
    with pytest.raises(ValueError, match=r"same D.*\(10, 4\) and \(10, 5\)"):
        frechet_distance(S.gaussian_features(10, 4), S.gaussian_features(10, 5))
    # empty sets
    with pytest.raises(ValueError, match="at least 2 samples, found 0"):
        frechet_distance(np.zeros((0, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="empty"):
        l1_diversity(np.zeros((0, 55, 3)))
    with pytest.raises(ValueError, match="audio is empty"):
        beat_consistency(joints, np.zeros(0, np.float32), mean_velocity=MV)
    # mismatched lengths: audio much shorter than the motion
    with pytest.raises(ValueError, match=r"audio \(5.00 s\) is shorter than joints \(10.00 s"):
        beat_consistency(joints, audio[:80000], mean_velocity=MV)
    # audio at the wrong rate
    with pytest.raises(ValueError, match=r"16 kHz.*sample_rate=22050"):
        beat_consistency(joints, audio, mean_velocity=MV, sample_rate=22050)
    # variant names and cvpr24 requirements
    with pytest.raises(ValueError, match="variant must be one of"):
        l1_diversity(joints, variant="cvpr25")
    with pytest.raises(ValueError, match=r"cvpr24.*needs mean_velocity"):
        beat_consistency(joints, audio, variant="cvpr24")
    with pytest.raises(ValueError, match=r"too short|needs more than"):
        beat_consistency(joints[:130], audio, mean_velocity=MV)


def test_detail_result_names_its_variant_and_class_forms_agree():
    from gesture_eval import beat_consistency_detail

    joints = S.random_walk_joints(400, seed=9)
    audio, _ = S.click_track(13.8, seed=9)
    mv = S.synthetic_mean_velocity(seed=5)
    for variant in ("evaltools", "cvpr24"):
        res = beat_consistency_detail(joints, audio, mean_velocity=mv, variant=variant)
        assert res.variant == variant and res.weight == 400 - 120
        assert res.per_joint.shape == (13,) and res.num_onsets > 0
        assert res.value == pytest.approx(res.per_joint.mean(), rel=1e-12)
        m = BeatConsistency(mean_velocity=mv, variant=variant, fix_index_offset=True)
        m.update(joints, audio)
        fixed = beat_consistency(
            joints, audio, mean_velocity=mv, variant=variant, fix_index_offset=True
        )
        assert float(m.compute()) == pytest.approx(fixed, rel=1e-12)

"""``gesture_eval.evaluate``: one call over a test set, JSON-ready, per variant."""

import json

import numpy as np
import pytest

from gesture_eval import (
    EvalError,
    FGDEncoder,
    L1Diversity,
    evaluate,
    fgd_features,
    frechet_distance,
    smplx_joints,
)
from gesture_eval import synthetic as S


def test_evaluate_all_metrics_both_variants(smplx_file):
    lengths = (140, 150)
    pred = [S.random_axis_angle(t, scale=0.3, seed=i) for i, t in enumerate(lengths)]
    gt = [S.random_axis_angle(t + 5, scale=0.3, seed=10 + i) for i, t in enumerate(lengths)]
    audios = [S.click_track(t / 30 + 0.5, seed=i)[0] for i, t in enumerate(lengths)]
    rng = np.random.default_rng(0)
    pexp = [rng.normal(size=(t, 100)).astype(np.float32) for t in lengths]
    gexp = [rng.normal(size=(t + 5, 100)).astype(np.float32) for t in lengths]
    enc = FGDEncoder.tiny()
    mv = S.synthetic_mean_velocity(seed=5)
    out = evaluate(
        pred, gt, audios=audios, smplx_model=smplx_file, pred_expressions=pexp,
        gt_expressions=gexp, fgd_encoder=enc, mean_velocity=mv,
    )  # fmt: skip
    json.dumps(out)  # JSON-ready
    assert out["num_sequences"] == 2 and out["num_frames"] == sum(lengths)
    assert out["skipped"] == {}
    for v in ("evaltools", "cvpr24"):
        r = out["variants"][v]
        assert set(r) == {"fgd", "bc", "l1div", "face_mse", "face_lvd"}
        l1 = L1Diversity()
        for p in pred:
            l1.update(smplx_joints(p, smplx_file, variant=v))
        assert r["l1div"] == pytest.approx(float(l1.compute()), rel=1e-9)
        fp = np.concatenate([fgd_features(p, enc, variant=v) for p in pred])
        fg = np.concatenate(
            [fgd_features(g[: len(p)], enc, variant=v) for p, g in zip(pred, gt, strict=True)]
        )
        # evaluate() batches equal-length sequences: same math, float32 rounding may differ
        assert r["fgd"] == pytest.approx(frechet_distance(fp, fg, variant=v), rel=1e-6)
        assert 0 <= r["bc"] <= 1 and r["face_mse"] > 0 and r["face_lvd"] > 0
    # evaltools zeroes the root orientation for joints, cvpr24 does not
    assert out["variants"]["evaltools"]["l1div"] != out["variants"]["cvpr24"]["l1div"]


def test_evaluate_with_joints_only_reports_what_it_skipped():
    joints = [S.random_walk_joints(200, seed=1)]
    out = evaluate(pred_joints=joints, variants=["evaltools"])
    assert set(out["variants"]["evaltools"]) == {"l1div"}
    assert set(out["skipped"]) == {"fgd", "bc", "face_mse", "face_lvd"}
    with pytest.raises(EvalError, match=r"audios has 2 sequences, expected 1"):
        evaluate(pred_joints=joints, audios=[np.zeros(10), np.zeros(10)])
    with pytest.raises(EvalError, match="needs pred_poses"):
        evaluate()

"""Face MSE / LVD and SRGR parity.

Recording (2026-11-21), inputs generated exactly as in ``_face_inputs`` / ``_srgr_inputs``:
evaltools values from ``MSEFace``, ``LVDFace`` and ``SRGR(threshold=0.1, joints=55)`` of
``emage_evaltools/mertic.py`` (PantoMatrix @ 0bbb03d), one ``compute``/``run`` per sequence on
``(T, C)`` arrays, then ``avg()``. cvpr24 values: the CVPR'24 ``emage_trainer.test`` formulas
(PantoMatrix @ 6ca70b9), ``nn.MSELoss()(rec, tar).item() * n`` and
``nn.L1Loss()(rec[1:] - tar[:-1], tar[1:] - tar[:-1]).item() * n`` summed and divided by the
total frames, and ``SRGR.run`` from that commit's ``utils/metric.py``.
"""

import numpy as np
import pytest

from gesture_eval import SRGR, EvalError, FaceLVD, FaceMSE, face_lvd, face_mse, srgr
from gesture_eval import synthetic as S

REF = {
    "mse_evaltools": 0.00010078878403874114,
    "lvd_evaltools": 0.011079993098974228,
    "mse_cvpr24": 0.00010078877918810274,
    "lvd_cvpr24": 0.008003369077212281,
    "srgr_evaltools": 2.732546897637202,
    "srgr_cvpr24": 1.7279959344762108,
    "srgr_evaltools_nosem": 0.9010389610389611,
}


def _face_inputs():
    rng = np.random.default_rng(31)
    seqs = []
    for t in (50, 40):
        gt = rng.normal(0, 0.05, size=(t, 300)).cumsum(0).astype(np.float32) * 0.1
        pred = (gt + rng.normal(0, 0.01, size=(t, 300))).astype(np.float32)
        seqs.append((pred, gt))
    return seqs


def _srgr_inputs():
    out = []
    for i, t in enumerate((120, 90)):
        tgt = S.random_walk_joints(t, seed=40 + i)
        noise = np.random.default_rng(50 + i).normal(0, 0.04, size=tgt.shape).astype(np.float32)
        out.append((tgt + noise, tgt, np.random.default_rng(60 + i).random(t)))
    return out


@pytest.mark.parametrize("variant", ["evaltools", "cvpr24"])
def test_face_metrics_match_reference(variant):
    mse, lvd = FaceMSE(variant=variant), FaceLVD(variant=variant)
    for pred, gt in _face_inputs():
        mse.update(pred, gt)
        lvd.update(pred.reshape(len(pred), 100, 3), gt.reshape(len(gt), 100, 3))
    assert float(mse.compute()) == pytest.approx(REF[f"mse_{variant}"], rel=1e-6)
    assert float(lvd.compute()) == pytest.approx(REF[f"lvd_{variant}"], rel=1e-6)


def test_face_functional_and_errors():
    pred, gt = _face_inputs()[0]
    assert face_mse(gt, gt) == 0.0 and face_lvd(gt, gt) == 0.0
    # cvpr24 "LVD" is a position error: a constant offset is invisible to evaltools LVD only.
    assert face_lvd(gt + 0.01, gt) == pytest.approx(0.0, abs=1e-7)
    assert face_lvd(gt + 0.01, gt, variant="cvpr24") == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(
        EvalError, match=r"pred_vertices \(50, 300\) and target_vertices \(40, 300\)"
    ):
        face_mse(pred, gt[:40])
    bad = pred.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        face_lvd(bad, gt)


@pytest.mark.parametrize("key", ["evaltools", "cvpr24", "evaltools_nosem"])
def test_srgr_matches_reference(key):
    variant = key.split("_")[0]
    metric = SRGR(variant=variant)
    for pred, tgt, sem in _srgr_inputs():
        metric.update(pred, tgt, None if key.endswith("nosem") else sem)
    assert float(metric.compute()) == pytest.approx(REF[f"srgr_{key}"], rel=1e-6)
    pred, tgt, sem = _srgr_inputs()[0]
    assert srgr(tgt, tgt, np.full(len(tgt), 0.165)) == pytest.approx(1.0)
    with pytest.raises(EvalError, match="semantic must be"):
        srgr(pred, tgt, sem[:10])

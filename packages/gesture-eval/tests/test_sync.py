"""SyncNet layout and Sync-C / Sync-D.

Recording (2026-11-21): ``SyncNetModel.S`` and ``calc_pdist`` from joonson/syncnet_python @
6efbb1c, run from /tmp (``cv2`` stubbed, CPU instead of ``.cuda()``). Its state dict with
learnable tensors from ``synthetic.randomize_state_dict(sd, seed=7)`` (BatchNorm variances
``|x| + 0.5``); inputs ``rng = default_rng(3)``: 24 frames ``uniform(0, 255, (24, 224, 224, 3))``
float32, audio ``(standard_normal(24 * 640) * 3000).astype(int16)``; the body of
``SyncNetInstance.evaluate`` from "Load video" on, on these arrays instead of files
(``python_speech_features.mfcc(audio, 16000)``, batch 20, vshift 15). Key names/shapes in
``data/syncnet_layout.json`` (sorted).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_eval import EvalError
from gesture_eval import synthetic as S
from gesture_eval.sync import SyncNet, sync_scores

DATA = Path(__file__).parent / "data"


def test_syncnet_layout_and_scores_match_reference(tmp_path):
    model = SyncNet()
    layout = json.loads((DATA / "syncnet_layout.json").read_text())["keys_sorted"]
    assert sorted([k, list(v.shape)] for k, v in model.state_dict().items()) == layout
    path = tmp_path / "syncnet_v2.model"
    torch.save(S.randomize_state_dict(model.state_dict(), seed=7), path)
    net = SyncNet.from_syncnet_checkpoint(path)
    rng = np.random.default_rng(3)
    frames = rng.uniform(0, 255, size=(24, 224, 224, 3)).astype(np.float32)
    audio = (rng.standard_normal(24 * 640) * 3000).astype(np.int16)
    res = sync_scores(frames, audio, net)
    assert res.offset == -15
    # Noise floor, measured with the same network in float64 (sync_scores follows the
    # network's dtype): the float32 reference is 4.0e-7 (confidence) and 7e-8 (min distance)
    # relative off the exact scores, ours 1.2e-6 and 7e-8 (same at 1 and 2 threads). The
    # confidence is a difference of two distances, so it carries the most rounding. 5e-6 is
    # ~3x the sum of both sides' floors; a wrong layer or MFCC offset moves these by >1e-2.
    assert res.confidence == pytest.approx(0.5880751609802246, rel=5e-6)
    assert res.min_distance == pytest.approx(4.160467147827148, rel=5e-6)
    exact = sync_scores(frames, audio, SyncNet.from_syncnet_checkpoint(path).double())
    assert exact.offset == -15
    assert exact.confidence == pytest.approx(0.5880751609802246, rel=5e-6)
    with pytest.raises(EvalError, match=r"\(T, 224, 224, 3\)"):
        sync_scores(frames[:, :100], audio, net)
    with pytest.raises(EvalError, match="16 kHz"):
        sync_scores(frames, audio, net, sample_rate=22050)
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(EvalError, match="not the SyncNet layout"):
        SyncNet.from_syncnet_checkpoint(path)

"""`gesture demo` at the tiny size: every output, finite numbers, the metrics.json schema."""

import json
import math

import numpy as np
import pytest

from gesture_apps import main
from gesture_apps.recipes.demo import METHODS, ORACLE, parse_overrides


def test_tiny_demo_end_to_end(tmp_path, capsys):
    """The whole demo at the test size (~3 min on 2 CPU cores: 32 synthetic clips, 400
    tokenizer, 1000 generator and 100 + 5 distillation steps; 3 held-out clips)."""
    out = tmp_path / "demo"
    assert main(["demo", "--size", "tiny", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "baseline_mean_pose" in shown and "demo:" in shown

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [*METHODS, ORACLE]
    for method, values in metrics.items():
        assert set(values) == {"fgd", "bc", "l1div"}, method
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values()), method
    # sanity that holds by construction: GT against itself, a static pose has no diversity
    assert abs(metrics["ground_truth"]["fgd"]) < 1e-2
    assert metrics["baseline_mean_pose"]["l1div"] < 1e-3
    assert metrics["ground_truth"]["l1div"] > 0.0

    # the trained models beat both baselines on the held-out clips. Recorded (torch 2.15 CPU):
    # FGD teacher 0.0103, student 0.0094, other clip 0.0167, mean pose 0.0256, tokenizer
    # floor 0.0039; BC 0.822 / 0.807 vs 0.465 / 0.0 (ground truth 0.467).
    fgd = {m: v["fgd"] for m, v in metrics.items()}
    bc = {m: v["bc"] for m, v in metrics.items()}
    for model in ("teacher", "student_1step"):
        assert fgd[model] < 0.8 * fgd["baseline_other_clip"], (model, fgd)
        assert fgd[model] < 0.5 * fgd["baseline_mean_pose"], (model, fgd)
        assert bc[model] > bc["baseline_other_clip"] + 0.1, (model, bc)
        assert bc[model] > bc["baseline_mean_pose"] + 0.1, (model, bc)
    # the one-step student keeps its teacher's (20 guided steps) FGD: recorded -9%
    assert abs(fgd["student_1step"] - fgd["teacher"]) <= 0.2 * fgd["teacher"], fgd
    # and both move: at least half the ground truth's diversity (recorded 79% / 72%)
    assert metrics["student_1step"]["l1div"] > 0.5 * metrics["ground_truth"]["l1div"]

    npz = sorted((out / "motion").glob("*.npz"))
    assert len(npz) == 3 * len(METHODS)  # three held-out clips
    for path in npz:
        with np.load(path) as f:
            assert f["poses"].ndim == 2 and f["poses"].shape[1] == 165
            assert np.isfinite(f["poses"]).all() and int(f["mocap_frame_rate"]) == 30
    video = out / "side_by_side.mp4"
    assert video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fgd_encoder" / "model.safetensors").is_file()
    assert (out / "runs" / "distill" / "student" / "config.json").is_file()

    # a second run into the same folder is refused in one line
    assert main(["demo", "--size", "tiny", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("gesture: error: ")


def test_demo_runs_on_real_beat2(beat2_root, tmp_path):
    """``--data beat2:PATH`` end to end on the fixture's one take (a smoke run: a few steps of
    everything, the take both trains and scores), so only the plumbing and the lengths count."""
    out = tmp_path / "demo"
    settings = [
        "train_split=test",
        "test_split=test",
        "test_clips=1",
        "tokenizer_steps=3",
        "lsm_steps=3",
        "distill_pairs=8",
        "distill_steps=2",
        "apt_steps=1",
        "teacher_steps=2",
        "fgd_steps=3",
        "render=false",
    ]
    argv = ["demo", "--data", f"beat2:{beat2_root}", "--out", str(out), *settings]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(v) for m in metrics.values() for v in m.values())
    for method in METHODS:  # every method scored on the capture's 1906 frames
        with np.load(out / "motion" / f"2_scott_0_1_1_{method}.npz") as f:
            assert f["poses"].shape == (1906, 165), method


def test_demo_settings_are_checked(capsys):
    assert parse_overrides(["lsm_steps=5", "render=false", "lsm_lr=1"]) == {
        "lsm_steps": 5,
        "render": False,
        "lsm_lr": 1.0,
    }
    for bad in (["nope=1"], ["lsm_steps=1.5"], ["render=3"], ["lsm_steps"]):
        with pytest.raises(ValueError):
            parse_overrides(bad)
    assert main(["demo", "--out", "unused", "lsm_steps=x"]) == 2
    assert main(["demo", "--out", "unused", "--data", "beat3:/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("gesture: error: ") for e in err)

"""`gesture demo` at the tiny size: every output, finite numbers, the metrics.json schema, a
fair other-recording baseline, choices made on the validation split only."""

import json
import math

import numpy as np
import pytest

import gesture_data.render
from gesture_apps import main
from gesture_apps.systems.demo import (
    BASELINES,
    METHODS,
    MODELS,
    ORACLE,
    Clip,
    _other_recordings,
    parse_overrides,
)


def _fgd_win_margin(val_ratio: float) -> float:
    """The largest test FGD ratio (model / baseline) that still counts as the validation
    split's win: half of it must survive onto the test clips. Three clips per split make the
    ratio move between splits (recorded at the tiny size: mean pose 0.23 validation, 0.22 /
    0.27 test); half the win leaves that room while still asserting a clear win."""
    return (1.0 + val_ratio) / 2


def test_tiny_demo_end_to_end(tmp_path, capsys, monkeypatch):
    """The whole demo at the test size (~4 min on 2 CPU cores: 32 synthetic clips, 400
    tokenizer, 1000 generator and 100 + 5 distillation steps; 3 validation and 3 test clips,
    3 other recordings). The teacher samples in 8 steps instead of 20 and the FGD encoder trains
    120 steps instead of 200: a quarter less time (459 -> 323 s measured at one thread)."""
    rendered = []
    render = gesture_data.render.render_motion

    def spy(joints, *args, **kwargs):  # the panels the video draws
        rendered.append([np.asarray(j) for j in joints])
        return render(joints, *args, **kwargs)

    monkeypatch.setattr(gesture_data.render, "render_motion", spy)
    out = tmp_path / "demo"
    fast = ["teacher_steps=8", "fgd_steps=120"]
    assert main(["demo", "--size", "tiny", "--out", str(out), *fast]) == 0
    shown = capsys.readouterr().out
    assert "baseline_mean_pose" in shown and "demo:" in shown
    assert "chosen on the validation split" in shown and "BC is not a ranking" in shown

    report = json.loads((out / "metrics.json").read_text())
    latent_dim = json.loads((out / "fgd_encoder" / "config.json").read_text())["latent_dim"]
    assert set(report) == {"test", "validation", "selection", "fgd_ratio", "notes"}
    assert {"bc", "fgd", "ground_truth_fgd", "baseline_other_clip"} <= set(report["notes"])
    for split in ("test", "validation"):
        metrics = report[split]
        assert list(metrics) == [*METHODS, ORACLE]
        for method, values in metrics.items():
            extra = {"fgd_raw"} if method == "ground_truth" else set()
            assert set(values) == {"fgd", "bc", "l1div", *extra}, method
            assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
        # GT against itself: shown as 0; the computed value is the eps * I (eps 1e-6) that
        # the evaltools convention adds to both covariances, -2 * latent_dim * eps (recorded
        # -2.40e-4 for 120-d latents); 5% of it covers sqrtm's float error
        assert metrics["ground_truth"]["fgd"] == 0.0
        offset = -2 * latent_dim * 1e-6
        raw = metrics["ground_truth"]["fgd_raw"]
        assert abs(raw - offset) < 0.05 * abs(offset), (raw, offset)
        # a static pose has no diversity; real motion does
        assert metrics["baseline_mean_pose"]["l1div"] < 1e-3
        assert metrics["ground_truth"]["l1div"] > 0.0

    # the guidance scale is the validation split's argmin, and the splits do not overlap
    sel = report["selection"]
    assert sel["split"] == "validation"
    sweep = {float(g): v for g, v in sel["teacher_fgd_by_guidance"].items()}
    assert sorted(sweep) == [1.0, 2.0, 3.0] and sweep[sel["guidance"]] == min(sweep.values())
    info = json.loads((out / "demo_info.json").read_text())
    val, test = set(info["validation"]), set(info["held_out"])
    others = set(info["other_recordings"]["validation"]) | set(info["other_recordings"]["test"])
    assert len(val) == len(test) == 3 and not (val & test) and not (others & (val | test))

    # FGD against the fair baselines: wherever the validation split shows a win, the test clips
    # keep at least half of it. At the tiny size that is the mean pose (recorded ratios 0.22
    # validation, 0.28 teacher / 0.32 student test). Another real recording is not beaten
    # there (recorded 1.80 validation, 1.27 / 1.46 test), nor expected to be: the tokenizer's
    # own reconstruction of the ground truth, the practical floor of a generator on its
    # latents, scores above it on the validation split (0.0056 vs 0.0040). No win over it is
    # asserted until the validation split shows one.
    ratios = report["fgd_ratio"]
    for model in MODELS:
        assert ratios["validation"][model]["baseline_mean_pose"] < 1.0, ratios
        for baseline in BASELINES:
            val_ratio = ratios["validation"][model][baseline]
            if val_ratio < 1.0:
                assert ratios["test"][model][baseline] < _fgd_win_margin(val_ratio), ratios
    # no BC assertion between methods: BC cannot tell ground truth from another recording and
    # rewards the decoder's speed ripple (see the notes); it only has to be a valid number
    assert all(0.0 <= m["bc"] <= 1.0 for m in report["test"].values())
    # both models move: at least half the ground truth's diversity
    test_m = report["test"]
    for model in MODELS:
        assert test_m[model]["l1div"] > 0.5 * test_m["ground_truth"]["l1div"], model

    npz = sorted((out / "motion").glob("*.npz"))
    assert len(npz) == 3 * len(METHODS)  # three held-out clips
    for path in npz:
        with np.load(path) as f:
            assert f["poses"].ndim == 2 and f["poses"].shape[1] == 165
            assert np.isfinite(f["poses"]).all() and int(f["mocap_frame_rate"]) == 30
    # the other recording is real motion with its own root path, as long as the ground truth
    # and not looped: no lag at which the sequence repeats itself (a loop of an L-frame clip
    # repeats at lag L; the seam's jump alone is no test, synthetic strokes move faster)
    for path in sorted((out / "motion").glob("*_baseline_other_clip.npz")):
        gt_path = path.with_name(path.name.replace("baseline_other_clip", "ground_truth"))
        with np.load(path) as f, np.load(gt_path) as g:
            poses, trans = f["poses"], f["trans"]
            assert poses.shape == g["poses"].shape and np.ptp(trans, axis=0).max() > 0, path
        T = poses.shape[0]
        assert not any(np.allclose(poses[lag:], poses[: T - lag]) for lag in range(1, T)), path

    # the video draws each method along its own root translation: every panel's pelvis minus
    # that method's saved translation is the same rest offset
    (panels,) = rendered
    clip0 = info["held_out"][0]
    for joints, method in zip(panels, ("ground_truth", "teacher", "student_1step"), strict=True):
        with np.load(out / "motion" / f"{clip0}_{method}.npz") as f:
            offset = joints[:, 0] - f["trans"]
        np.testing.assert_allclose(offset, offset[:1].repeat(len(offset), 0), atol=1e-5)
    video = out / "side_by_side.mp4"
    assert video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fgd_encoder" / "model.safetensors").is_file()
    assert (out / "runs" / "distill" / "student" / "manifest.json").is_file()  # a bundle

    # a second run into the same folder is refused in one line
    assert main(["demo", "--size", "tiny", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("gesture: error: ")


def _clip(name: str, frames: int) -> Clip:
    return Clip(name, np.zeros((frames, 165)), np.zeros((frames, 3)), np.zeros(1), [])


def test_other_recordings_are_long_enough_and_never_looped():
    held = [_clip("a", 300), _clip("b", 250)]
    pool = [_clip("short", 240), _clip("long1", 300), _clip("long2", 400)]
    # only recordings at least as long as each held-out clip, taken in turn
    assert [o.clip_id for o in _other_recordings(held, pool, "train")] == ["long1", "long2"]
    with pytest.raises(ValueError, match="never looped"):
        _other_recordings([_clip("c", 500)], pool, "train")


def test_demo_runs_on_real_beat2(beat2_root, tmp_path):
    """``--data beat2:PATH`` end to end on the fixture's one take (a smoke run: a few steps of
    everything, the take trains, validates and scores), so only the plumbing and the lengths
    count."""
    out = tmp_path / "demo"
    settings = [
        "train_split=test",
        "val_split=test",
        "test_split=test",
        "val_clips=1",
        "test_clips=1",
        "tokenizer_steps=3",
        "lsm_steps=3",
        "distill_pairs=8",
        "distill_steps=2",
        "apt_steps=1",
        "teacher_steps=2",
        "guidance_grid=[1.5,2]",
        "fgd_steps=3",
        "render=false",
    ]
    argv = ["demo", "--data", f"beat2:{beat2_root}", "--out", str(out), *settings]
    assert main(argv) == 0
    report = json.loads((out / "metrics.json").read_text())
    for split in ("test", "validation"):
        assert all(math.isfinite(v) for m in report[split].values() for v in m.values())
    assert report["selection"]["guidance"] in (1.5, 2.0)
    for method in METHODS:  # every method scored on the capture's 1906 frames
        with np.load(out / "motion" / f"2_scott_0_1_1_{method}.npz") as f:
            assert f["poses"].shape == (1906, 165), method


def test_demo_settings_are_checked(capsys):
    assert parse_overrides(["lsm_steps=5", "render=false", "lsm_lr=1"]) == {
        "lsm_steps": 5,
        "render": False,
        "lsm_lr": 1.0,
    }
    assert parse_overrides(["guidance_grid=[1, 2.5]"]) == {"guidance_grid": [1.0, 2.5]}
    assert parse_overrides(["guidance_grid=2"]) == {"guidance_grid": [2.0]}
    bad_items = (["nope=1"], ["lsm_steps=1.5"], ["render=3"], ["lsm_steps"], ["guidance_grid=x"])
    for bad in bad_items:
        with pytest.raises(ValueError):
            parse_overrides(bad)
    assert main(["demo", "--out", "unused", "lsm_steps=x"]) == 2
    assert main(["demo", "--out", "unused", "--data", "beat3:/x"]) == 2
    assert main(["demo", "--out", "unused", "guidance_grid=[]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("gesture: error: ") for e in err)

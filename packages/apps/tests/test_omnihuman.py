"""OmniHuman end to end: a tiny omni-conditions video DiT trained on rendered synthetic video.

One module fixture trains a tiny OmniHuman through ``gesture train omnihuman`` on the shipped
tiny video VAE (``conftest.video_vae``), with the ``omnihuman/tiny`` preset's three stages;
the comparisons generate held-out clips (corpus seed 1: clips the model never saw) with the
same starting noise for both arms of every comparison.

Not asserted (measured after 1500 steps, see the issue notes): audio-driven motion following
its own speech (energy-onset lead correlation -0.06 own vs -0.05 another clip's, ground truth
0.33) and smoother segment joins with motion frames (join spike 6.50 vs 6.53): the VAE blurs
raised arms towards the rest pose, so the latents carry little of the gesture motion either
condition would drive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gesture_apps.cli import main
from gesture_apps.systems.omnihuman.pipeline import OmniHumanPipeline, Request
from gesture_data.video import synthetic_video_corpus

STEPS = 1000  # optimizer steps of the test run (the tiny preset's stages: 50 / 50 / 900)
HELDOUT = 6  # held-out clips per comparison


@pytest.fixture(scope="module")
def run(tmp_path_factory, video_vae) -> Path:
    out = tmp_path_factory.mktemp("omnihuman") / "run"
    argv = [
        "train",
        "omnihuman",
        "--preset",
        "omnihuman/tiny",
        "--no-progress",
        "--out",
        str(out),
        "--vae",
        str(video_vae),
        f"train.max_steps={STEPS}",
        "train.checkpoint_every=0",
    ]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def pipe(run) -> OmniHumanPipeline:
    return OmniHumanPipeline.from_pretrained(run)


@pytest.fixture(scope="module")
def heldout(pipe):
    return synthetic_video_corpus(HELDOUT, 6.0, size=pipe.size, fps=pipe.fps, seed=1)


def _request(c, audio=None, **kw) -> Request:
    return Request(
        reference=c.reference,
        audio=c.audio if audio is None else audio,
        keypoints=c.keypoints,
        confidence=c.confidence,
        prompt=c.caption,
        **kw,
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_pose_driven_generation_matches_the_ground_truth_better_than_reference_only(pipe, heldout):
    reqs = [_request(c) for c in heldout]
    pose = pipe.generate(reqs, mode="pose_only", seed=3)
    ref = pipe.generate(reqs, mode="reference", seed=3)
    p_pose = [_psnr(v, c.frames[: len(v)]) for v, c in zip(pose, heldout, strict=True)]
    p_ref = [_psnr(v, c.frames[: len(v)]) for v, c in zip(ref, heldout, strict=True)]
    gain = np.array(p_pose) - np.array(p_ref)
    print(f"PSNR pose-driven {np.mean(p_pose):.2f} dB, reference-only {np.mean(p_ref):.2f} dB")
    # same noise, same model, pose channels on or off: measured gain 0.49 dB on average over
    # the 6 held-out clips (pose 23.95 dB, reference-only 23.46; 0.68 dB after 1500 steps);
    # asserted > 0.3 dB, and no clip worse by more than 0.1 dB
    assert gain.mean() > 0.3 and gain.min() > -0.1, (p_pose, p_ref)


def test_the_stage_manager_applies_each_stages_keep_ratios():
    """The paper preset's schedule: keep rates over 200 steps x 64 rows at the start of each
    stage within 5 binomial standard errors of the stage's ratio (a false alarm has
    probability ~6e-7 per check); motion frames are kept only where the data has them."""
    from gesture_apps.runtime.config import load_config
    from gesture_apps.systems.omnihuman.config import OmniHumanRecipeConfig

    cfg = load_config(OmniHumanRecipeConfig, "omnihuman/omnihuman")
    schedule = cfg.schedule()
    B, n = 64, 200
    has_motion = torch.arange(B) % 2 == 0  # half the segments start a clip
    for k, stage in enumerate(cfg.stages):
        start = sum(s.steps for s in cfg.stages[:k])
        assert schedule.stage_at(start)[0] == k
        assert k == 0 or schedule.stage_at(start - 1)[0] == k - 1
        kept = dict.fromkeys(stage.keep, 0)
        for step in range(start, start + n):
            use = schedule.sample(step, B)
            use["motion"] = use["motion"] & has_motion
            for c in kept:
                kept[c] += int(use[c].sum())
        for c, p in stage.keep.items():
            rows = B * n // 2 if c == "motion" else B * n
            rate, se = kept[c] / rows, max((p * (1 - p) / rows) ** 0.5, 1e-9)
            assert abs(rate - p) <= 5 * se, (stage.name, c, rate, p)
    # the seed's table: stronger condition, lower ratio
    last = cfg.stages[-1].keep
    assert last["pose"] < last["audio"] < last["text"] == last["reference"] == 1.0
    assert [s.keep["audio"] for s in cfg.stages] == [0.0, 0.5, 0.25]


def _stage(name: str, audio: float, pose: float) -> str:
    keep = f"text: 1.0, reference: 1.0, audio: {audio}, pose: {pose}, motion: 0.5"
    return f"{{name: {name}, steps: 3, keep: {{{keep}}}}}"


def test_a_run_resumed_in_stage_two_continues_exactly(tmp_path, video_vae):
    """Stages of 3 steps; 7 steps straight vs 4 steps (inside stage 2), then resumed to 7:
    identical weights (same keep masks, data order and noise)."""
    from safetensors.torch import load_file

    base = [
        "train", "omnihuman", "--preset", "omnihuman/tiny", "--no-progress",
        "--vae", str(video_vae), "data.num_clips=2", "data.seconds=2.0", "data.stride=4",
        "train.batch_size=4", "train.checkpoint_every=0", "model.text_tokens=8",
        f"stages=[{_stage('a', 0.0, 0.0)}, {_stage('b', 0.5, 0.0)}, {_stage('c', 0.5, 0.5)}]",
    ]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a"), "train.max_steps=7"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "train.max_steps=4"]) == 0
    resume = ["train", "omnihuman", "--no-progress", "--resume", str(tmp_path / "b")]
    assert main([*resume, "train.max_steps=7"]) == 0
    wa = load_file(str(tmp_path / "a/omnihuman/model/model.safetensors"))
    wb = load_file(str(tmp_path / "b/omnihuman/model/model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    history = json.loads((tmp_path / "b/checkpoints/step_0000007/trainer_state.json").read_text())
    assert history["step"] == 7


def test_generate_cli_writes_an_mp4_with_the_speech_and_bad_input_exits_2(
    run, pipe, heldout, tmp_path, capsys
):
    from PIL import Image

    from gesture_data.video import read_video

    c = heldout[0]
    Image.fromarray(c.reference).save(tmp_path / "ref.png")
    sf.write(tmp_path / "speech.wav", c.audio[: 2 * 16000], 16000)
    np.savez(tmp_path / "pose.npz", keypoints=c.keypoints[:25], confidence=c.confidence[:25])
    base = ["generate", "--checkpoint", str(run), "--reference", str(tmp_path / "ref.png")]
    out = tmp_path / "video.mp4"
    argv = [*base, "--audio", str(tmp_path / "speech.wav"), "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    frames, fps, audio, sr = read_video(out)
    assert frames.shape == (25, pipe.size, pipe.size, 3) and fps == pytest.approx(pipe.fps)
    assert audio is not None and sr == 16000 and abs(audio.size - 2 * 16000) <= 2048
    argv = [*argv[:-2], "--pose", str(tmp_path / "pose.npz"), "--out", str(tmp_path / "p.mp4")]
    assert main(argv) == 0 and (tmp_path / "p.mp4").is_file()
    capsys.readouterr()

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    np.savez(tmp_path / "long.npz", keypoints=np.repeat(c.keypoints[:1], 40, 0))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    bad = {
        "expected a 32x32": ["--reference", str(tmp_path / "small.png")],
        "lengths must match": ["--pose", str(tmp_path / "long.npz")],
        "cannot read npz": ["--pose", str(tmp_path / "broken.npz")],
        "--mode: expected one of": ["--mode", "dance"],
    }
    for message, change in bad.items():
        args = [*base, "--audio", str(tmp_path / "speech.wav"), "--out", str(tmp_path / "x.mp4")]
        for i in range(0, len(change), 2):
            if change[i] in args:
                args[args.index(change[i]) + 1] = change[i + 1]
            else:
                args += change[i : i + 2]
        assert main(args) == 2, message
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (message, err)
        assert not (tmp_path / "x.mp4").exists()
    argv = ["generate", "--checkpoint", str(run), "--audio", str(tmp_path / "speech.wav")]
    assert main([*argv, "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--reference: required" in capsys.readouterr().err


@pytest.fixture(scope="module")
def student(run, tmp_path_factory) -> Path:
    """Endpoint distillation of the pose mode (guided 8-step teacher endpoints of 96 training
    segments, 150 steps), then 10 Seaweed-APT steps with the video settings."""
    out = tmp_path_factory.mktemp("omnihuman_distill") / "d"
    argv = ["distill", "--preset", "distill/omnihuman", "--teacher", str(run), "--no-progress"]
    argv += ["--out", str(out), "teacher.task=pose", "data.num_clips=4", "data.seconds=4.0"]
    argv += ["consistency.num_pairs=96", "consistency.teacher_steps=8", "consistency.pair_batch=32"]
    argv += ["train.max_steps=150", "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=0"]
    argv += ["train.checkpoint_every=0", "train.ema_decay=null", "eval_samples=16"]
    argv += ["apt.steps=10", "apt.batch_size=8", "apt.lr_g=1e-5", "apt.lr_d=1e-4"]
    argv += ["apt.checkpoint_every=0", "apt.log_every=5"]
    assert main(argv) == 0
    return out / "student"


def test_one_step_student_against_the_teacher(pipe, student, heldout):
    """The one-step student (pose mode) on held-out clips: PSNR of its frames to the teacher's
    own guided multi-step output, next to the teacher's plain 1-step Euler (the baseline the
    distillation must beat), and the pose margin over reference-only generation."""
    spipe = OmniHumanPipeline.from_pretrained(student)
    assert spipe.spec["sample"]["steps"] == 1 and spipe.spec["distill"]["mode"] == "pose"
    reqs = [_request(c) for c in heldout]
    teacher = pipe.generate(reqs, mode="pose", seed=11)
    one = spipe.generate(reqs, mode="pose", seed=11)
    euler1 = pipe.generate(reqs, mode="pose", seed=11, steps=1)
    ref_only = spipe.generate(reqs, mode="reference", seed=11)
    p = {
        "student": np.mean([_psnr(a, b) for a, b in zip(one, teacher, strict=True)]),
        "euler1": np.mean([_psnr(a, b) for a, b in zip(euler1, teacher, strict=True)]),
    }
    truth = {
        name: np.mean([_psnr(v, c.frames[: len(v)]) for v, c in zip(vs, heldout, strict=True)])
        for name, vs in (("teacher", teacher), ("student", one), ("student_ref", ref_only))
    }
    print(f"PSNR to the teacher: {p}; to the ground truth: {truth}")
    # measured: student 44.9 dB to the teacher's 8-step output, the teacher's own 1-step Euler
    # 39.5 dB; to the ground truth: teacher 23.99, student 23.98, student reference-only 23.47
    assert p["student"] > p["euler1"] + 1.0, p
    assert truth["student"] > truth["student_ref"] + 0.3, truth

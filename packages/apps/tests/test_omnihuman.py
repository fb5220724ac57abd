"""OmniHuman end to end: a tiny omni-conditions video DiT trained on rendered synthetic video.

One module fixture trains a tiny OmniHuman through ``gesture train omnihuman`` on the session's
tiny video VAE (``conftest.video_vae``), with the ``omnihuman/tiny`` preset's three stages;
the must-show comparisons generate held-out clips (corpus seed 1: clips the model never saw)
with the same starting noise for both arms of every comparison.
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

STEPS = 900  # optimizer steps of the test run (stages of 150 / 150 / 600)
HELDOUT = 4  # held-out clips per comparison


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
    return synthetic_video_corpus(HELDOUT, 3.0, size=pipe.size, fps=pipe.fps, seed=1)


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


def test_pose_driven_generation_matches_the_ground_truth_better_than_reference_only(
    pipe, heldout
):
    reqs = [_request(c) for c in heldout]
    pose = pipe.generate(reqs, mode="pose_only", seed=3)
    ref = pipe.generate(reqs, mode="reference", seed=3)
    p_pose = [_psnr(v, c.frames[: len(v)]) for v, c in zip(pose, heldout, strict=True)]
    p_ref = [_psnr(v, c.frames[: len(v)]) for v, c in zip(ref, heldout, strict=True)]
    gain = np.array(p_pose) - np.array(p_ref)
    print(f"PSNR pose-driven {np.mean(p_pose):.2f} dB, reference-only {np.mean(p_ref):.2f} dB")
    assert gain.min() > 0.0 and gain.mean() > 0.5, (p_pose, p_ref)


def _motion_energy(video: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` -> ``(T - 1,)`` mean absolute frame difference."""
    v = video.astype(np.float32)
    return np.abs(np.diff(v, axis=0)).mean(axis=(1, 2, 3))


def _onsets(audio: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Onset strength at the video's frame changes ``(frames - 1,)``: librosa's envelope
    (gesture_data's port) summed over each frame interval."""
    from gesture_data.features.audio import onset_strength

    hop = 160
    env = onset_strength(audio, 16000, hop=hop)
    edges = np.round(np.arange(frames) / fps * 16000 / hop).astype(int)
    return np.array([env[a:b].sum() for a, b in zip(edges[:-1], edges[1:], strict=True)])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_audio_driven_generation_moves_with_its_own_speech(pipe, heldout):
    """Each video is generated from its own speech; its motion energy must follow that
    speech's onsets more closely than another clip's speech (the baseline: a model that
    ignores the audio scores the same against both)."""
    videos = pipe.generate([_request(c) for c in heldout], mode="audio", seed=5)
    own, other = [], []
    for i, (v, c) in enumerate(zip(videos, heldout, strict=True)):
        e = _motion_energy(v)
        other_clip = heldout[(i + 1) % len(heldout)]
        own.append(_corr(e, _onsets(c.audio, pipe.fps, len(v))))
        other.append(_corr(e, _onsets(other_clip.audio, pipe.fps, len(v))))
    truth = [_corr(_motion_energy(c.frames), _onsets(c.audio, pipe.fps, len(c.frames))) for c in heldout]
    print(f"energy-onset r: own {np.mean(own):.3f}, other {np.mean(other):.3f}, truth {np.mean(truth):.3f}")
    assert np.mean(own) - np.mean(other) > 0.1, (own, other)


def test_motion_frames_smooth_the_segment_joins(pipe, heldout):
    """Two-segment videos: the frame difference at the join, over the median difference inside
    the segments, is lower when the second segment continues from the first one's last five
    frames than when it is generated independently (same noise, same conditions)."""
    L = pipe.segment_frames
    reqs = [_request(c, frames=2 * L) for c in heldout]

    def spike(videos):
        out = []
        for v in videos:
            e = _motion_energy(v)
            inside = np.median(np.concatenate([e[: L - 1], e[L:]]))
            out.append(e[L - 1] / max(inside, 1e-6))
        return np.array(out)

    with_mf = spike(pipe.generate(reqs, mode="audio", seed=7, motion_frames=True))
    without = spike(pipe.generate(reqs, mode="audio", seed=7, motion_frames=False))
    print(f"join spike: motion frames {with_mf.mean():.2f}, independent {without.mean():.2f}")
    assert with_mf.mean() < 0.7 * without.mean(), (with_mf, without)

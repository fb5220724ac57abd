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
def heldout():
    return synthetic_video_corpus(HELDOUT, 3.0, size=64, fps=12.5, seed=1)


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

"""Utterance-to-motion (T2M-GPT) end to end on Korean synthetic utterances.

One small HumanML3D-layout dataset of the synthetic corpus's Korean clips (gestures tied to
the words they are spoken with: synthetic.SEMANTIC_WORDS); the tiny VQ-VAE, the tiny GPT and
the tiny evaluator are trained once per session on its train split.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gesture_apps.cli import main

NUM_CLIPS = 120  # 4 s each, 80 frames at 20 fps: 72 train, 24 val, 24 test
SECONDS = 4.0
EVAL_BATCH = 24  # the val and test splits are one R-precision batch each


def _build(root, num_clips: int, seconds: float):
    """The synthetic corpus's Korean clips as a HumanML3D folder: SMPL-X motion -> approximate
    joints (first 22) at 20 fps -> 263-d features; the transcript is the caption."""
    from gesture_data.datasets import humanml3d
    from gesture_data.datasets.synthetic import make_clip
    from gesture_data.skeleton import smplx_joints_approx

    motions, captions, ids = {}, {}, []
    for i in range(num_clips):
        clip = make_clip(i, seconds, 0, "ko")
        joints = smplx_joints_approx(clip.poses, clip.trans)[:, :22].numpy()
        keep = np.round(np.arange(0, len(joints), clip.fps / 20.0)).astype(int)
        cid = f"ko_{i:04d}"
        motions[cid] = joints[keep[keep < len(joints)]]
        captions[cid] = [humanml3d.make_caption(" ".join(w for _, _, w in clip.words), "ko")]
        ids.append(cid)
    splits = {"test": ids[0::5], "val": ids[1::5]}
    splits["train"] = [c for c in ids if c not in splits["test"] and c not in splits["val"]]
    return humanml3d.write_dataset(root, motions, captions, splits)


@pytest.fixture(scope="session")
def t2m_data(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("ktubeum_synth"), NUM_CLIPS, SECONDS)


@pytest.fixture(scope="session")
def t2m_tokenizer(t2m_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2m_tok")
    argv = ["train", "tokenizer", "--preset", "tokenizer/t2m_tiny", "--out", str(out)]
    assert main([*argv, f"data.root={t2m_data}", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def t2m_run(t2m_data, t2m_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2m_gpt")
    argv = ["train", "t2m-gpt", "--preset", "t2m_gpt/tiny", "--tokenizer", str(t2m_tokenizer)]
    assert main([*argv, "--data", str(t2m_data), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def t2m_evaluator(t2m_data, tmp_path_factory):
    from gesture_apps.systems.t2m_gpt.evaluator import load_evaluator

    out = tmp_path_factory.mktemp("t2m_eval")
    argv = ["train", "t2m-evaluator", "--preset", "t2m_evaluator/tiny", "--data", str(t2m_data)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    return load_evaluator(out)


def _scores(run, data, evaluator, split: str, shift: int) -> dict:
    """evaluate_t2m of the trained bundle; ``shift > 0`` gives every clip the caption of the
    clip ``shift`` places after it in the batch (a fixed derangement)."""
    from gesture_apps.systems.t2m_gpt.evaluate import evaluate_t2m
    from gesture_apps.systems.t2m_gpt.pipeline import T2MPipeline

    pipe = T2MPipeline.from_pretrained(run)

    def generate(captions, lengths):
        del lengths  # T2M-GPT stops at End
        return pipe(captions[shift:] + captions[:shift], seed=0)

    return evaluate_t2m(generate, data, evaluator, split=split, batch_size=EVAL_BATCH)


def test_t2m_gpt_follows_the_utterance(t2m_run, t2m_data, t2m_evaluator):
    """The must-show: generated motion matches its own utterance better than the same model
    given another utterance's text."""
    own = _scores(t2m_run, t2m_data, t2m_evaluator, "test", 0)
    other = _scores(t2m_run, t2m_data, t2m_evaluator, "test", 1)
    print(own, other)
    assert own["r_precision_top3"] > other["r_precision_top3"]
    assert own["fid"] < other["fid"]

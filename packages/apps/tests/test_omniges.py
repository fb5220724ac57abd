"""Omniges end to end: a tiny model trained on the synthetic corpus, all six tasks.

One module fixture trains the frozen codecs (a tiny gesture tokenizer through the CLI, a tiny
audio codec and text VAE through their training functions) and then a tiny Omniges through
``gesture train omniges``; every test reads that run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gesture_apps.cli import main
from gesture_apps.errors import GenerationError
from gesture_apps.systems.omniges.config import TASKS
from gesture_apps.systems.omniges.evaluate import eval_windows, mismatch
from gesture_apps.systems.omniges.pipeline import OmnigesPipeline
from gesture_data.datasets.synthetic import make_corpus, sentences
from gesture_data.motion import write_beat2_npz

OMNIGES_STEPS = 30


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from gesture_apps.systems.omniges.audio_train import train_audio_codec
    from gesture_apps.systems.omniges.text_vae import TextVAE, TextVAETraining, train_text_vae

    root = tmp_path_factory.mktemp("omniges")
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    assert main([*argv, "--out", str(root / "tok")]) == 0
    clips = make_corpus(4, 6.0, 0)
    codec = train_audio_codec(
        [c.audio for c in clips], steps=60, batch_size=4, segment_seconds=0.32, lr=5e-3
    )
    codec.save_pretrained(root / "codec")
    text = train_text_vae(
        sentences(800, seed=0),
        model=TextVAE.tiny(),
        config=TextVAETraining(steps=200, batch_size=64, lr=3e-3),
    )
    text.save_pretrained(root / "text")
    out = root / "run"
    argv = [
        "train",
        "omniges",
        "--preset",
        "omniges/tiny",
        "--no-progress",
        "--out",
        str(out),
        "--tokenizer",
        str(root / "tok"),
        "--audio-codec",
        str(root / "codec"),
        "--text-vae",
        str(root / "text"),
        f"train.max_steps={OMNIGES_STEPS}",
        "train.checkpoint_every=0",
    ]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def pipe(run) -> OmnigesPipeline:
    return OmnigesPipeline.from_pretrained(run)


def _conditions(w) -> dict[str, dict]:
    return {"t": {"prompt": w.text}, "a": {"audio": w.audio}, "g": {"gesture": w.motion}}


def test_bundle_round_trip_gives_identical_outputs_for_every_task(run, pipe, tmp_path):
    w = eval_windows(make_corpus(1, 2.0, seed=3), pipe.pose_length)[0]
    pipe.save_pretrained(tmp_path / "copy", ema_mmdit=pipe.mmdit)
    again = OmnigesPipeline.from_pretrained(tmp_path / "copy")
    for task in TASKS:
        a = pipe(task, **_conditions(w)[task[0]], steps=3, seed=5)
        b = again(task, **_conditions(w)[task[0]], steps=3, seed=5)
        if a.motion is not None:
            assert np.array_equal(a.motion.poses, b.motion.poses), task
            assert a.motion.num_frames == w.motion.num_frames
        elif a.audio is not None:
            assert np.array_equal(a.audio, b.audio), task
            assert a.audio.size == w.audio.size
        else:
            assert isinstance(a.text, str) and a.text == b.text, task


def test_long_inputs_are_generated_window_by_window(pipe):
    clip = make_corpus(1, 3.0, seed=4)[0]
    out = pipe("a2g", audio=clip.audio, steps=2)
    assert out.motion.num_frames == round(clip.audio.size / 16000 * 30)
    out = pipe("t2g", prompt="i think you never", seconds=2.5, steps=2)
    assert out.motion.num_frames == 75


def test_pipeline_refuses_bad_requests(pipe):
    with pytest.raises(GenerationError, match="task"):
        pipe("x2y", prompt="hi")
    with pytest.raises(GenerationError, match="a2g: needs audio="):
        pipe("a2g", prompt="hello")
    with pytest.raises(GenerationError, match="only the audio condition"):
        pipe("a2g", audio=np.zeros(16000, np.float32), prompt="hello")
    with pytest.raises(GenerationError, match="finite"):
        pipe("a2t", audio=np.full(16000, np.nan, np.float32))


def test_cli_generates_every_task_and_refuses_bad_input(run, tmp_path, capsys):
    clip = make_corpus(1, 2.0, seed=3)[0]
    wav, npz = tmp_path / "x.wav", tmp_path / "g.npz"
    sf.write(wav, clip.audio, 16000)
    from gesture_data.motion import Motion

    write_beat2_npz(npz, Motion(clip.poses, clip.trans, clip.expressions))
    cond = {"t": ["--prompt", "i think"], "a": ["--audio", str(wav)], "g": ["--gesture", str(npz)]}
    suffix = {"g": ".npz", "a": ".wav", "t": ".txt"}
    for task in TASKS:
        out = tmp_path / f"{task}{suffix[task[2]]}"
        argv = ["generate", "--checkpoint", str(run), "--task", task, *cond[task[0]]]
        assert main([*argv, "--steps", "2", "--out", str(out)]) == 0, task
        assert out.is_file() and out.stat().st_size > 0
    assert (tmp_path / "a2t.txt").read_text().endswith("\n")
    capsys.readouterr()
    bad = [
        (["--task", "a2g", "--prompt", "hi"], "--audio"),
        (["--task", "a2g", "--audio", str(wav), "--prompt", "hi"], "--prompt"),
        (["--task", "zzz", "--audio", str(wav)], "--task"),
        (["--task", "a2t", "--audio", str(wav), "--out", str(tmp_path / "o.npz")], "--out"),
        (
            ["--task", "g2t", "--gesture", str(wav), "--out", str(tmp_path / "bad" / "o.txt")],
            "--gesture",
        ),
        (["--task", "a2g", "--audio", str(npz)], str(npz)),
    ]
    for extra, expect in bad:
        argv = ["generate", "--checkpoint", str(run), *extra]
        if "--out" not in extra:
            argv += ["--out", str(tmp_path / "bad" / "o.npz")]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], (extra, err)
    assert not (tmp_path / "bad").exists()


def test_eval_cli_writes_json_for_every_task(run, tmp_path, capsys):
    from gesture_eval import FGDEncoder

    FGDEncoder.tiny().save_pretrained(tmp_path / "encoder")
    out = tmp_path / "m.json"
    argv = ["eval", "omniges", "--checkpoint", str(run), "--clips", "2", "--steps", "2"]
    argv += ["--fgd-encoder", str(tmp_path / "encoder")]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == set(TASKS)
    assert {"bc", "l1div", "mpjpe", "fgd"} <= set(result["tasks"]["a2g"])
    assert result["tasks"]["t2g"]["fgd"] >= 0
    assert {"bleu", "rouge_l", "embedding_similarity"} <= set(result["tasks"]["g2t"])
    assert -1.0 <= result["tasks"]["g2t"]["embedding_similarity"] <= 1.0
    assert {"lsd", "mcd", "beat_alignment"} <= set(result["tasks"]["t2a"])
    assert main(["eval", "omniges", "--checkpoint", str(run), "--tasks", "a2q"]) == 2


def test_mismatched_conditions_come_from_another_clip():
    class W:
        def __init__(self, clip):
            self.clip = clip

    ws = [W(0), W(0), W(1), W(1), W(2)]
    pick = mismatch(ws)
    assert all(ws[j].clip != ws[i].clip for i, j in enumerate(pick))
    with pytest.raises(ValueError):
        mismatch([W(0), W(0)])


def test_the_trained_stream_statistics_travel_with_the_bundle(run, pipe):
    streams = json.loads((run / "omniges" / "streams" / "streams.json").read_text())
    stats = streams["geometry"]["stats"]
    assert set(stats) == {"gesture", "text", "audio"}
    assert all(s > 0 for _, s in stats.values())
    assert torch.isfinite(torch.tensor([m for m, _ in stats.values()])).all()

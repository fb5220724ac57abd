"""`gesture distill --teacher <train lsm run>`: the one-step student is an lsm export that
`gesture generate` runs in one step."""

import json

import numpy as np
import soundfile as sf

from gesture_apps import main
from gesture_apps.systems.gesturelsm.export import load_lsm


def test_distill_a_tiny_lsm_run_and_generate_with_the_student(tmp_path, capsys):
    cache = tmp_path / "cache"
    tok = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    assert (
        main([*tok, "--out", str(tmp_path / "tok"), "train.max_steps=2", f"data.cache_dir={cache}"])
        == 0
    )
    lsm = [
        "train",
        "lsm",
        "--preset",
        "gesturelsm/tiny",
        "--tokenizer",
        str(tmp_path / "tok"),
        "--no-progress",
    ]
    assert (
        main([*lsm, "--out", str(tmp_path / "lsm"), "train.max_steps=4", f"data.cache_dir={cache}"])
        == 0
    )
    out = tmp_path / "distill"
    argv = [
        "distill",
        "--teacher",
        str(tmp_path / "lsm"),
        "--out",
        str(out),
        "--no-progress",
        "data.num_clips=2",
        "data.seconds=4.0",
        "data.stride=8",
        f"data.cache_dir={cache}",
        "consistency.num_pairs=32",
        "consistency.teacher_steps=4",
        "train.max_steps=4",
        "train.batch_size=8",
        "apt.steps=2",
        "apt.batch_size=4",
        "eval_samples=16",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    bundle = load_lsm(out / "student")
    assert bundle.spec["sample"] == {"steps": 1, "guidance": 1.0}
    assert set(json.loads((out / "metrics.json").read_text())["energy_distance"]) >= {
        "student_stage1",
        "student_apt",
    }
    wav = tmp_path / "speech.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(32000) / 20)).astype(np.float32), 16000)
    npz = tmp_path / "motion.npz"
    assert (
        main(
            [
                "generate",
                "--audio",
                str(wav),
                "--checkpoint",
                str(out / "student"),
                "--out",
                str(npz),
            ]
        )
        == 0
    )
    assert "60 frames" in capsys.readouterr().out
    poses = np.load(npz)["poses"]
    assert poses.shape == (60, 165) and np.isfinite(poses).all()

"""`gesture data ktubeum synth|build|preview`: the synthetic corpus through the CLI, a build
killed mid-way and resumed, preview videos, one-line errors."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gesture_apps.cli import main

SECONDS = 2.0


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ktubeum_raw")
    assert main(["data", "ktubeum", "synth", "--out", str(root), "--clips", "3",
                 "--seconds", str(SECONDS), "--seed", "5"]) == 0  # fmt: skip
    return root


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory):
    """An uninterrupted build."""
    out = tmp_path_factory.mktemp("ktubeum_ref")
    assert main(["data", "ktubeum", "build", "--json", str(raw / "json"), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    return out


def _files(root):
    return {
        p.relative_to(root): p
        for p in root.rglob("*")
        if p.is_file() and p.suffix != ".npz"  # npz zips carry timestamps
    }


@pytest.fixture(scope="module", autouse=True)
def blocked_build(raw, tmp_path_factory):
    """``gesture data ktubeum build`` in its own process, stopped for good after its first
    clip: the second clip's first frame is a named pipe, so the build blocks there on any
    machine. Autouse, so it starts with the module's first test and its interpreter start
    overlaps the other tests (the resume test itself comes last).
    Motion only (no transcripts): loading the Korean morpheme analyser would double the
    child's start-up, and captions are not what resuming is about."""
    ids = sorted(p.name for p in (raw / "json").iterdir())
    work = tmp_path_factory.mktemp("ktubeum_killed")
    shutil.copytree(raw / "json", work / "raw" / "json")
    blocker = work / "raw" / "json" / ids[1] / "000000.json"
    blocker.unlink()
    os.mkfifo(blocker)
    out = work / "out"
    cmd = [sys.executable, "-m", "gesture_apps.cli", "data", "ktubeum", "build",
           "--json", str(work / "raw" / "json"), "--out", str(out), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield proc, work / "raw", out, ids, blocker
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def test_build_prints_bad_frames(raw, tmp_path, capsys):
    src = tmp_path / "json"
    cid = sorted(p.name for p in (raw / "json").iterdir())[0]
    shutil.copytree(raw / "json" / cid, src / cid)
    (src / cid / "000007.json").write_text('{"smplx_root_pose": [[0, 0')
    capsys.readouterr()
    assert main(["data", "ktubeum", "build", "--json", str(src), "--out", str(tmp_path / "o"),
                 "--texts", str(raw / "texts"), "--no-progress"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert any("000007.json: corrupt or truncated json" in ln for ln in lines), lines
    assert lines[-1].endswith("(1 built, 0 up to date, 0 skipped; 1 bad frames dropped)")


def test_preview_writes_playable_mp4(reference, tmp_path, capsys):
    from gesture_data.video import read_video

    cid = (reference / "all.txt").read_text().split()[0]
    assert main(["data", "ktubeum", "preview", "--data", str(reference), "--out",
                 str(tmp_path), "--ids", cid, "--size", "128"]) == 0  # fmt: skip
    frames, fps, *_ = read_video(tmp_path / f"{cid}.mp4")
    n = np.load(reference / "new_joints" / f"{cid}.npy").shape[0]
    assert frames.shape == (n, 128, 128, 3) and fps == 20
    assert (frames[n // 2].mean(-1) < 200).sum() > 50  # a figure is drawn


def test_preview_mesh_with_a_body_model(reference, tmp_path, capsys):
    from gesture_data.datasets.smplx_model import write_synthetic_smplx_model
    from gesture_data.video import read_video

    data = tmp_path / "data"
    shutil.copytree(reference, data)
    cid = (data / "all.txt").read_text().split()[0]
    z = dict(np.load(data / "npz" / f"{cid}.npz"))
    z["poses"] = z["poses"][:4]  # a few frames: the stand-in model's faces are large
    np.savez(data / "npz" / f"{cid}.npz", **z)
    model = write_synthetic_smplx_model(tmp_path / "bm")
    assert main(["data", "ktubeum", "preview", "--data", str(data), "--out", str(tmp_path / "v"),
                 "--ids", cid, "--smplx-model", str(model), "--size", "96"]) == 0  # fmt: skip
    frames, fps, *_ = read_video(tmp_path / "v" / f"{cid}.mp4")
    assert frames.shape == (4, 96, 96, 3) and fps == 30  # the npz's rate, not 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "--json", "{tmp}/nowhere", "--out", "{tmp}/o"], "--json"),
        (["build", "--json", "{tmp}", "--out", "{tmp}/o"], "no clip folders"),
        (
            ["build", "--json", "{raw}/json", "--out", "{tmp}/o", "--smplx-model", "{tmp}/m"],
            "--smplx-model",
        ),
        (["preview", "--data", "{tmp}/nowhere", "--out", "{tmp}/v"], "--data"),
        (["preview", "--data", "{tmp}", "--out", "{tmp}/v"], "all.txt"),
        (["synth", "--out", "{tmp}/s", "--clips", "0"], "--clips"),
    ],
)
def test_bad_input_is_one_line_exit_2(raw, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, raw=raw) for a in argv]
    capsys.readouterr()
    assert main(["data", "ktubeum", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gesture: error:") and "\n" not in err and message in err, err


def test_build_resumes_after_kill(blocked_build, raw, capsys, tmp_path):
    proc, src, out, ids, blocker = blocked_build
    # the same inputs built in one go, here while the child starts
    shutil.copytree(raw / "json", tmp_path / "in" / "json")
    reference = tmp_path / "uninterrupted"
    assert main(["data", "ktubeum", "build", "--json", str(tmp_path / "in" / "json"), "--out",
                 str(reference), "--no-progress"]) == 0  # fmt: skip
    assert not (reference / "texts").exists()
    first = out / ".build" / f"{ids[0]}.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
    assert first.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "new_joint_vecs" / f"{ids[0]}.npy").is_file()
    assert not (out / "new_joint_vecs" / f"{ids[1]}.npy").exists()
    assert not (out / "Mean.npy").exists() and not (out / "all.txt").exists()
    blocker.unlink()
    shutil.copy(raw / "json" / ids[1] / "000000.json", blocker)  # the frame arrives
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["data", "ktubeum", "build", "--json", str(src / "json"), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(2 built, 1 up to date, 0 skipped; 0 bad frames dropped)" in summary, summary
    # the finished clip was not recomputed: its files were not rewritten
    assert {p: p.stat().st_mtime_ns for p in done} == done
    a, b = _files(out), _files(reference)
    assert sorted(a) == sorted(b)
    for rel in a:
        assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    for cid in ids:
        za, zb = np.load(out / "npz" / f"{cid}.npz"), np.load(reference / "npz" / f"{cid}.npz")
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k])

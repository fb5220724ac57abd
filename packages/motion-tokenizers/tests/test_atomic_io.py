"""The atomic writers: one behaviour contract for every library that carries them.

``motion_tokenizers.io`` (every checkpoint and export of the apps) and ``gesture_eval._io``
(FGD encoder saves) each have ``atomic_write`` / ``atomic_directory``, because libraries may
not import each other; the ``writers`` fixture runs the same tests on both, so the two copies
cannot drift apart (gesture_eval's case skips where it is not installed): modes follow the
umask, a folder is swapped in whole, nothing stale or temporary survives, a failed write
leaves the old content, the working directory is never replaced.
"""

import importlib
import os
import stat

import pytest
import torch

from motion_tokenizers import RVQVAE
from motion_tokenizers.io import atomic_directory, save_state


@pytest.fixture(
    params=[("motion_tokenizers", "io", "CheckpointError"), ("gesture_eval", "_io", "EvalError")],
    ids=lambda p: p[0],
)
def writers(request):
    """(module with ``atomic_write`` / ``atomic_directory``, the error type it raises)."""
    package, module, error = request.param
    io = pytest.importorskip(f"{package}.{module}")
    return io, getattr(importlib.import_module(f"{package}.errors"), error)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_writers_follow_the_umask(tmp_path, umask, writers):
    # mkstemp/mkdtemp would give 0600 files and 0700 folders whatever the umask
    io, _ = writers
    io.atomic_write(tmp_path / "new" / "latest.txt", lambda p: p.write_text("step_1\n"))

    def write(tmp):
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"0")
        os.chmod(tmp / "sub" / "w.bin", 0o600)  # as safetensors >= 0.8 leaves its files

    io.atomic_directory(tmp_path / "ckpt", write)
    outputs = [tmp_path / "new", tmp_path / "new" / "latest.txt", tmp_path / "ckpt"]
    outputs += [*(tmp_path / "ckpt").rglob("*")]
    assert len(outputs) == 5
    for p in outputs:
        assert mode(p) == (0o777 if p.is_dir() else 0o666) & ~umask, p


def test_models_and_state_follow_the_umask(tmp_path, umask):
    RVQVAE.tiny(12).save_pretrained(tmp_path / "model")
    atomic_directory(tmp_path / "ckpt", lambda tmp: save_state({"w": torch.zeros(3)}, tmp))
    outputs = [*(tmp_path / "model").rglob("*"), *(tmp_path / "ckpt").rglob("*")]
    assert len(outputs) == 5  # model/ has README.md, config.json, model.safetensors
    for p in outputs:
        assert mode(p) == (0o777 if p.is_dir() else 0o666) & ~umask, p


def test_atomic_directory_swaps_the_folder_in_whole(tmp_path, writers):
    io, _ = writers
    folder = tmp_path / "export"

    def old(tmp):
        (tmp / "model.safetensors").write_text("old")
        (tmp / "model_ema.safetensors").write_text("old ema")

    io.atomic_directory(folder, old)
    io.atomic_directory(folder, lambda tmp: (tmp / "model.safetensors").write_text("new"))
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert (folder / "model.safetensors").read_text() == "new"
    assert list(tmp_path.iterdir()) == [folder]  # no temporary or trash sibling is left

    def fails(tmp):
        (tmp / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_directory(folder, fails)
    assert (folder / "model.safetensors").read_text() == "new"
    assert list(tmp_path.iterdir()) == [folder]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, writers):
    io, _ = writers
    target = tmp_path / "a.txt"
    io.atomic_write(target, lambda p: p.write_text("old"))

    def fails(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(target, fails)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_refuses_to_replace_the_working_directory(tmp_path, monkeypatch, writers):
    io, error = writers
    (tmp_path / "keep.txt").write_text("user data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match="working directory"):
        io.atomic_directory(".", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_per_entry_swaps_each_export_and_keeps_the_rest_of_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000001").mkdir(parents=True)
    (run / "lsm").mkdir()
    (run / "lsm" / "model_ema.safetensors").write_text("stale")

    def write(tmp):
        (tmp / "lsm").mkdir()
        (tmp / "lsm" / "model.safetensors").write_text("new")
        (tmp / "metrics.json").write_text("{}")

    atomic_directory(run, write, per_entry=True)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "lsm", "metrics.json"]
    assert [p.name for p in (run / "lsm").iterdir()] == ["model.safetensors"]
    assert (run / "checkpoints" / "step_0000001").is_dir()

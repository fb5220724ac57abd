"""The atomic writers of ``motion_tokenizers.io`` (used by every checkpoint and export of the
apps): modes follow the umask, a folder is swapped in whole, nothing stale survives."""

import os
import stat

import pytest
import torch

from motion_tokenizers import RVQVAE
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_directory, atomic_write, save_state


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_writers_follow_the_umask(tmp_path, umask):
    # mkstemp/mkdtemp would give 0600 files and 0700 folders whatever the umask
    atomic_write(tmp_path / "latest.txt", lambda p: p.write_text("step_1\n"))
    RVQVAE.tiny(12).save_pretrained(tmp_path / "model")

    def write(tmp):
        save_state({"w": torch.zeros(3)}, tmp / "sub", "state")  # nested atomic_write calls

    atomic_directory(tmp_path / "ckpt", write)
    outputs = [tmp_path / "latest.txt", tmp_path / "model", tmp_path / "ckpt"]
    outputs += [*(tmp_path / "model").rglob("*"), *(tmp_path / "ckpt").rglob("*")]
    assert len(outputs) == 9  # model/ has README.md, config.json, model.safetensors
    for p in outputs:
        assert mode(p) == (0o777 if p.is_dir() else 0o666) & ~umask, p


def test_atomic_directory_swaps_the_folder_in_whole(tmp_path):
    folder = tmp_path / "export"

    def old(tmp):
        (tmp / "model.safetensors").write_text("old")
        (tmp / "model_ema.safetensors").write_text("old ema")

    atomic_directory(folder, old)
    atomic_directory(folder, lambda tmp: (tmp / "model.safetensors").write_text("new"))
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert (folder / "model.safetensors").read_text() == "new"
    assert list(tmp_path.iterdir()) == [folder]  # no temporary or trash sibling is left

    def fails(tmp):
        (tmp / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_directory(folder, fails)
    assert (folder / "model.safetensors").read_text() == "new"
    assert list(tmp_path.iterdir()) == [folder]


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


def test_refuses_to_replace_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("user data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="working directory"):
        atomic_directory(".", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

"""Files gesture_data writes keep the user's umask and never rename across file systems; its
model loaders take local folders only and never touch the network."""

import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from gesture_data import DataError, Normalizer
from gesture_data._io import write_text_atomic
from gesture_data.cache import build_cache
from gesture_data.features.pretrained import SpeechEncoder
from gesture_data.features.text import TextEncoder
from gesture_data.features.whisper import Whisper
from gesture_data.render import render_motion


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_writer_and_cache_follow_the_umask(tmp_path, umask022):
    # mkstemp/mkdtemp would give 0600 files and a 0700 cache folder
    write_text_atomic(tmp_path / "vocab.txt", "a\nb\n")
    Normalizer().save(tmp_path / "normalizer.npz")
    entry = build_cache(tmp_path / "cache" / "clips-0123", [("c0", {"poses": np.zeros((4, 3))})])
    assert mode(tmp_path / "vocab.txt") == mode(tmp_path / "normalizer.npz") == 0o644
    assert mode(tmp_path / "cache") == mode(entry.path) == 0o755
    assert sorted(p.name for p in entry.path.iterdir()) == ["index.json", "poses.npy"]
    assert all(mode(p) == 0o644 for p in entry.path.iterdir())


def _other_file_system_tmpdir() -> str | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != Path.cwd().stat().st_dev:
        return str(shm)
    return None


@pytest.mark.parametrize("audio", [False, True], ids=["silent", "with_audio"])
@pytest.mark.parametrize("tmpdir", ["missing", "other_fs"])
def test_mp4_temporaries_stay_beside_the_output(tmp_path, monkeypatch, umask022, audio, tmpdir):
    # TMPDIR=/dev/shm made the silent video's rename cross file systems (EXDEV); an
    # unusable TMPDIR shows that nothing goes there at all
    if tmpdir == "other_fs":
        where = _other_file_system_tmpdir()
        if where is None:
            pytest.skip("no writable /dev/shm on another file system")
    else:
        where = str(tmp_path / "no_such_tmpdir")
    monkeypatch.setattr(tempfile, "tempdir", where)
    out = tmp_path / "videos" / "clip.mp4"
    motion = np.zeros((6, 55, 3), np.float32)
    motion[:, :, 1] = np.linspace(0, 1.5, 55)
    sound = np.zeros(3200, np.float32) if audio else None
    render_motion(motion, out, audio=sound, size=(64, 64))
    assert out.stat().st_size > 0 and mode(out) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]


@pytest.fixture
def no_network(monkeypatch):
    """Every DNS lookup or connection attempt is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.mark.parametrize("loader", [Whisper, SpeechEncoder, TextEncoder])
@pytest.mark.parametrize("name", ["tiny.en", "someone/no_such_model", "/no/such/dir"])
def test_loaders_fail_at_once_without_the_network(tmp_path, monkeypatch, no_network, loader, name):
    # faster-whisper used to take "tiny.en" or "someone/model" for a download request
    if loader is Whisper:
        pytest.importorskip("faster_whisper")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError):
        loader("warm_up")  # imports transformers / faster_whisper: not part of the timing
    start = time.perf_counter()
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        loader(name)
    assert time.perf_counter() - start < 2.0
    assert no_network == []

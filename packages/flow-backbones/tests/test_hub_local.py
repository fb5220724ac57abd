"""``save_pretrained`` / ``from_pretrained``: local folders only, swapped in whole."""

import os
import socket
import stat
import time

import pytest
import torch

from flow_backbones import DiT
from flow_backbones.errors import CheckpointError


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


@pytest.mark.parametrize("name", ["no_such_model", "someone/no_such_model", "/no/such/folder"])
def test_from_pretrained_fails_at_once_without_the_network(tmp_path, monkeypatch, no_network, name):
    # relative names are valid Hub repository ids: the Hub client used to retry them for 24 s
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=name):
        DiT.from_pretrained(name)
    assert time.perf_counter() - start < 2.0
    assert no_network == []


def test_save_pretrained_swaps_the_folder_whole_with_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        model = DiT.tiny()
        folder = tmp_path / "dit"
        folder.mkdir()
        (folder / "model_ema.safetensors").write_text("from an earlier save")
        model.save_pretrained(folder)
    finally:
        os.umask(old)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert list(tmp_path.iterdir()) == [folder]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    loaded = DiT.from_pretrained(folder)
    for a, b in zip(model.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)

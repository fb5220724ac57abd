"""FGD encoder files: local folders only, strict loading, whole-folder saves that keep the
umask's modes."""

import json
import os
import socket
import stat
import time

import pytest
import torch
from safetensors.torch import save_model

from gesture_eval import EvalError, FGDEncoder, synthetic


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


@pytest.mark.parametrize("name", ["no_such_encoder", "someone/no_such_encoder", "/no/such/dir"])
def test_from_pretrained_fails_at_once_without_the_network(tmp_path, monkeypatch, no_network, name):
    # relative names are valid Hub repository ids: the Hub client used to retry them for 24 s
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(EvalError, match=name):
        FGDEncoder.from_pretrained(name)
    assert time.perf_counter() - start < 2.0
    assert no_network == []


def test_from_pretrained_rejects_a_folder_of_other_weights(tmp_path):
    # a save_pretrained folder of some other model: EMAGE-size config, none of its 56 keys
    folder = tmp_path / "not_an_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({}))
    save_model(torch.nn.Linear(4, 4), str(folder / "model.safetensors"))
    with pytest.raises(EvalError) as err:
        FGDEncoder.from_pretrained(folder)
    message = str(err.value)
    assert str(folder / "model.safetensors") in message
    assert "0 of 56 keys" in message and "missing keys ['decoder." in message
    assert "unexpected keys ['bias', 'weight']" in message


def test_from_pretrained_rejects_a_wrong_shape(tmp_path):
    FGDEncoder.tiny().save_pretrained(tmp_path / "tiny")
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    config["latent_dim"], config["grow"] = 480, [2, 2]  # same keys, other channel counts
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    with pytest.raises(EvalError, match=r"model\.safetensors: key '.*' expected shape"):
        FGDEncoder.from_pretrained(tmp_path / "tiny")


def test_writers_follow_the_umask_and_replace_whole(tmp_path):
    old = os.umask(0o022)
    try:
        model_file = synthetic.write_synthetic_smplx(
            tmp_path / "smplx" / "SMPLX.npz", num_vertices=9930
        )
        folder = tmp_path / "enc"
        folder.mkdir()
        (folder / "stale.safetensors").write_text("from an earlier save")
        encoder = FGDEncoder.tiny()
        encoder.save_pretrained(folder)
    finally:
        os.umask(old)
    assert stat.S_IMODE(model_file.stat().st_mode) == 0o644
    assert [p.name for p in model_file.parent.iterdir()] == ["SMPLX.npz"]
    assert not (folder / "stale.safetensors").exists()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    again = FGDEncoder.from_pretrained(folder)
    for a, b in zip(encoder.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)

"""The released ``vocab.pkl`` goes through a restricted unpickler: fields load, code never runs."""

import os
import pickle
import sys
import types

import numpy as np
import pytest

from gesture_data import DataError
from gesture_data.datasets.vocab_pickle import UNK, read_vocab_pickle


@pytest.fixture
def Vocab(monkeypatch):
    """A class pickled under the reference's name, ``dataloaders.build_vocab.Vocab``."""
    mod = types.ModuleType("dataloaders.build_vocab")

    class Vocab:
        PAD_token, UNK_token = 0, 3

        def __init__(self, words=("hello", "world"), dim=6):
            self.name, self.trimmed = "beat", False
            self.index2word = {0: "<PAD>", 1: "<SOS>", 2: "<EOS>", 3: "<UNK>"}
            self.word2index, self.word2count = {}, {}
            for w in words:
                self.word2index[w] = len(self.index2word)
                self.index2word[len(self.index2word)] = w
                self.word2count[w] = 1
            self.n_words = len(self.index2word)
            rng = np.random.default_rng(0)
            self.word_embedding_weights = rng.normal(size=(self.n_words, dim)).astype(np.float32)

    Vocab.__module__, Vocab.__qualname__ = "dataloaders.build_vocab", "Vocab"
    mod.Vocab = Vocab
    monkeypatch.setitem(sys.modules, "dataloaders", types.ModuleType("dataloaders"))
    monkeypatch.setitem(sys.modules, "dataloaders.build_vocab", mod)
    return Vocab


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_released_vocab_loads_in_every_protocol(tmp_path, Vocab, protocol):
    v = Vocab()
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(v, protocol=protocol))
    got = read_vocab_pickle(tmp_path / "vocab.pkl")
    assert got.words == ["<PAD>", "<SOS>", "<EOS>", "<UNK>", "hello", "world"]
    assert got.words[UNK] == "<UNK>"
    np.testing.assert_array_equal(got.table, v.word_embedding_weights)
    assert got.table.dtype == np.float32


class _Payload:
    """Pickles as a call of ``fn(*args)``: what a malicious file does on a plain unpickle."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize(
    "make",
    [
        lambda marker: _Payload(os.system, f"touch {marker}"),
        lambda marker: _Payload(eval, f"open({str(marker)!r}, 'w')"),
        lambda marker: _Payload(open, str(marker), "w"),
    ],
    ids=["os.system", "builtins.eval", "builtins.open"],
)
def test_other_globals_are_refused_before_running(tmp_path, Vocab, make):
    marker = tmp_path / "ran"
    v = Vocab()
    v.word2count = make(marker)  # hidden in a field, as an attacker would
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(v))
    with pytest.raises(DataError, match=r"vocab\.pkl: not a safe vocabulary pickle: refusing"):
        read_vocab_pickle(tmp_path / "vocab.pkl")
    assert not marker.exists()
    # the same file through a plain unpickle does run the payload: the test can fail
    pickle.loads((tmp_path / "vocab.pkl").read_bytes())
    assert marker.exists()


def test_bad_vocab_files(tmp_path, Vocab):
    p = tmp_path / "vocab.pkl"
    with pytest.raises(DataError, match="vocabulary pickle missing"):
        read_vocab_pickle(p)
    data = pickle.dumps(Vocab())
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_vocab_pickle(p)
    p.write_bytes(pickle.dumps({"word2index": {}}))
    with pytest.raises(DataError, match="no Vocab object"):
        read_vocab_pickle(p)
    v = Vocab()
    del v.word_embedding_weights
    p.write_bytes(pickle.dumps(v))
    with pytest.raises(DataError, match="key 'word_embedding_weights': missing field"):
        read_vocab_pickle(p)
    v = Vocab()
    v.word2index["hello"] = 5  # disagrees with index2word
    p.write_bytes(pickle.dumps(v))
    with pytest.raises(DataError, match="'hello' -> 5 disagrees"):
        read_vocab_pickle(p)
    v = Vocab()
    v.word_embedding_weights = v.word_embedding_weights[:-1]  # one row short
    p.write_bytes(pickle.dumps(v))
    with pytest.raises(DataError, match=r"indices must be 0\.\.n-1"):
        read_vocab_pickle(p)
    v = Vocab()
    v.word_embedding_weights[4, 0] = np.nan
    p.write_bytes(pickle.dumps(v))
    with pytest.raises(DataError, match="non-finite"):
        read_vocab_pickle(p)

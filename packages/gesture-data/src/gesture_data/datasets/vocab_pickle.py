"""Read the BEAT2 / EMAGE / GestureLSM ``weights/vocab.pkl`` without running its code.

The released file is a pickle of the reference code's ``Vocab`` object (``dataloaders/
build_vocab.py``): ``word2index``, ``index2word``, ``word2count``, ``n_words`` and the FastText
table ``word_embedding_weights`` (``(n_words, 300)`` float32). Unpickling it normally would
import the reference code and let the file call anything it names. The
:class:`RestrictedUnpickler` here resolves only what such a file needs (numpy's array and dtype
reconstructors, and any class called ``Vocab``, which becomes an inert attribute record) and
refuses every other global before it can run.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gesture_data.errors import DataError

# numpy's own pickle protocol: arrays, dtypes and scalars, under the numpy 1 and 2 module names
_NUMPY = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol 0 writes an array's bytes as a latin-1 string
}
# the reference Vocab's class constants (not pickled with the object)
PAD, UNK = 0, 3


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set."""


class _Record:
    """What a pickled ``Vocab`` becomes: its fields as attributes, no behaviour."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise RefusedGlobal("a Vocab whose state is not a dict of fields")
        self.__dict__.update(state)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, builtin containers, strings, numbers and ``Vocab`` records;
    any other global (``os.system``, ``builtins.eval``, a module's function, ...) raises
    :class:`RefusedGlobal` (an ``UnpicklingError``) naming it, before anything is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        if name == "Vocab":  # the class is never imported: the record takes its fields
            return _Record
        # protocol 0/1 objects (Python 2 module names too): object.__new__ of a _Record only
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstructor
        if module in ("builtins", "__builtin__") and name == "object":
            return object
        raise RefusedGlobal(f"refusing global {module}.{name}")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if cls is not _Record or base is not object or state is not None:
        raise RefusedGlobal("refusing copyreg._reconstructor of a non-Vocab class")
    return copyreg._reconstructor(cls, base, state)


class VocabPickle(NamedTuple):
    """A released vocabulary: ``words[i]`` is the word of index ``i`` (the reference's
    ``index2word``; its special entries ``<PAD>`` 0, ``<SOS>`` 1, ``<EOS>`` 2, ``<UNK>`` 3
    included; :data:`PAD` and :data:`UNK` are the reference's constants), ``table`` its
    ``(len(words), dim)`` float32 embeddings."""

    words: list[str]
    table: np.ndarray


def read_vocab_pickle(path: str | Path) -> VocabPickle:
    """Read a released ``vocab.pkl`` safely (see :class:`RestrictedUnpickler`).

    Raises:
        DataError: naming the file and field: missing or truncated file, a refused global,
            no ``Vocab`` object, ``word2index`` / ``index2word`` / ``word_embedding_weights``
            missing or inconsistent (indices not ``0..n-1``, table rows != words, NaN).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "vocabulary pickle missing")
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except RefusedGlobal as e:
        raise DataError(path, f"not a safe vocabulary pickle: {e}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise DataError(path, f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, _Record):
        raise DataError(path, "no Vocab object", expected="Vocab", found=type(obj).__name__)
    fields = obj.__dict__
    for key in ("word2index", "word_embedding_weights"):
        if key not in fields:
            raise DataError(path, "missing field", key=key)
    w2i = fields["word2index"]
    table = fields["word_embedding_weights"]
    i2w = fields.get("index2word", {})
    if not isinstance(w2i, dict) or not isinstance(i2w, dict):
        raise DataError(path, "word2index / index2word must be dicts", key="word2index")
    if not isinstance(table, np.ndarray) or table.ndim != 2 or table.dtype.kind != "f":
        found = getattr(table, "shape", type(table).__name__)
        raise DataError(
            path, "bad table", key="word_embedding_weights", expected="(n, d)", found=found
        )
    index = dict(i2w)
    for w, i in w2i.items():  # word2index holds the words; index2word also the specials
        if not isinstance(w, str) or not isinstance(i, int) or index.get(i, w) != w:
            raise DataError(
                path, f"entry {w!r} -> {i!r} disagrees with index2word", key="word2index"
            )
        index[i] = w
    n = table.shape[0]
    if n <= UNK:
        raise DataError(
            path, "too few words", key="word_embedding_weights", expected=">= 4", found=n
        )
    if sorted(index) != list(range(n)) or not all(isinstance(w, str) for w in index.values()):
        raise DataError(
            path,
            "indices must be 0..n-1 with one word each, n = table rows",
            key="index2word",
            expected=n,
            found=len(index),
        )
    if not np.isfinite(table).all():
        raise DataError(path, "non-finite values", key="word_embedding_weights")
    words = [index[i] for i in range(n)]
    return VocabPickle(words, np.ascontiguousarray(table, np.float32))

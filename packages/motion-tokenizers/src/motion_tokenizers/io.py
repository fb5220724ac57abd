"""Atomic checkpoint writing and a pickle-free format for arbitrary training state.

Training state (optimizer, scheduler, RNG, counters) is a nest of dicts/lists holding tensors
and plain Python values. :func:`save_state` stores the tensors in one safetensors file and the
rest as JSON that refers to them by key, so nothing is ever unpickled on load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

_TENSOR, _TUPLE, _INTKEYS = "__tensor__", "__tuple__", "__intkeys__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):
            # optimizer state is keyed by parameter index
            return {_INTKEYS: [[k, _flatten(v, prefix, tensors)] for k, v in obj.items()]}
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"state keys must be str or int, found {bad[:3]}")
        return {k: _flatten(v, prefix, tensors) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, prefix, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, prefix, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if _INTKEYS in obj:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(state: dict[str, Any], directory: str | os.PathLike, name: str = "state") -> None:
    """Write ``name.safetensors`` + ``name.json`` into ``directory`` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    atomic_write(directory / f"{name}.safetensors", lambda p: save_file(tensors, str(p)))
    atomic_write(
        directory / f"{name}.json", lambda p: Path(p).write_text(json.dumps(skeleton, indent=1))
    )


def load_state(directory: str | os.PathLike, name: str = "state") -> dict[str, Any]:
    """Inverse of :func:`save_state`; raises :class:`CheckpointError` naming a missing file."""
    directory = Path(directory)
    for suffix in (".safetensors", ".json"):
        if not (directory / f"{name}{suffix}").is_file():
            raise CheckpointError(f"{directory / (name + suffix)}: file not found")
    try:
        tensors = load_file(str(directory / f"{name}.safetensors"))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"{directory / (name + '.safetensors')}: unreadable ({e})") from e
    try:
        skeleton = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{directory / (name + '.json')}: invalid JSON ({e})") from e
    try:
        return _unflatten(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as e:  # a reference to no tensor, a bad nest
        raise CheckpointError(
            f"{directory / (name + '.json')}: does not match {name}.safetensors ({e!r})"
        ) from e


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_directory(directory: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder with ``write(tmp_dir)``, then move its files into
    ``directory`` one ``os.replace`` at a time (so each file is whole, old or new)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        write(tmp)
        directory.mkdir(exist_ok=True)
        # config.json last: a reader that sees the new config also sees the new weights
        files = sorted(tmp.rglob("*"), key=lambda p: (p.name == "config.json", str(p)))
        for f in files:
            if f.is_file():
                dest = directory / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

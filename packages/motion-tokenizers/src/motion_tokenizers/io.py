"""Atomic checkpoint writing and a pickle-free format for arbitrary training state.

Training state (optimizer, scheduler, RNG, counters) is a nest of dicts/lists holding tensors
and plain Python values. :func:`save_state` stores the tensors in one safetensors file and the
rest as JSON that refers to them by key, so nothing is ever unpickled on load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
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
    """Call ``write(tmp_path)`` on a new file beside ``path``, then rename it into place.

    The file gets the mode a plain ``open(path, "w")`` would (``0o666 & ~umask``, 0644 under
    umask 022), not ``mkstemp``'s 0600, so colleagues on a shared disk can read it. Missing
    parent folders are created. ``gesture_eval._io`` carries the same writers (libraries never
    import each other); ``tests/test_atomic_io.py`` holds both to one contract."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(path, ".tmp", _create_file)
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 & ~umask, applied by the kernel
        write(tmp)
        os.chmod(tmp, mode)  # a writer that replaced the file (safetensors) left 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_directory(
    directory: str | os.PathLike, write: Callable[[Path], None], *, per_entry: bool = False
) -> None:
    """Fill a new temporary sibling folder with ``write(tmp_dir)``, then swap it in whole.

    Whatever ``directory`` held before is removed, so no file of an earlier save survives
    next to the new ones (a stale ``model_ema.safetensors``, say). Readers see the old folder
    or the new one, never a mix; if the process dies while the old folder is being swapped
    out, the name is briefly absent rather than half-written. A process killed while writing
    leaves only a hidden ``.<name>.tmp-*`` sibling, which no loader looks at.

    ``per_entry=True`` keeps ``directory`` itself and swaps each top-level entry that
    ``write`` made (folders whole, files by rename) while leaving its other entries alone: a
    run folder receives ``lsm/`` without losing ``checkpoints/``.

    Folders and files get the user's umask (0755 / 0644 under umask 022)."""
    directory = Path(directory).resolve()
    if not per_entry and directory.exists() and Path.cwd().resolve().is_relative_to(directory):
        raise CheckpointError(f"{directory}: refusing to replace the working directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(directory, "", _create_dir)
    try:
        dir_mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o777 & ~umask, applied by the kernel
        write(tmp)
        _set_modes(tmp, dir_mode)
        if per_entry:
            directory.mkdir(exist_ok=True)
            for entry in sorted(tmp.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    _swap_in(entry, directory / entry.name)
                else:
                    os.replace(entry, directory / entry.name)
        else:
            _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful swap


def _create_file(path: Path) -> None:
    # O_EXCL: a name another writer took raises FileExistsError; mode 0o666 lets the kernel
    # apply the umask itself (reading the umask would mean briefly changing it, racing threads)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _create_dir(path: Path) -> None:
    os.mkdir(path, 0o777)  # the kernel applies the umask, as for _create_file


def _set_modes(root: Path, dir_mode: int) -> None:
    """Give every folder under ``root`` ``dir_mode`` and every file ``dir_mode & 0o666``: what
    the umask gives a plain ``mkdir``/``open`` (``dir_mode`` is the kernel's own answer, read
    off a folder we just made with 0o777). Some writers (safetensors >= 0.8) leave 0600 files."""
    file_mode = dir_mode & 0o666
    for parent, dirs, files in os.walk(root):
        for name, want in [*((d, dir_mode) for d in dirs), *((f, file_mode) for f in files)]:
            entry = os.path.join(parent, name)
            st = os.lstat(entry)
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != want:
                os.chmod(entry, want)


def _new_sibling(target: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """Create an unused hidden name ``.<name>.tmp-<random><suffix>`` beside ``target``: in
    the same folder, so the final rename never crosses file systems."""
    for _ in range(100):
        candidate = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


def _swap_in(new: Path, target: Path) -> None:
    """Rename the filled folder ``new`` onto ``target``.

    ``rename`` replaces only an absent or empty folder, so an existing one is first renamed
    to a hidden trash sibling and deleted once the new folder is in place. The loop covers
    another process putting its own copy in between."""
    trash: list[Path] = []
    try:
        for _ in range(10):
            try:
                os.rename(new, target)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or target.is_symlink():
                    raise
            old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.rename(target, old)
                trash.append(old)
        raise CheckpointError(f"{target}: replaced by other writers 10 times in a row")
    finally:
        for old in trash:
            shutil.rmtree(old, ignore_errors=True)

"""The one atomic file writer and the one atomic folder writer of ``gesture_eval``.

Both write under a new hidden name beside the target (same file system, so the final rename
is atomic) and keep the user's umask (0644 files, 0755 folders under umask 022), unlike
``mkstemp``/``mkdtemp``'s 0600/0700. Libraries never import each other, so
``motion_tokenizers.io`` carries its own copy of the same scheme.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from gesture_eval.errors import EvalError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a new file beside ``path``, then rename it into place."""
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


def atomic_directory(directory: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Fill a new hidden sibling folder with ``write(tmp_dir)``, then swap it in whole: no
    file of an earlier save survives, and a reader sees the old folder or the new one. A
    process killed while writing leaves only a hidden ``.<name>.tmp-*`` sibling. The same
    behaviour as ``motion_tokenizers.io.atomic_directory`` (without its ``per_entry`` mode);
    one contract test runs against both (motion-tokenizers' ``tests/test_atomic_io.py``)."""
    directory = Path(directory).resolve()
    if directory.exists() and Path.cwd().resolve().is_relative_to(directory):
        raise EvalError(f"{directory}: refusing to replace the working directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(directory, "", _create_dir)
    try:
        dir_mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o777 & ~umask, applied by the kernel
        write(tmp)
        _set_modes(tmp, dir_mode)
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful swap


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
        raise EvalError(f"{target}: replaced by other writers 10 times in a row")
    finally:
        for old in trash:
            shutil.rmtree(old, ignore_errors=True)


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
    for _ in range(100):
        candidate = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")

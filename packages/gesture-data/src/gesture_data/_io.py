"""Small file helpers: the one atomic file writer (:func:`atomic_path`), the temporary folder
the cache builds its entries in, and fixture discovery."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a new temporary path in the target's folder; on success ``os.replace`` it onto
    ``path`` so readers never see a half-written file. On error the temp file is removed.

    The temp file is created with the mode a plain ``open(path, "w")`` gives (``0o666 &
    ~umask``: 0644 under umask 022; ``mkstemp`` would force 0600), and writers that truncate
    it keep that mode. ``suffix`` keeps the extension for writers that dispatch on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_sibling(path, suffix or ".tmp", _create_file)
    try:
        mode = stat.S_IMODE(os.stat(tmp_path).st_mode)  # 0o666 & ~umask, applied by the kernel
        yield tmp_path
        os.chmod(tmp_path, mode)  # in case a writer replaced the file with a 0600 one
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def new_folder_beside(path: str | Path) -> Path:
    """A new, empty hidden folder beside ``path`` to fill and then ``os.rename`` onto it
    (the cache's folder writer). It gets the umask's mode (0755 under umask 022; ``mkdtemp``
    would force 0700) and lives on the same file system, so the rename is atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _new_sibling(path, "", _create_dir)


def _create_file(path: Path) -> None:
    # O_EXCL: a name another writer took raises FileExistsError; mode 0o666 lets the kernel
    # apply the umask itself (reading the umask would mean briefly changing it, racing threads)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _create_dir(path: Path) -> None:
    os.mkdir(path, 0o777)  # the kernel applies the umask, as for _create_file


def _new_sibling(target: Path, suffix: str, create) -> Path:
    """Create an unused hidden name beside ``target``: in the same folder, so the final
    rename never crosses file systems (``$TMPDIR`` may be another mount)."""
    for _ in range(100):
        candidate = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, newline: str | None = None) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


def fixtures_root() -> Path:
    """``$GESTURE_FIXTURES`` or ``<repo>/../shared/fixtures`` (may not exist)."""
    env = os.environ.get("GESTURE_FIXTURES")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "packages").is_dir():
            return parent.parent / "shared" / "fixtures"
    return Path("../shared/fixtures").resolve()

"""Output-versus-input path checks shared by the subcommands.

A command that writes where it reads destroys its own input: ``gesture generate --out
RUN/lsm/normalizer.npz`` used to replace the checkpoint's normaliser with a motion file, and a
training run pointed at its tokenizer's folder mixes two runs in one. These checks run before
anything is read or written, so a refused command leaves no trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gesture_apps.errors import ConfigError


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def inside(path: str | Path, folder: str | Path) -> bool:
    """True when ``path`` is ``folder`` or lies under it (after resolving links and ``..``)."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or f in p.parents


def check_output(
    out: str | Path,
    flag: str,
    files: Iterable[tuple[str, str | Path | None]] = (),
    folders: Iterable[tuple[str, str | Path | None]] = (),
    keep: Iterable[tuple[str, str | Path | None]] = (),
) -> None:
    """Refuse ``out`` when it is one of the input ``files``, lies in one of the input
    ``folders`` (model folders the command reads whole: exports, encoders, tokenizers), or
    would replace an existing file under one of the ``keep`` folders (a run folder, where a
    new file beside the checkpoints is harmless). Each input is ``(its flag, path or None)``;
    raises :class:`ConfigError` naming both."""
    for name, path in files:
        if path is not None and _resolved(out) == _resolved(path):
            raise ConfigError(f"{flag} {out}: is the input {name} {path}; choose another path")
    for name, path in keep:
        if path is not None and Path(out).exists() and inside(out, path):
            raise ConfigError(
                f"{flag} {out}: is a file of the input {name} {path}; choose another path"
            )
    for name, path in folders:
        if path is not None and inside(out, path):
            raise ConfigError(
                f"{flag} {out}: lies inside the input {name} {path}, which it would overwrite; "
                "choose another path"
            )

"""The one exception type of gesture_data."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file is missing, corrupt, truncated or has an unexpected shape.

    The message always names the file and, where it applies, the key/field and the
    expected vs found shape or value, e.g.
    ``2_scott_0_1_1.npz: key 'poses': expected shape (T, 165), found (10, 3)``.
    """

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        key: str | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.key = key
        self.expected = expected
        self.found = found
        parts = [str(path) if path is not None else "<memory>"]
        if key is not None:
            parts.append(f"key {key!r}")
        text = ": ".join(parts) + ": " + message
        if expected is not None or found is not None:
            text += f" (expected {expected}, found {found})"
        # third-party parsers put newlines in their messages; callers (and the CLI) print
        # one line per error
        super().__init__(" ".join(text.split()))

"""TextGrid reading (via praatio) and writing, with validation."""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from pathlib import Path

from .._io import write_text_atomic
from ..errors import DataError

log = logging.getLogger(__name__)

Interval = tuple[float, float, str]

_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_NEGATIVE = re.compile(r"(?<![\w.])-\s*\.?\d")


def _negative_time_line(text: str) -> int | None:
    """Line number of the first negative number outside quoted labels, or None.

    praatio's number pattern has no sign, so it reads ``xmin = -0.5`` as 0.5: a word
    would silently move. Labels ("well-known", "-") are quoted, so they are skipped."""
    for i, line in enumerate(text.splitlines(), 1):
        if _NEGATIVE.search(_QUOTED.sub("", line)):
            return i
    return None


def read_textgrid(path: str | Path, tiers=("words",)) -> dict[str, list[Interval]]:
    """Read interval tiers from a Praat TextGrid (long or short format, any whitespace).

    Returns ``{tier: [(start_s, end_s, label), ...]}`` sorted by start, empty labels
    (silences) dropped. Raises :class:`DataError` when the file is unreadable, a tier is
    missing, or intervals overlap / go backwards."""
    from praatio import textgrid as ptg

    path = Path(path)
    if not path.exists():
        raise DataError(path, "TextGrid file missing")
    try:
        raw = path.read_bytes()
        # Praat writes UTF-8 or UTF-16 (with a byte-order mark); praatio reads both
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read TextGrid text: {type(e).__name__}: {e}") from None
    line = _negative_time_line(text)
    if line is not None:
        raise DataError(
            path,
            f"line {line}: negative time",
            key=tiers[0] if tiers else None,
            expected="times >= 0",
            found=text.splitlines()[line - 1].strip(),
        )
    try:
        tg = ptg.openTextgrid(str(path), includeEmptyIntervals=False)
    except Exception as e:  # praatio raises many types for malformed input
        raise DataError(path, f"cannot parse TextGrid: {type(e).__name__}: {e}") from None
    out: dict[str, list[Interval]] = {}
    for name in tiers:
        if name not in tg.tierNames:
            raise DataError(path, "tier missing", key=name, expected=name, found=list(tg.tierNames))
        tier = tg.getTier(name)
        ivs = []
        for entry in tier.entries:
            try:
                s, e, label = float(entry[0]), float(entry[1]), str(entry[2])
            except (TypeError, ValueError, IndexError):
                raise DataError(path, f"bad interval {entry!r}", key=name) from None
            ivs.append((s, e, label.strip()))
        ivs = [iv for iv in ivs if iv[2]]
        for a, b in itertools.pairwise(ivs):
            if b[0] < a[1] - 1e-6:
                raise DataError(
                    path,
                    f"overlapping intervals {a} and {b}",
                    key=name,
                    expected="start >= previous end",
                    found=f"{b[0]} < {a[1]}",
                )
        for s, e, label in ivs:
            if not e > s or s < 0:
                raise DataError(
                    path,
                    f"bad interval times for {label!r}",
                    key=name,
                    expected="0 <= start < end",
                    found=(s, e),
                )
        out[name] = ivs
    return out


def write_textgrid(
    path: str | Path, tiers: dict[str, list[Interval]], xmax: float | None = None
) -> None:
    """Write interval tiers as a long-format TextGrid (atomically). Gaps become empty
    intervals, as Praat and Montreal Forced Aligner write them."""
    from praatio import textgrid as ptg
    from praatio.utilities.constants import Interval as PI

    end = xmax if xmax is not None else max((iv[1] for v in tiers.values() for iv in v), default=0)
    tg = ptg.Textgrid()
    for name, ivs in tiers.items():
        tg.addTier(ptg.IntervalTier(name, [PI(s, e, w) for s, e, w in ivs], 0, end))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "x.TextGrid"
        tg.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)
        write_text_atomic(path, tmp.read_text(encoding="utf-8"))

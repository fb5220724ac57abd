"""SeG (Semantic Gesticulator) dataset: ``SeG_list.xlsx`` inventory joined to BVH files.

The sheet ``sg_list`` has two note rows, a header row (``Semantics-Aware Index``,
``Copyright Source``, ``Label``, ``Description``, ``Contextual Meaning``, ``Example``) and
one row per gesture. A label maps to BVH stems by :func:`label_to_stem`; files are
``<stem>-<n>.bvh`` (``n`` not always consecutive) or, once, ``<stem>.bvh``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

HEADER = [
    "Semantics-Aware Index",
    "Copyright Source",
    "Label",
    "Description",
    "Contextual Meaning",
    "Example",
]

# The two labels whose real file names keep their apostrophes.
KEEP_APOSTROPHES = {"EYE_'TELESCOPE'", "THROAT_'CUT'"}
_CITATION = re.compile(r"\s*\[\d+\]\s*$")


def strip_citation(text: str) -> str:
    """Drop a trailing `` [n]`` citation."""
    return _CITATION.sub("", text or "").strip()


def label_to_stem(label: str) -> str:
    """``THUMB, FOREFINGER AND LITTLE-FINGER RAISE [1]`` ->
    ``THUMB_FOREFINGER_AND_LITTLE_FINGER_RAISE``: drop the citation, drop ``,`` and ``'``,
    runs of spaces and ``-`` become ``_`` (with the known exceptions kept as in the data)."""
    stem = re.sub(r"[\s\-]+", "_", strip_citation(label).replace(",", "")).strip("_")
    return stem if stem in KEEP_APOSTROPHES else stem.replace("'", "")


@dataclass
class SegRecord:
    index: str
    source: str
    label: str
    description: str
    contextual_meaning: str
    example: str
    files: list[Path] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return label_to_stem(self.label)


def _variant(stem: str, p: Path) -> int:
    rest = p.stem[len(stem) :]
    return int(rest[1:]) if rest.startswith("-") and rest[1:].isdigit() else 0


def read_seg_inventory(xlsx: str | Path, bvh_dir: str | Path | None = None) -> list[SegRecord]:
    """Records from ``SeG_list.xlsx``; with ``bvh_dir`` each gets its BVH files, sorted by
    variant number."""
    import openpyxl

    xlsx = Path(xlsx)
    if not xlsx.exists():
        raise DataError(xlsx, "inventory file missing")
    try:
        wb = openpyxl.load_workbook(xlsx, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zipfile/KeyError/InvalidFileException
        raise DataError(xlsx, f"cannot open workbook: {type(e).__name__}: {e}") from None
    if "sg_list" not in wb.sheetnames:
        raise DataError(
            xlsx, "sheet missing", key="sg_list", expected="sg_list", found=wb.sheetnames
        )
    rows = list(wb["sg_list"].iter_rows(values_only=True))
    wb.close()
    hdr_i = next((i for i, r in enumerate(rows[:10]) if r and r[0] == HEADER[0]), None)
    if hdr_i is None:
        raise DataError(xlsx, "header row not found", key="sg_list", expected=HEADER)
    header = [str(c).strip() if c is not None else "" for c in rows[hdr_i][: len(HEADER)]]
    if header != HEADER:
        raise DataError(xlsx, "unexpected header", key="sg_list", expected=HEADER, found=header)
    files: dict[str, list[Path]] = {}
    if bvh_dir is not None and not Path(bvh_dir).is_dir():
        # a mistyped folder would otherwise give every record an empty file list
        raise DataError(bvh_dir, "BVH folder missing", key="bvh_dir", expected="folder")
    if bvh_dir is not None:
        for p in sorted(Path(bvh_dir).glob("*.bvh")):
            stem = re.sub(r"-\d+$", "", p.stem)
            files.setdefault(stem, []).append(p)
    out = []
    for r in rows[hdr_i + 1 :]:
        if not r or r[2] is None:
            continue
        cells = [("" if c is None else str(c)).strip() for c in r[:6]]
        idx = cells[0]
        if isinstance(r[0], int | float):  # a re-saved sheet may have lost the zero padding
            idx = f"{int(r[0]):04d}"
        rec = SegRecord(idx, cells[1], cells[2], cells[3], cells[4], cells[5])
        rec.files = sorted(files.get(rec.stem, []), key=lambda p, s=rec.stem: _variant(s, p))
        if any(r.index == rec.index for r in out):
            raise DataError(xlsx, "duplicate Semantics-Aware Index", key=HEADER[0], found=rec.index)
        out.append(rec)
    if not out:
        raise DataError(xlsx, "no gesture rows below the header", key="sg_list")
    return out

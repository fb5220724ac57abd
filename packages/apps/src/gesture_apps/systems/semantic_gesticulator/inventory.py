"""The inventory of semantic gestures, tokenized by a bundle's tokenizer.

A gesture folder (``--seg-dir``) is laid out as the user's copy of SeG (``SeG_dataset/``)::

    SeG_list.xlsx            sheet sg_list: Semantics-Aware Index, Copyright Source, Label,
                             Description, Contextual Meaning, Example (gesture_data's reader)
    bvh/<STEM>-<n>.bvh       takes in the SeG skeleton (60 fps), retargeted to SMPL-X at 30 fps
    npz/<STEM>-<n>.npz       or takes already in BEAT2's npz layout (poses, trans; 30 fps)

``<STEM>`` is the label's file stem (``HAND CHOP`` -> ``HAND_CHOP``); the takes may also lie
directly in the folder. The npz form is for inventories that are not SeG (the synthetic
corpus's gestures in the tests, a user's own clips). Each take is tokenized once into
``{"body", "hands"}`` codes ``(1, M, 4)``; a gesture with no take is left out (with a log line).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from gesture_apps.errors import GenerationError, one_line
from gesture_apps.systems.semantic_gesticulator.config import FPS
from gesture_apps.systems.semantic_gesticulator.model import MotionCodec, motion_array
from gesture_apps.systems.semantic_gesticulator.retrieval import GestureEntry
from gesture_data.datasets.seg import label_to_stem, read_seg_inventory
from gesture_data.errors import DataError

logger = logging.getLogger(__name__)

XLSX = "SeG_list.xlsx"
SUFFIXES = (".bvh", ".npz")


@dataclass
class Inventory:
    """Gesture entries (what retrieval matches) and each one's tokenized takes."""

    entries: list[GestureEntry]
    codes: dict[str, list[dict[str, Tensor]]] = field(default_factory=dict)  # index -> takes
    files: dict[str, list[Path]] = field(default_factory=dict)

    def take(self, index: str, rng: np.random.Generator) -> tuple[dict[str, Tensor], int]:
        """A take of gesture ``index`` drawn with ``rng`` (SG picks one at random) and its
        number among the gesture's takes."""
        takes = self.codes.get(index)
        if not takes:
            raise GenerationError(f"gesture {index!r}: no tokenized take in the inventory")
        k = int(rng.integers(len(takes)))
        return takes[k], k


def gesture_files(seg_dir: str | Path) -> tuple[list, dict[str, list[Path]]]:
    """SeG records of ``seg_dir/SeG_list.xlsx`` and each label's take files (sorted)."""
    root = Path(seg_dir).expanduser()
    if not root.is_dir():
        raise GenerationError(f"--seg-dir {root}: folder not found")
    xlsx = root / XLSX
    if not xlsx.is_file():
        raise GenerationError(f"--seg-dir {root}: {XLSX} not found")
    try:
        records = read_seg_inventory(xlsx)
    except DataError as e:
        raise GenerationError(f"--seg-dir: {one_line(e)}") from None
    found: dict[str, list[Path]] = {}
    for folder in (root, root / "bvh", root / "npz"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in SUFFIXES and p.is_file():
                found.setdefault(re.sub(r"-\d+$", "", p.stem), []).append(p)
    files = {}
    for r in records:
        takes = sorted(found.get(label_to_stem(r.label), []), key=_variant)
        if takes:
            files[r.index] = takes
    if not files:
        raise GenerationError(
            f"--seg-dir {root}: no take file (.bvh or .npz named <LABEL_STEM>-<n>) matches a "
            f"label of {XLSX} (looked in {root}, {root / 'bvh'}, {root / 'npz'})"
        )
    return records, files


def _variant(p: Path) -> int:
    m = re.search(r"-(\d+)$", p.stem)
    return int(m.group(1)) if m else 0


def read_take(path: Path) -> np.ndarray:
    """One take as our layout ``(T, 168)`` at 30 fps (BVH retargeted, npz read)."""
    try:
        if path.suffix.lower() == ".bvh":
            from gesture_data.datasets.bvh import read_bvh
            from gesture_data.datasets.seg import retarget_seg_to_smplx

            m = retarget_seg_to_smplx(read_bvh(path), fps=FPS)
        else:
            from gesture_data.motion import read_beat2_npz

            m = read_beat2_npz(path)
    except (DataError, ValueError, OSError) as e:
        raise GenerationError(f"{path}: unreadable gesture take ({one_line(e, 300)})") from None
    if abs(float(m.fps) - FPS) > 1e-6:
        raise GenerationError(f"{path}: expected {FPS:g} fps, found {m.fps}")
    return motion_array(m.poses, m.trans)


def build_inventory(seg_dir: str | Path, codec: MotionCodec) -> Inventory:
    """Read, retarget and tokenize every take of the gesture folder ``seg_dir``."""
    records, files = gesture_files(seg_dir)
    entries, codes = [], {}
    for r in records:
        if r.index not in files:
            logger.info("gesture %s %s: no take file, left out", r.index, r.label)
            continue
        takes = []
        for p in files[r.index]:
            x = read_take(p)
            if len(x) < codec.unit:
                raise GenerationError(f"{p}: {len(x)} frames, shorter than one token")
            takes.append(codec.encode(x))
        entries.append(GestureEntry.from_seg(r))
        codes[r.index] = takes
    return Inventory(entries, codes, files)

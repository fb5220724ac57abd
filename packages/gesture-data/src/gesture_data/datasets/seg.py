"""SeG (Semantic Gesticulator) dataset: ``SeG_list.xlsx`` inventory joined to BVH files.

The sheet ``sg_list`` has two note rows, a header row (``Semantics-Aware Index``,
``Copyright Source``, ``Label``, ``Description``, ``Contextual Meaning``, ``Example``) and
one row per gesture. A label maps to BVH stems by :func:`label_to_stem`; files are
``<stem>-<n>.bvh`` (``n`` not always consecutive) or, once, ``<stem>.bvh``.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..motion import Motion
from ..rotations import matrix_to_axis_angle
from ..skeleton import SMPLX_NAMES, SMPLX_PARENTS, SMPLX_REST
from .bvh import BvhMotion, local_matrices, resample_bvh

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


# --- SeG BVH -> SMPL-X (BEAT2 layout) ----------------------------------------------------
_SIDES = (("Left", "left"), ("Right", "right"))
# SeG numbers the fingers thumb-first (Finger0 sits forward and below the others)
_FINGERS = ("thumb", "index", "middle", "ring", "pinky")


def _smplx_sources() -> dict[str, str]:
    """SMPL-X joint name -> the SeG joint whose world rotation drives it."""
    src = {
        "pelvis": "Hips",
        # SeG's Chest bone spans SMPL-X spine1 and spine2 (10.5 + 14 cm vs 11 + 14 cm): both
        # follow it, so spine2's local rotation stays near rest
        "spine1": "Chest",
        "spine2": "Chest",
        "spine3": "Chest2",
        "neck": "Neck",
        "head": "Head",
    }
    for seg, smplx in _SIDES:
        for a, b in (("Collar", "collar"), ("Shoulder", "shoulder"), ("Elbow", "elbow")):
            src[f"{smplx}_{b}"] = f"{seg}{a}"
        src[f"{smplx}_wrist"] = f"{seg}Wrist"
        for n, finger in enumerate(_FINGERS):
            for k, suffix in enumerate(("", "1", "2")):
                src[f"{smplx}_{finger}{k + 1}"] = f"{seg}Finger{n}{suffix}"
        for a, b in (("Hip", "hip"), ("Knee", "knee"), ("Ankle", "ankle"), ("Toe", "foot")):
            src[f"{smplx}_{b}"] = f"{seg}{a}"
    return src


SMPLX_FROM_SEG = _smplx_sources()  # jaw and eyes have no SeG counterpart: they stay at rest


def _rest_positions(offsets: np.ndarray, parents) -> np.ndarray:
    pos = np.zeros_like(offsets, dtype=np.float64)
    for j, p in enumerate(parents):
        pos[j] = offsets[j] + (pos[p] if p >= 0 else 0.0)
    return pos


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation ``Q (3, 3)`` with ``Q a_0 = b_0`` exactly (the primary bone: shortest arc)
    and, given more unit rows ``a, b (K, 3)``, the twist about ``b_0`` that best fits the
    others (least squares in the plane normal to ``b_0``). With one row the twist comes
    from SeG's own rotation."""
    from scipy.spatial.transform import Rotation

    arc, _ = Rotation.align_vectors(b[:1], a[:1])
    q = arc.as_matrix()
    if len(a) == 1:
        return q
    axis = b[0]
    ra = a[1:] @ q.T
    pa = ra - (ra @ axis)[:, None] * axis  # projections normal to the primary bone
    pb = b[1:] - (b[1:] @ axis)[:, None] * axis
    angle = np.arctan2((np.cross(pa, pb) @ axis).sum(), np.einsum("ij,ij->", pa, pb))
    return Rotation.from_rotvec(angle * axis).as_matrix() @ q


# the bone that must match exactly where a joint has several children (its twist is fitted
# to the others): the spine over the hips, the neck over the collars, the middle finger
PRIMARY_CHILD = {
    "pelvis": "spine1",
    "spine3": "neck",
    "left_wrist": "left_middle1",
    "right_wrist": "right_middle1",
}


def _rest_alignment(
    smplx_rest: np.ndarray, seg_rest: np.ndarray, seg_index: dict[str, int]
) -> np.ndarray:
    """Per SMPL-X joint, ``Q_k (3, 3)`` taking its rest bone directions (to its children) onto
    the SeG source joint's rest bone directions (to the corresponding SeG joints)."""
    children: dict[int, list[int]] = {}
    for c, p in enumerate(SMPLX_PARENTS):
        children.setdefault(p, []).append(c)
    src = [seg_index.get(SMPLX_FROM_SEG.get(n, ""), -1) for n in SMPLX_NAMES]

    def pairs(k: int, c: int, out: list, via: int | None = None):
        # a child driven by the same SeG joint (spine1 -> spine2) has no SeG bone of its
        # own: the SeG bone is the next one down, and k's own bone (to `via`) follows it,
        # so spine1 and spine2 both lie along SeG's Chest
        for g in children.get(c, []):
            if src[g] < 0:
                continue
            if src[g] == src[k]:
                pairs(k, g, out, g if via is None else via)
            else:
                end = g if via is None else via
                v, w = smplx_rest[end] - smplx_rest[k], seg_rest[src[g]] - seg_rest[src[k]]
                # the primary bone goes first
                first = SMPLX_NAMES[g] == PRIMARY_CHILD.get(SMPLX_NAMES[k])
                out.insert(0, (v, w)) if first else out.append((v, w))

    Q = np.tile(np.eye(3), (len(SMPLX_NAMES), 1, 1))
    for k in range(len(SMPLX_NAMES)):
        if src[k] < 0:
            continue
        found: list = []
        pairs(k, k, found)
        if not found:
            # a leaf (head, finger tips, feet): align its incoming bone in both skeletons
            p = SMPLX_PARENTS[k]
            found = [(smplx_rest[k] - smplx_rest[p], seg_rest[src[k]] - seg_rest[src[p]])]
        a = np.array([v / np.linalg.norm(v) for v, _ in found])
        b = np.array([w / np.linalg.norm(w) for _, w in found])
        Q[k] = _align(a, b)
    return Q


def retarget_seg_to_smplx(
    bvh: BvhMotion, *, fps: float = 30.0, rest: np.ndarray | None = None
) -> Motion:
    """SeG's 51-joint BVH (centimetres, Y up, 60 fps) -> SMPL-X axis-angle + translation in
    BEAT2's layout at ``fps``.

    Joints are matched by name (:data:`SMPLX_FROM_SEG`; SeG ``Finger0..4`` are thumb, index,
    middle, ring, pinky, ``Toe`` is SMPL-X ``foot``, ``Chest`` drives ``spine1`` and
    ``spine2``). Rotations are transferred in world space so that each SMPL-X bone points
    where its SeG bone points: ``G'_k(t) = G_seg(k)(t) Q_k``, where ``Q_k`` aligns the two
    skeletons' REST bone directions (both rests are read from the data, not assumed equal:
    SeG's offsets from the file, SMPL-X's from ``rest``): the bone to the child (or, for the
    pelvis, spine3 and wrists, the :data:`PRIMARY_CHILD` bone) exactly, the twist fitted to
    the other children; a leaf (head, finger tips, feet) aligns its incoming bone. Then
    ``local_k = G'_parent^T G'_k``. Directions are matched, not positions: SMPL-X keeps its
    own bone lengths.

    Joints without a counterpart: SMPL-X ``jaw`` and the eyes keep the rest pose; SeG's end
    sites are not used; any extra joint in the file is skipped (its rotation still reaches
    its mapped descendants through their world rotations).

    Args:
        bvh: a SeG motion (:func:`~gesture_data.datasets.bvh.read_bvh`); resampled to ``fps``
            with :func:`~gesture_data.datasets.bvh.resample_bvh`.
        rest: SMPL-X rest joints ``(55, 3)`` in metres (a body model's ``J``); default the
            built-in neutral template :data:`gesture_data.skeleton.SMPLX_REST`.

    Returns:
        :class:`~gesture_data.motion.Motion` with ``poses (T', 165)``, ``trans (T', 3)`` (so
        that the SMPL-X pelvis lands on SeG's Hips, in metres) and ``fps``.
    """
    index = {n: i for i, n in enumerate(bvh.names)}
    for name in dict.fromkeys(SMPLX_FROM_SEG.values()):
        if name not in index:
            raise DataError(None, "SeG joint missing from the BVH", key=name, found=len(index))
    if bvh.num_frames < 1:
        raise DataError(None, "BVH has no frames", key="Frames", expected=">= 1", found=0)
    if not (np.isfinite(bvh.rotations).all() and np.isfinite(bvh.root_positions).all()):
        raise DataError(None, "non-finite rotations or root positions", key="MOTION")
    rest = SMPLX_REST if rest is None else np.asarray(rest, np.float64)
    if rest.shape != (len(SMPLX_NAMES), 3) or not np.isfinite(rest).all():
        raise DataError(None, "SMPL-X rest joints", key="rest", expected=(55, 3), found=rest.shape)
    m = resample_bvh(bvh, fps) if abs(bvh.fps - fps) > 1e-6 else bvh
    Q = _rest_alignment(rest, _rest_positions(m.offsets, m.parents), index)

    # SeG world rotations (T, J, 3, 3); parents precede children in BVH order
    local = local_matrices(m)
    world = np.empty_like(local)
    for j, p in enumerate(m.parents):
        world[:, j] = local[:, j] if p < 0 else world[:, p] @ local[:, j]

    T = m.num_frames
    g = np.empty((T, len(SMPLX_NAMES), 3, 3))
    out = np.empty_like(g)
    for k, name in enumerate(SMPLX_NAMES):
        p = SMPLX_PARENTS[k]
        src = SMPLX_FROM_SEG.get(name)
        if src is None:  # jaw, eyes: rest pose relative to the head
            g[:, k] = g[:, p]
            out[:, k] = np.eye(3)
            continue
        g[:, k] = world[:, index[src]] @ Q[k]
        out[:, k] = g[:, k] if p < 0 else np.swapaxes(g[:, p], -1, -2) @ g[:, k]
    poses = matrix_to_axis_angle(torch.from_numpy(out)).numpy().reshape(T, -1)
    # SeG is in centimetres; SMPL-X puts the pelvis at rest[0] + trans
    hips = (m.root_positions + m.offsets[index["Hips"]]) / 100.0
    trans = hips - rest[0]
    return Motion(poses=poses.astype(np.float32), trans=trans.astype(np.float32), fps=float(fps))


# --- SG's code inventory (SG_pipeline/all_mocap_extracted_new.npz) ----------------------
_CODE_KEY = re.compile(r"^rebuild_(\d{4})-(\d+)_chr00$")


def read_sg_code_inventory(npz_path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """SG's tokenised SeG takes: ``(Semantics-Aware Index, variant) -> codes (2, 4, N)``
    int64 (part body/hands, RVQ level, token) from keys ``rebuild_<index>-<variant>_chr00``
    holding ``(2, 4, 1, N)`` (the singleton batch axis is dropped). ``index`` keeps its
    4-digit string form (``'2210'``), matching :class:`SegRecord.index`."""
    path = Path(npz_path)
    if not path.exists():
        raise DataError(path, "code inventory missing")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(path, f"not a readable npz: {type(e).__name__}: {e}") from None
    out: dict[tuple[str, int], np.ndarray] = {}
    with npz:
        for key in npz.files:
            m = _CODE_KEY.match(key)
            if m is None:
                raise DataError(
                    path, "unexpected key", key=key, expected="rebuild_<dddd>-<n>_chr00", found=key
                )
            try:
                a = npz[key]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
                raise DataError(path, f"unreadable array: {type(e).__name__}", key=key) from None
            if a.ndim != 4 or a.shape[:3] != (2, 4, 1) or a.shape[3] < 1:
                raise DataError(
                    path, "wrong shape", key=key, expected=(2, 4, 1, "N"), found=a.shape
                )
            if a.dtype.kind not in "iu":
                raise DataError(path, "codes must be integers", key=key, found=a.dtype)
            if a.size and (a.min() < 0):
                raise DataError(path, "negative code", key=key, found=int(a.min()))
            out[(m.group(1), int(m.group(2)))] = a[:, :, 0].astype(np.int64)
    if not out:
        raise DataError(path, "no rebuild_* arrays", key="rebuild_<index>-<variant>_chr00")
    return out

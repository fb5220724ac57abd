"""BVH motion files (SeG and others): reader, writer, forward kinematics, resampling.

Reads CRLF or LF files with any whitespace, a 6-channel root and 3-channel joints in any
Euler order (other joints may also carry position channels). Rotations stay in degrees in
each joint's own channel order; ``rotation_orders[j]`` says which (e.g. ``"ZXY"``: the
joint's matrix is ``Rz @ Rx @ Ry``, intrinsic, as BVH applies channels in listed order).
:func:`write_bvh` writes SeG's exact style (CRLF, 4-space indent, 6-decimal values, no
final line ending), so a file it wrote reads back bit-exactly and re-writes byte-identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .._io import write_bytes_atomic
from ..errors import DataError

_POS = ("Xposition", "Yposition", "Zposition")
_ROT = ("Xrotation", "Yrotation", "Zrotation")


@dataclass
class BvhMotion:
    """``names``/``parents``/``offsets (J, 3)``/``channels`` (per joint, as in the file),
    ``end_sites`` {joint index: offset (3,)}, ``frame_time`` (s), ``root_positions (T, 3)``,
    ``rotations (T, J, 3)`` degrees in each joint's channel order, and ``positions``
    ``(T, J, 3)`` for joints that have position channels (zeros elsewhere)."""

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    channels: list[list[str]]
    frame_time: float
    root_positions: np.ndarray
    rotations: np.ndarray
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)
    positions: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def rotation_orders(self) -> list[str]:
        return ["".join(c[0] for c in ch if c in _ROT) for ch in self.channels]

    def motion_matrix(self) -> np.ndarray:
        """Frame values ``(T, C)`` in file channel order."""
        cols = []
        for j, ch in enumerate(self.channels):
            r = p = 0
            for c in ch:
                if c in _ROT:
                    cols.append(self.rotations[:, j, r])
                    r += 1
                else:
                    src = self.root_positions if j == 0 else self.positions[:, j]
                    cols.append(src[:, p])
                    p += 1
        return np.stack(cols, axis=1) if cols else np.zeros((self.num_frames, 0))


class _Tokens:
    def __init__(self, text: str, path):
        self.path = path
        self.toks: list[tuple[str, int]] = []
        for ln, line in enumerate(text.splitlines(), 1):
            self.toks.extend((t, ln) for t in line.split())
        self.i = 0

    def next(self, what: str) -> str:
        if self.i >= len(self.toks):
            raise DataError(self.path, f"unexpected end of file, expected {what}", key=what)
        t = self.toks[self.i][0]
        self.i += 1
        return t

    def expect(self, word: str) -> None:
        t = self.next(word)
        if t != word:
            raise DataError(
                self.path, f"line {self.line}: expected {word!r}", key=word, expected=word, found=t
            )

    def number(self, what: str) -> float:
        t = self.next(what)
        try:
            v = float(t)
        except ValueError:
            raise DataError(
                self.path, f"line {self.line}: not a number", key=what, expected="number", found=t
            ) from None
        if not np.isfinite(v):
            raise DataError(self.path, f"line {self.line}: non-finite value", key=what, found=t)
        return v

    @property
    def line(self) -> int:
        return self.toks[max(0, self.i - 1)][1] if self.toks else 0


def parse_bvh(text: str, path=None) -> BvhMotion:
    """Parse BVH text (see :func:`read_bvh`)."""
    tk = _Tokens(text, path)
    tk.expect("HIERARCHY")
    tk.expect("ROOT")
    names, parents, offsets, channels, ends = [], [], [], [], {}

    def joint(parent: int):
        name = tk.next("joint name")
        idx = len(names)
        names.append(name)
        parents.append(parent)
        tk.expect("{")
        tk.expect("OFFSET")
        offsets.append([tk.number("OFFSET") for _ in range(3)])
        tk.expect("CHANNELS")
        n = tk.number("CHANNELS")
        if n not in (0, 3, 6):
            raise DataError(
                path,
                f"line {tk.line}: joint {name!r} has {n:g} channels",
                key="CHANNELS",
                expected="0, 3 or 6",
                found=n,
            )
        ch = [tk.next("channel") for _ in range(int(n))]
        for c in ch:
            if c not in _POS + _ROT:
                raise DataError(
                    path,
                    f"line {tk.line}: unknown channel",
                    key=name,
                    expected="X/Y/Z position/rotation",
                    found=c,
                )
        rot = [c for c in ch if c in _ROT]
        if len(rot) not in (0, 3) or len(set(rot)) != len(rot):
            raise DataError(
                path,
                f"joint {name!r}: rotation channels",
                key=name,
                expected="3 distinct axes",
                found=rot,
            )
        channels.append(ch)
        while True:
            t = tk.next("JOINT, End or }")
            if t == "}":
                return
            if t == "JOINT":
                joint(idx)
            elif t == "End":
                tk.expect("Site")
                tk.expect("{")
                tk.expect("OFFSET")
                ends[idx] = np.array([tk.number("End Site OFFSET") for _ in range(3)])
                tk.expect("}")
            else:
                raise DataError(
                    path,
                    f"line {tk.line}: unexpected token",
                    key=name,
                    expected="JOINT, End Site or }",
                    found=t,
                )

    try:
        joint(-1)
    except RecursionError:
        # one Python frame per nesting level; no real skeleton comes near this depth
        raise DataError(
            path, "hierarchy nested too deeply", key="JOINT", found=f"> {len(names)} levels"
        ) from None
    seen: set[str] = set()
    for n in names:
        if n in seen:
            # joints are looked up by name (layouts, retargeting): two with one name is ambiguous
            raise DataError(path, "duplicate joint name", key="JOINT", found=n)
        seen.add(n)
    if not channels[0] or any(c not in channels[0] for c in _POS):
        raise DataError(
            path,
            "root needs position channels",
            key=names[0],
            expected="6 channels",
            found=channels[0],
        )
    tk.expect("MOTION")
    tk.expect("Frames:")
    nf = tk.number("Frames")
    if nf < 0 or nf != int(nf):
        raise DataError(path, "bad frame count", key="Frames", expected="integer >= 0", found=nf)
    nf = int(nf)
    tk.expect("Frame")
    tk.expect("Time:")
    ft = tk.number("Frame Time")
    if ft <= 0:
        raise DataError(path, "frame time must be positive", key="Frame Time", found=ft)
    nc = sum(len(c) for c in channels)
    rest = tk.toks[tk.i :]
    if len(rest) != nf * nc:
        raise DataError(
            path,
            "motion data size",
            key="MOTION",
            expected=f"{nf} frames x {nc} channels = {nf * nc} values",
            found=len(rest),
        )
    try:
        vals = np.array([t for t, _ in rest], dtype=np.float64).reshape(nf, nc)
    except ValueError:
        raise DataError(path, "non-numeric motion value", key="MOTION") from None
    if not np.isfinite(vals).all():
        raise DataError(path, "non-finite motion value", key="MOTION")
    J = len(names)
    rots = np.zeros((nf, J, 3))
    pos = np.zeros((nf, J, 3))
    k = 0
    for j, ch in enumerate(channels):
        r = p = 0
        for c in ch:
            if c in _ROT:
                rots[:, j, r] = vals[:, k]
                r += 1
            else:
                pos[:, j, p] = vals[:, k]
                p += 1
            k += 1
    return BvhMotion(
        names,
        parents,
        np.asarray(offsets, np.float64),
        channels,
        float(ft),
        pos[:, 0].copy(),
        rots,
        ends,
        pos,
    )


def read_bvh(path: str | Path) -> BvhMotion:
    """Read a BVH file. Raises :class:`DataError` naming the file, line and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "BVH file missing") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
    return parse_bvh(text, path)


def format_bvh(m: BvhMotion, newline: str = "\r\n", path=None) -> str:
    """BVH text in SeG's style: 4-space indent, ``%.6f`` values, CRLF, no final newline."""
    lines = ["HIERARCHY"]
    children: dict[int, list[int]] = {}
    for j, p in enumerate(m.parents):
        children.setdefault(p, []).append(j)
    order: list[int] = []
    stack = [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children.get(j, [])))
    if order != list(range(len(m.names))):
        # frame values are written in joint-index order, so it must be the file's DFS order
        raise DataError(
            path,
            "joints must be numbered in depth-first hierarchy order",
            key="parents",
            expected=list(range(len(m.names))),
            found=order,
        )
    f6 = lambda v: f"{v:.6f}"  # noqa: E731

    def emit(j: int, depth: int):
        ind = "    " * depth
        lines.append(f"{ind}{'ROOT' if m.parents[j] < 0 else 'JOINT'} {m.names[j]}")
        lines.append(ind + "{")
        lines.append(f"{ind}    OFFSET {' '.join(f6(v) for v in m.offsets[j])}")
        lines.append(f"{ind}    CHANNELS {len(m.channels[j])} {' '.join(m.channels[j])}".rstrip())
        for c in children.get(j, []):
            emit(c, depth + 1)
        if j in m.end_sites:
            lines.append(f"{ind}    End Site")
            lines.append(f"{ind}    " + "{")
            lines.append(f"{ind}        OFFSET {' '.join(f6(v) for v in m.end_sites[j])}")
            lines.append(f"{ind}    " + "}")
        lines.append(ind + "}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {m.num_frames}", f"Frame Time:   {m.frame_time:.6f}"]
    vals = m.motion_matrix()
    for row in vals:
        lines.append(" ".join(f"{v: .6f}" for v in row))
    return newline.join(lines)


def write_bvh(path: str | Path, m: BvhMotion, newline: str = "\r\n") -> None:
    """Write atomically (see :func:`format_bvh`)."""
    if m.positions is None:
        m = replace(m, positions=np.zeros_like(m.rotations))
    write_bytes_atomic(path, format_bvh(m, newline, path).encode("utf-8"))


def local_matrices(m: BvhMotion) -> np.ndarray:
    """``(T, J, 3, 3)`` local rotation matrices from the Euler channels."""
    from scipy.spatial.transform import Rotation

    out = np.tile(np.eye(3), (m.num_frames, len(m.names), 1, 1))
    for j, order in enumerate(m.rotation_orders):
        if order:
            out[:, j] = Rotation.from_euler(
                order.upper(), m.rotations[:, j], degrees=True
            ).as_matrix()
    return out


def bvh_forward_kinematics(m: BvhMotion, with_end_sites: bool = False) -> np.ndarray:
    """World joint positions ``(T, J, 3)`` (file units). The root is at its OFFSET plus
    its position channels; other joints at parent + parent rotation @ OFFSET (plus their
    position channels, if any). With ``with_end_sites`` the end sites are appended in
    joint order, ``(T, J + E, 3)``."""
    rot = torch.from_numpy(local_matrices(m))
    parents = list(m.parents)
    off = np.repeat(m.offsets[None], m.num_frames, 0).copy()
    if m.positions is not None:
        off[:, 1:] += m.positions[:, 1:]
    off[:, 0] += m.root_positions
    if with_end_sites and m.end_sites:
        ends = sorted(m.end_sites)
        rot = torch.cat(
            [rot, torch.eye(3, dtype=rot.dtype).expand(m.num_frames, len(ends), 3, 3)], 1
        )
        off = np.concatenate(
            [off, np.stack([np.repeat(m.end_sites[e][None], m.num_frames, 0) for e in ends], 1)], 1
        )
        parents = parents + ends
    return _fk_per_frame_offsets(rot, torch.from_numpy(off), parents).numpy()


def _fk_per_frame_offsets(rot, off, parents):
    glob, pos = [], []
    for j, p in enumerate(parents):
        if p < 0:
            g, x = rot[:, j], off[:, j]
        else:
            g = glob[p] @ rot[:, j]
            x = pos[p] + (glob[p] @ off[:, j].unsqueeze(-1)).squeeze(-1)
        glob.append(g)
        pos.append(x)
    return torch.stack(pos, 1)


def resample_bvh(m: BvhMotion, fps: float) -> BvhMotion:
    """Change the frame rate. An integer ratio (60 -> 30) keeps every k-th frame exactly;
    otherwise root/positions are interpolated linearly and rotations by slerp."""
    from scipy.spatial.transform import Rotation, Slerp

    if not (isinstance(fps, int | float) and np.isfinite(fps) and fps > 0):
        raise DataError(None, "bad target frame rate", key="fps", expected="> 0", found=fps)
    ratio = m.fps / fps
    if abs(ratio - round(ratio)) < 1e-3 and round(ratio) >= 1:
        k = round(ratio)
        pos = None if m.positions is None else m.positions[::k].copy()
        return replace(
            m,
            frame_time=m.frame_time * k,
            root_positions=m.root_positions[::k].copy(),
            rotations=m.rotations[::k].copy(),
            positions=pos,
        )
    t_old = np.arange(m.num_frames) * m.frame_time
    n_new = int(np.floor(t_old[-1] * fps + 1e-9)) + 1
    t_new = np.arange(n_new) / fps
    lin = lambda a: np.stack([np.interp(t_new, t_old, a[:, i]) for i in range(a.shape[1])], 1)  # noqa: E731
    rots = np.zeros((n_new, len(m.names), 3))
    for j, order in enumerate(m.rotation_orders):
        if order:
            r = Rotation.from_euler(order.upper(), m.rotations[:, j], degrees=True)
            rots[:, j] = Slerp(t_old, r)(t_new).as_euler(order.upper(), degrees=True)
    pos = None
    if m.positions is not None:
        pos = lin(m.positions.reshape(m.num_frames, -1)).reshape(n_new, -1, 3)
    return replace(
        m, frame_time=1.0 / fps, root_positions=lin(m.root_positions), rotations=rots, positions=pos
    )


# --- SeG ---------------------------------------------------------------------------------
def seg_skeleton() -> BvhMotion:
    """An empty (0-frame) motion in SeG's exact hierarchy: 51 joints, 13 end sites,
    156 channels, 60 fps. Offsets are plausible centimetres (Y up), not SeG's own."""
    names, parents, offsets, ends = [], [], [], {}

    def add(name, parent, off):
        names.append(name)
        parents.append(parent)
        offsets.append(off)
        return len(names) - 1

    hips = add("Hips", -1, (0.0, 0.0, 0.0))
    chest = add("Chest", hips, (0.0, 10.5, -1.0))
    chest2 = add("Chest2", chest, (0.0, 14.0, 0.5))
    neck = add("Neck", chest2, (0.0, 23.25, 0.0))
    head = add("Head", neck, (0.0, 9.0, 1.5))
    ends[head] = np.array([0.0, 18.0, 0.0])
    for side, sx in (("Left", 1.0), ("Right", -1.0)):
        col = add(f"{side}Collar", chest2, (sx * 3.0, 19.0, 0.0))
        sh = add(f"{side}Shoulder", col, (sx * 13.0, 0.0, 0.0))
        el = add(f"{side}Elbow", sh, (sx * 27.0, 0.0, 0.0))
        wr = add(f"{side}Wrist", el, (sx * 25.0, 0.0, 0.0))
        for f in range(5):
            base = (sx * 3.0, -1.0, 3.0 - f * 1.5) if f else (sx * 2.0, -1.5, 3.0)
            a = add(f"{side}Finger{f}", wr, base)
            b = add(f"{side}Finger{f}1", a, (sx * 3.5, 0.0, 0.0))
            c = add(f"{side}Finger{f}2", b, (sx * 2.5, 0.0, 0.0))
            ends[c] = np.array([sx * 2.0, 0.0, 0.0])
    for side, sx in (("Left", 1.0), ("Right", -1.0)):
        hip = add(f"{side}Hip", hips, (sx * 9.0, -4.0, 0.0))
        knee = add(f"{side}Knee", hip, (0.0, -42.0, 0.0))
        ank = add(f"{side}Ankle", knee, (0.0, -41.0, 0.0))
        toe = add(f"{side}Toe", ank, (0.0, -6.0, 13.0))
        ends[toe] = np.array([0.0, 0.0, 5.0])
    rot = ["Zrotation", "Xrotation", "Yrotation"]
    channels = [list(_POS) + rot] + [list(rot) for _ in names[1:]]
    J = len(names)
    return BvhMotion(
        names,
        parents,
        np.asarray(offsets),
        channels,
        round(1 / 60, 6),
        np.zeros((0, 3)),
        np.zeros((0, J, 3)),
        ends,
        np.zeros((0, J, 3)),
    )

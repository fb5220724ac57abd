"""Body-part layouts, root translation <-> velocity, and per-part normalisation.

BEAT2 (GestureLSM): the full pose is 55 SMPL-X joints in 6D, ``(T, 330)``, joint j at
channels ``[6j, 6j+6)``. Parts: upper 13 joints (78), hands 30 joints (180), lower 9 joints
plus the 3-d root velocity ``trans_v`` (57), face = 100 FLAME expression coefficients
(raw, not rotations). Joints 22-24 (jaw, eyes) belong to no part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._io import atomic_path
from .errors import DataError

BEAT2_UPPER = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
BEAT2_HANDS = tuple(range(25, 55))
BEAT2_LOWER = (0, 1, 2, 4, 5, 7, 8, 10, 11)

# SeG: joint order of the BVH hierarchy (51 joints); fingers are the hands part.
SEG_JOINTS = (
    ["Hips", "Chest", "Chest2", "Neck", "Head", "LeftCollar", "LeftShoulder", "LeftElbow"]
    + ["LeftWrist"]
    + [f"LeftFinger{i}{s}" for i in range(5) for s in ("", "1", "2")]
    + ["RightCollar", "RightShoulder", "RightElbow", "RightWrist"]
    + [f"RightFinger{i}{s}" for i in range(5) for s in ("", "1", "2")]
    + ["LeftHip", "LeftKnee", "LeftAnkle", "LeftToe", "RightHip", "RightKnee", "RightAnkle"]
    + ["RightToe"]
)
SEG_HANDS = tuple(i for i, n in enumerate(SEG_JOINTS) if "Finger" in n)
SEG_BODY = tuple(i for i, n in enumerate(SEG_JOINTS) if "Finger" not in n)


@dataclass(frozen=True)
class PartSpec:
    """One part: ``joints`` (indices into the full skeleton, each ``rot_dim`` channels),
    plus ``extra`` raw channels appended after them (``"trans_v"`` 3, ``"face"`` 100)."""

    joints: tuple[int, ...] = ()
    rot_dim: int = 6
    extra: str | None = None
    extra_dim: int = 0

    @property
    def dim(self) -> int:
        return len(self.joints) * self.rot_dim + self.extra_dim


@dataclass(frozen=True)
class MergedPose:
    """Output of :meth:`BodyPartLayout.merge`: full rotations ``(..., J*rot_dim)`` and the
    extra streams (``None`` when no part carried them)."""

    rot: Tensor
    trans_v: Tensor | None
    face: Tensor | None


@dataclass(frozen=True)
class BodyPartLayout:
    """Which channels of a full pose vector belong to which part."""

    name: str
    num_joints: int
    parts: dict[str, PartSpec] = field(default_factory=dict)
    rot_dim: int = 6

    @classmethod
    def beat2(cls) -> BodyPartLayout:
        """GestureLSM's split: upper 78, hands 180, lower 57 (54 + trans_v), face 100."""
        return cls(
            "beat2",
            55,
            {
                "upper": PartSpec(BEAT2_UPPER),
                "hands": PartSpec(BEAT2_HANDS),
                "lower": PartSpec(BEAT2_LOWER, extra="trans_v", extra_dim=3),
                "face": PartSpec((), extra="face", extra_dim=100),
            },
        )

    @classmethod
    def seg(cls) -> BodyPartLayout:
        """SeG's body/hands split over the 51 BVH joints (6D per joint)."""
        return cls("seg", 51, {"body": PartSpec(SEG_BODY), "hands": PartSpec(SEG_HANDS)})

    @classmethod
    def humanml3d(cls) -> BodyPartLayout:
        """HumanML3D's 22-joint skeleton as one part."""
        return cls("humanml3d", 22, {"body": PartSpec(tuple(range(22)))})

    @property
    def dims(self) -> dict[str, int]:
        return {k: p.dim for k, p in self.parts.items()}

    def channels(self, part: str) -> np.ndarray:
        """Indices of a part's rotation channels in the full ``(J*rot_dim)`` vector."""
        j = np.asarray(self.parts[part].joints, dtype=np.int64)
        return (j[:, None] * self.rot_dim + np.arange(self.rot_dim)).reshape(-1)

    def split(
        self, rot: Tensor, trans_v: Tensor | None = None, face: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Full ``rot (..., J*rot_dim)`` (+ ``trans_v (..., 3)``, ``face (..., 100)``) ->
        ``{part: (..., dim)}``. Parts whose extra stream is not given are skipped."""
        rot = torch.as_tensor(rot)
        want = self.num_joints * self.rot_dim
        if rot.shape[-1] != want:
            raise ValueError(f"{self.name}: rotations need {want} channels, got {rot.shape[-1]}")
        out = {}
        extras = {"trans_v": trans_v, "face": face}
        for name, spec in self.parts.items():
            pieces = []
            if spec.joints:
                pieces.append(rot[..., torch.as_tensor(self.channels(name), device=rot.device)])
            if spec.extra:
                x = extras.get(spec.extra)
                if x is None:
                    continue
                x = torch.as_tensor(x, dtype=rot.dtype, device=rot.device)
                if x.shape[-1] != spec.extra_dim:
                    raise ValueError(
                        f"{name}: {spec.extra} needs {spec.extra_dim} channels, got {x.shape[-1]}"
                    )
                pieces.append(x)
            out[name] = torch.cat(pieces, dim=-1)
        return out

    def merge(self, parts: dict[str, Tensor], base: Tensor | None = None) -> MergedPose:
        """Inverse of :meth:`split`. Joints in no given part come from ``base``
        ``(..., J*rot_dim)`` or, without it, the identity rotation."""
        first = next(iter(parts.values()))
        lead = first.shape[:-1]
        if base is not None:
            rot = torch.as_tensor(base, dtype=first.dtype, device=first.device).clone()
        else:
            eye = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=first.dtype, device=first.device)
            if self.rot_dim != 6:
                eye = torch.zeros(self.rot_dim, dtype=first.dtype, device=first.device)
            rot = eye.repeat(self.num_joints).expand(*lead, -1).clone()
        trans_v = face = None
        for name, x in parts.items():
            spec = self.parts[name]
            if x.shape[-1] != spec.dim:
                raise ValueError(f"{name}: expected {spec.dim} channels, got {x.shape[-1]}")
            nrot = len(spec.joints) * self.rot_dim
            if nrot:
                rot[..., torch.as_tensor(self.channels(name), device=x.device)] = x[..., :nrot]
            if spec.extra == "trans_v":
                trans_v = x[..., nrot:]
            elif spec.extra == "face":
                face = x[..., nrot:]
        return MergedPose(rot, trans_v, face)


def trans_to_velocity(trans: Tensor) -> Tensor:
    """Root translation ``(..., T, 3)`` -> GestureLSM ``trans_v (..., T, 3)``: x and z are
    frame differences (frame 0 copies frame 1, so there is no artificial zero), y stays
    absolute height."""
    trans = torch.as_tensor(trans)
    v = trans.clone()
    d = trans[..., 1:, :] - trans[..., :-1, :]
    v[..., 1:, 0] = d[..., 0]
    v[..., 1:, 2] = d[..., 2]
    if trans.shape[-2] > 1:
        v[..., 0, 0] = v[..., 1, 0]
        v[..., 0, 2] = v[..., 1, 2]
    else:
        v[..., 0, 0] = 0
        v[..., 0, 2] = 0
    return v


def velocity_to_trans(trans_v: Tensor, init_xz: Tensor | None = None) -> Tensor:
    """Inverse of :func:`trans_to_velocity`: x/z are ``init + cumsum`` of the differences from
    frame 1 on (frame 0's copy is ignored), y is taken as is. ``init_xz (..., 2)`` defaults
    to zero, i.e. the motion starts at the origin on the ground plane."""
    trans_v = torch.as_tensor(trans_v)
    out = trans_v.clone()
    steps = trans_v[..., :, [0, 2]].clone()
    steps[..., 0, :] = 0
    xz = torch.cumsum(steps, dim=-2)
    if init_xz is not None:
        xz = xz + torch.as_tensor(init_xz, dtype=xz.dtype).unsqueeze(-2)
    out[..., 0] = xz[..., 0]
    out[..., 2] = xz[..., 1]
    return out


def _checked_stats(path, part: str, mean, std) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, a in (("mean", mean), ("std", std)):
        a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a)
        if a.dtype.kind not in "fiu":
            raise DataError(path, "not real numbers", key=f"{part}/{name}", found=a.dtype)
        if a.ndim != 1 or a.size == 0:
            raise DataError(
                path, "wrong shape", key=f"{part}/{name}", expected="(C,)", found=a.shape
            )
        a = a.astype(np.float32)
        bad = ~np.isfinite(a) | ((a <= 0) if name == "std" else False)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                path,
                f"channel {i}",
                key=f"{part}/{name}",
                expected="finite" + (" and > 0" if name == "std" else ""),
                found=float(a[i]),
            )
        out.append(a)
    if out[0].shape != out[1].shape:
        raise DataError(
            path, "mean and std lengths differ", key=part, expected=out[0].shape, found=out[1].shape
        )
    return out[0], out[1]


class Normalizer:
    """Per-part z-score: ``(x - mean) / std``. Parts with no statistics pass through
    (GestureLSM leaves the face unnormalised)."""

    def __init__(
        self,
        stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        eps=1e-8,
        *,
        path: str | Path | None = None,
    ):
        # a NaN, zero or negative std turns every generated frame into NaN or a frozen pose
        # without an error downstream, so statistics are checked once, here
        if not (isinstance(eps, int | float) and np.isfinite(eps) and eps >= 0):
            raise DataError(path, "bad eps", key="__meta__", expected=">= 0", found=eps)
        self.stats = {k: _checked_stats(path, k, m, s) for k, (m, s) in (stats or {}).items()}
        self.eps = eps

    @classmethod
    def fit(cls, data: dict[str, np.ndarray | Tensor], min_std: float = 1e-4) -> Normalizer:
        """Fit from ``{part: (..., C)}`` arrays (all leading dims are pooled). Stds below
        ``min_std`` are clamped so constant channels do not explode."""
        stats = {}
        for k, x in data.items():
            x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, np.float64)
            x = x.reshape(-1, x.shape[-1])
            stats[k] = (x.mean(0), np.maximum(x.std(0), min_std))
        return cls(stats)

    @classmethod
    def from_beat2(cls, mean_std_dir: str | Path, layout: BodyPartLayout | None = None):
        """Read BEAT2's published ``beatx_2_330_{mean,std}.npy`` and
        ``beatx_2_trans_{mean,std}.npy`` and slice them per part as GestureLSM does."""
        layout = layout or BodyPartLayout.beat2()
        d = Path(mean_std_dir)
        arrs = {}
        for name, shape in [
            ("beatx_2_330_mean", (330,)),
            ("beatx_2_330_std", (330,)),
            ("beatx_2_trans_mean", (3,)),
            ("beatx_2_trans_std", (3,)),
        ]:
            p = d / f"{name}.npy"
            try:
                a = np.load(p, allow_pickle=False)
            except FileNotFoundError:
                raise DataError(p, "normalisation file missing") from None
            except (ValueError, OSError, EOFError) as e:
                raise DataError(p, f"cannot read npy: {e}") from None
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu" or a.shape != shape:
                found = getattr(a, "shape", type(a).__name__)
                raise DataError(p, "wrong shape or type", key=name, expected=shape, found=found)
            a = a.astype(np.float32)
            bad = ~np.isfinite(a) | ((a <= 0) if name.endswith("std") else False)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    p, f"bad value at channel {i}", key=name, expected="finite, std > 0", found=a[i]
                )
            arrs[name] = a
        stats = {}
        for part, spec in layout.parts.items():
            if not spec.joints:
                continue
            ch = layout.channels(part)
            m, s = arrs["beatx_2_330_mean"][ch], arrs["beatx_2_330_std"][ch]
            if spec.extra == "trans_v":
                m = np.concatenate([m, arrs["beatx_2_trans_mean"]])
                s = np.concatenate([s, arrs["beatx_2_trans_std"]])
            stats[part] = (m, s)
        return cls(stats)

    def _ms(self, part: str, x: Tensor):
        m, s = self.stats[part]
        if x.shape[-1] != m.shape[0]:
            raise ValueError(f"{part}: normaliser has {m.shape[0]} channels, input {x.shape[-1]}")
        return (
            torch.as_tensor(m, dtype=x.dtype, device=x.device),
            torch.as_tensor(s, dtype=x.dtype, device=x.device),
        )

    def normalize(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k, x in parts.items():
            x = torch.as_tensor(x)
            if k in self.stats:
                m, s = self._ms(k, x)
                x = (x - m) / (s + self.eps)
            out[k] = x
        return out

    def denormalize(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k, x in parts.items():
            x = torch.as_tensor(x)
            if k in self.stats:
                m, s = self._ms(k, x)
                x = x * (s + self.eps) + m
            out[k] = x
        return out

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` with ``<part>/mean`` and ``<part>/std`` (atomic)."""
        arrays = {}
        for k, (m, s) in self.stats.items():
            arrays[f"{k}/mean"] = m
            arrays[f"{k}/std"] = s
        arrays["__meta__"] = np.array(json.dumps({"eps": self.eps}))
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        try:
            with np.load(path, allow_pickle=False) as z:
                files = list(z.files)
                meta = {}
                if "__meta__" in files:
                    try:
                        meta = json.loads(str(z["__meta__"]))
                    except json.JSONDecodeError as e:
                        raise DataError(path, f"not JSON: {e}", key="__meta__") from None
                    if not isinstance(meta, dict):
                        raise DataError(path, "not an object", key="__meta__", found=meta)
                stats = {}
                for key in files:
                    if key.endswith("/mean"):
                        part = key[: -len("/mean")]
                        if f"{part}/std" not in files:
                            raise DataError(path, "std missing for part", key=f"{part}/std")
                        stats[part] = (z[key], z[f"{part}/std"])
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(path, "normaliser file missing") from None
        except Exception as e:
            raise DataError(path, f"cannot read normaliser: {e}") from None
        return cls(stats, eps=meta.get("eps", 1e-8), path=path)

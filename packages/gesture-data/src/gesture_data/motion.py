"""SMPL-X motion in BEAT2's layout, and its ``.npz`` file (BEAT2's ``smplxflame_30`` format).

Every tool that reads or writes motion (training data, generation outputs, evaluation inputs)
goes through :func:`read_beat2_npz` / :func:`write_beat2_npz`, so a file one writes the others
read, and a bad file fails with its path and the offending key named.

Example::

    motion = Motion(poses=np.zeros((90, 165), np.float32))  # 3 s at 30 fps, rest pose
    write_beat2_npz("out.npz", motion)
    read_beat2_npz("out.npz").poses.shape  # (90, 165)
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .errors import DataError

FPS = 30
NUM_POSE = 165  # 55 SMPL-X joints x 3 axis-angle components
NUM_EXPRESSIONS = 100  # FLAME expression coefficients
NUM_BETAS = 300  # BEAT2 stores SMPL-X shape coefficients at this length
# the frame-aligned arrays of the file and their widths
FRAME_KEYS = {"poses": NUM_POSE, "trans": 3, "expressions": NUM_EXPRESSIONS}
BEAT2_KEYS = ("poses", "trans", "expressions", "betas")


class MotionFileError(DataError):
    """A motion ``.npz`` is missing, unreadable or holds the wrong arrays; the message names
    the file and the key (a :class:`DataError`, hence a ``ValueError``)."""


@dataclass
class Motion:
    """Motion in BEAT2's SMPL-X layout.

    Attributes:
        poses: ``(T, 165)`` axis-angle rotations of the 55 SMPL-X joints (radians).
        trans: ``(T, 3)`` root translation in metres, Y up; zeros when not given.
        expressions: ``(T, 100)`` FLAME expression coefficients; zeros when not given.
        fps: frames per second (BEAT2: 30).
        betas: ``(300,)`` SMPL-X shape coefficients, or ``None`` (written as zeros).
    """

    poses: np.ndarray
    trans: np.ndarray | None = None
    expressions: np.ndarray | None = None
    fps: float = FPS
    betas: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.poses = np.asarray(self.poses)
        T = self.poses.shape[0] if self.poses.ndim == 2 else -1
        if T < 0 or self.poses.shape[1] != NUM_POSE:
            raise MotionFileError(
                None, "wrong shape", key="poses", expected=("T", NUM_POSE), found=self.poses.shape
            )
        if self.trans is None:
            self.trans = np.zeros((T, 3), np.float32)
        if self.expressions is None:
            self.expressions = np.zeros((T, NUM_EXPRESSIONS), np.float32)
        self.trans, self.expressions = np.asarray(self.trans), np.asarray(self.expressions)
        for key in ("trans", "expressions"):
            a = getattr(self, key)
            if a.shape != (T, FRAME_KEYS[key]):
                raise MotionFileError(
                    None, "wrong shape", key=key, expected=(T, FRAME_KEYS[key]), found=a.shape
                )
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MotionFileError(None, "bad frame rate", key="fps", expected="> 0", found=self.fps)

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])


def read_beat2_npz(path: str | Path, *, required: Iterable[str] = ("poses",)) -> Motion:
    """Read a BEAT2 ``.npz`` (no pickles) into a :class:`Motion` of float32 arrays.

    Args:
        path: the file.
        required: keys that must be present. ``poses`` always is; a method's output often
            carries nothing else, so by default ``trans`` / ``expressions`` may be absent
            (they become zeros) and ``mocap_frame_rate`` defaults to 30. Pass
            :data:`BEAT2_KEYS` for BEAT2's own data files.

    Raises:
        MotionFileError: naming the file and key: missing file or key, unreadable archive,
            non-numeric array, wrong shape (every frame array must have the ``poses``' T),
            non-finite value (with the first bad frame), empty motion, bad frame rate.
    """
    arrays, fps = read_arrays(path, {"poses", *required})
    return Motion(
        poses=arrays["poses"],
        trans=arrays.get("trans"),
        expressions=arrays.get("expressions"),
        fps=fps,
        betas=arrays.get("betas"),
    )


def read_arrays(path: str | Path, required: Iterable[str]) -> tuple[dict[str, np.ndarray], float]:
    """The checked arrays of a BEAT2 npz: ``({key: float32 array}, fps)`` holding every key of
    :data:`BEAT2_KEYS` present in the file; see :func:`read_beat2_npz` for the checks."""
    path = Path(path)
    required = set(required)
    if not required <= set(BEAT2_KEYS):
        raise ValueError(f"required: expected keys from {BEAT2_KEYS}, found {sorted(required)}")
    if not path.is_file():
        raise MotionFileError(path, "motion file missing")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise MotionFileError(path, f"corrupt or truncated npz: {type(e).__name__}: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy under an .npz name
        raise MotionFileError(path, "not an npz archive", expected="npz", found=type(z).__name__)
    try:
        with z:
            files = set(z.files)
            for key in (k for k in BEAT2_KEYS if k in required):  # the first missing one
                if key not in files:
                    raise MotionFileError(
                        path, "key missing", key=key, expected="present", found=sorted(files)
                    )
            out = {k: _real_array(path, k, z[k]) for k in BEAT2_KEYS if k in files}
            fps = _frame_rate(path, z["mocap_frame_rate"]) if "mocap_frame_rate" in files else 30.0
    except MotionFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # a member truncated or corrupt inside an archive whose directory was readable
        raise MotionFileError(path, f"corrupt or truncated npz: {type(e).__name__}: {e}") from None
    poses = out["poses"]
    T = poses.shape[0] if poses.ndim == 2 else -1
    if T == 0:  # before the other arrays are measured against it
        raise MotionFileError(path, "empty motion", key="poses", expected="T > 0", found=0)
    for key, width in FRAME_KEYS.items():
        if key not in out:
            continue
        a = out[key]
        if a.ndim != 2 or a.shape[1] != width or a.shape[0] != T:
            raise MotionFileError(
                path,
                "wrong shape",
                key=key,
                expected=f"({T if T >= 0 else 'T'}, {width})",
                found=a.shape,
            )
        if not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
            raise MotionFileError(path, f"non-finite values (first at frame {bad})", key=key)
        out[key] = a.astype(np.float32)
    if "betas" in out:
        betas = out["betas"].reshape(-1)
        if betas.size == 0 or not np.isfinite(betas).all():
            raise MotionFileError(
                path, "empty or non-finite body shape", key="betas", expected="finite values"
            )
        out["betas"] = betas.astype(np.float32)
    return out, fps


def write_beat2_npz(path: str | Path, motion: Motion) -> Path:
    """Write ``motion`` in BEAT2's ``smplxflame_30`` layout, atomically.

    The arrays go to a temporary name in the same folder which is then ``os.replace``-d onto
    ``path``, so a reader never sees half a file; the file gets the user's umask (0644 under
    umask 022). Keys: ``poses`` float32, ``trans`` / ``expressions`` float64 (as BEAT2),
    ``betas`` (300,), ``model``, ``gender``, ``mocap_frame_rate``.

    Raises:
        MotionFileError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise MotionFileError(path, "is a folder; give a .npz file name")
    betas = np.zeros(NUM_BETAS, np.float32) if motion.betas is None else motion.betas
    fps = float(motion.fps)
    arrays = {
        "poses": np.asarray(motion.poses, np.float32),
        "trans": np.asarray(motion.trans, np.float64),
        "expressions": np.asarray(motion.expressions, np.float64),
        "betas": np.asarray(betas, np.float32),
        "model": np.array("smplx2020"),
        "gender": np.array("neutral"),
        # BEAT2 stores an integer rate; a fractional one (e.g. 29.97) is kept as a float
        "mocap_frame_rate": np.array(fps, np.int32 if fps.is_integer() else np.float32),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # a file object: np.savez would append ".npz" to a name
    return path


def _real_array(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    # strings, objects and complex numbers would otherwise pass through astype(float32)
    # (complex silently drops the imaginary part) or fail deep inside numpy
    if a.dtype.kind not in "fiu":
        raise MotionFileError(
            path, "not real numbers", key=key, expected="float array", found=a.dtype
        )
    return a


def _frame_rate(path: Path, a: np.ndarray) -> float:
    a = _real_array(path, "mocap_frame_rate", a)
    if a.size != 1:
        raise MotionFileError(
            path, "not a scalar", key="mocap_frame_rate", expected="one value", found=a.shape
        )
    fps = float(a.reshape(()))
    if not np.isfinite(fps) or fps <= 0:
        raise MotionFileError(
            path, "bad frame rate", key="mocap_frame_rate", expected="> 0", found=fps
        )
    return fps

"""Pairs of generated and ground-truth BEAT2 npz files, read and checked."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS = ("evaltools", "cvpr24")


NUM_POSE = 165  # SMPL-X axis-angle, 55 joints


class MotionFileError(ValueError):
    """A BEAT2 npz is missing, unreadable or holds the wrong arrays (names file and field)."""


@dataclass
class Pair:
    """One test sequence: prediction, ground truth and (optionally) its speech."""

    stem: str
    pred: Path
    gt: Path
    audio: Path | None = None


def read_motion_npz(path: str | Path) -> dict[str, np.ndarray | float | None]:
    """BEAT2 npz -> ``{"poses" (T, 165) float32, "trans" (T, 3) float32 or None, "fps"}``.

    Only ``poses`` is required (a method's output may carry nothing else); ``trans``, if
    present, must match it. Raises :class:`MotionFileError` naming the file and field.
    """
    path = Path(path)
    if not path.is_file():
        raise MotionFileError(f"{path}: motion file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "poses" not in z.files:
                raise MotionFileError(f"{path}: no 'poses' array (found {sorted(z.files)})")
            poses = z["poses"]
            trans = z["trans"] if "trans" in z.files else None
            fps = (
                _frame_rate(path, z["mocap_frame_rate"]) if "mocap_frame_rate" in z.files else 30.0
            )
    except MotionFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise MotionFileError(f"{path}: not a readable npz ({type(e).__name__}: {e})") from None
    if poses.ndim != 2 or poses.shape[1] != NUM_POSE or poses.shape[0] == 0:
        raise MotionFileError(f"{path}: 'poses' must be (T, {NUM_POSE}), found {poses.shape}")
    _check_finite(path, "poses", poses)
    if trans is not None:
        if trans.shape != (poses.shape[0], 3):
            raise MotionFileError(
                f"{path}: 'trans' must be ({poses.shape[0]}, 3) like 'poses', found {trans.shape}"
            )
        _check_finite(path, "trans", trans)
        trans = trans.astype(np.float32)
    if not (np.isfinite(fps) and fps > 0):
        raise MotionFileError(f"{path}: 'mocap_frame_rate' must be positive, found {fps}")
    return {"poses": poses.astype(np.float32), "trans": trans, "fps": fps}


def _frame_rate(path: Path, a: np.ndarray) -> float:
    """BEAT2 stores ``mocap_frame_rate`` as one number; anything else is named, not cast."""
    if a.size != 1 or not np.issubdtype(a.dtype, np.number):
        raise MotionFileError(
            f"{path}: 'mocap_frame_rate' must be one number, found {a.dtype} of shape {a.shape}"
        )
    return float(a.reshape(()))


def _check_finite(path: Path, key: str, a: np.ndarray) -> None:
    if not np.issubdtype(a.dtype, np.number):
        raise MotionFileError(f"{path}: '{key}' must be numeric, found dtype {a.dtype}")
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1))[0])
        raise MotionFileError(f"{path}: '{key}' has non-finite values (first at frame {bad})")


def pair_files(pred: str | Path, gt: str | Path, audio: str | Path | None = None) -> list[Pair]:
    """Match predictions to ground truth (and speech) by file name stem.

    Each of ``pred`` / ``gt`` is an ``.npz`` file or a folder of them; ``audio`` a ``.wav`` or a
    folder of them. Two files pair with each other whatever their names; a folder must hold a
    file for every stem of the other side.
    """
    from gesture_apps.errors import CLIError

    pred, gt = Path(pred), Path(gt)
    preds = _npz_files(pred, "--pred")
    gts = _npz_files(gt, "--gt")
    if pred.is_file() and gt.is_file():
        pairs = [Pair(pred.stem, pred, gt)]
    elif pred.is_file() or gt.is_file():  # one file scored against its namesake in a folder
        stem, folder = (pred.stem, gt) if pred.is_file() else (gt.stem, pred)
        if stem not in preds or stem not in gts:
            raise CLIError(f"{folder / (stem + '.npz')}: not found (no pair for {stem!r})")
        pairs = [Pair(stem, preds[stem], gts[stem])]
    else:
        for a, b, b_dir, what in (
            (preds, gts, gt, "ground truth"),
            (gts, preds, pred, "prediction"),
        ):
            missing = sorted(set(a) - set(b))
            if missing:
                raise CLIError(
                    f"{b_dir / (missing[0] + '.npz')}: not found (no {what} for "
                    f"{a[missing[0]]}; {len(missing)} unpaired)"
                )
        pairs = [Pair(s, preds[s], gts[s]) for s in sorted(preds)]
    if audio is not None:
        audio = Path(audio)
        if audio.is_dir():
            for p in pairs:
                p.audio = audio / f"{p.gt.stem}.wav"
                if not p.audio.is_file():
                    raise CLIError(f"{p.audio}: not found (audio for {p.stem!r})")
        elif audio.is_file():
            if len(pairs) != 1:
                raise CLIError(
                    f"--audio {audio}: one wav for {len(pairs)} sequences; give a folder of "
                    "wavs named like the npz files"
                )
            pairs[0].audio = audio
        else:
            raise CLIError(f"{audio}: audio file or folder not found")
    return pairs


def _npz_files(path: Path, flag: str) -> dict[str, Path]:
    from gesture_apps.errors import CLIError

    if path.is_dir():
        files = {f.stem: f for f in sorted(path.glob("*.npz"))}
        if not files:
            raise CLIError(f"{flag} {path}: folder holds no .npz files")
        return files
    if not path.exists():
        raise CLIError(f"{path}: {flag} file or folder not found")
    if path.suffix.lower() != ".npz":
        raise CLIError(f"{flag} {path}: expected a .npz file or a folder of them")
    return {path.stem: path}

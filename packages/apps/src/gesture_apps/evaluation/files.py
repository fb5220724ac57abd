"""Pairs of generated and ground-truth BEAT2 npz files, read and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_data.motion import read_arrays


@dataclass
class Pair:
    """One test sequence: prediction, ground truth and (optionally) its speech."""

    stem: str
    pred: Path
    gt: Path
    audio: Path | None = None


def read_motion_npz(path: str | Path) -> dict[str, np.ndarray | float | None]:
    """BEAT2 npz -> ``{"poses" (T, 165) float32, "trans" (T, 3) float32 or None, "fps"}``.

    Only ``poses`` is required (a method's output may carry nothing else); ``trans`` is None
    when the file has none (evaluation then scores the pose alone). Checked by
    :func:`gesture_data.motion.read_arrays`: :class:`MotionFileError` names the file and key.
    """
    arrays, fps = read_arrays(path, ("poses",))
    return {"poses": arrays["poses"], "trans": arrays.get("trans"), "fps": fps}


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

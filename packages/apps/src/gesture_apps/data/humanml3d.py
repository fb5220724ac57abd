"""HumanML3D-layout folders (HumanML3D itself, KTubeUM) as training data.

A folder holds ``new_joint_vecs/<id>.npy`` ``(T, 263)`` features at 20 fps, ``Mean.npy`` /
``Std.npy`` ``(263,)``, ``texts/<id>.txt`` caption lines and split files (``train.txt``...).
Motion is z-scored with the folder's own Mean/Std, as T2M-GPT's loaders do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError

MOTION = "motion"  # the batch key of the 263-d features (the tokenizer's one "part")


@dataclass
class Clip:
    """One clip of a split: normalised features ``(T, 263)`` and its caption strings."""

    clip_id: str
    motion: np.ndarray
    captions: list[str]


def open_reader(root: str | Path):
    """A ``HumanML3DReader`` of ``root``; ``ConfigError`` for a missing folder or statistics."""
    from gesture_data.datasets.humanml3d import HumanML3DReader

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{root}: HumanML3D data folder not found")
    reader = HumanML3DReader(root)  # DataError for corrupt Mean/Std
    if reader.mean is None:
        raise ConfigError(f"{root / 'Mean.npy'}: missing (the folder's Mean.npy/Std.npy)")
    return reader


def load_clips(
    root: str | Path, split: str = "train", *, min_frames: int = 1, captions: bool = True
) -> list[Clip]:
    """Every clip of ``split`` with at least ``min_frames`` frames, normalised with the
    folder's Mean/Std (shorter clips are skipped, as T2M-GPT's loaders skip them)."""
    reader = open_reader(root)
    clips = []
    for cid in reader.ids(split):
        feats = reader.features(cid)  # DataError naming the file for corrupt arrays
        if len(feats) < min_frames:
            continue
        norm = ((feats - reader.mean) / reader.std).astype(np.float32)
        texts = [c.caption for c in reader.texts(cid)] if captions else []
        clips.append(Clip(cid, norm, texts))
    if not clips:
        raise ConfigError(
            f"{reader.root}: no clip of split {split!r} has {min_frames} or more frames"
        )
    return clips


class MotionWindows(Dataset):
    """Windows of ``pose_length`` frames every ``stride`` frames over every clip of a split:
    item ``{"motion": (pose_length, 263)}`` normalised (T2M-GPT's VQ-VAE training data; it
    crops one random window per clip and step, we enumerate them so items are a pure function
    of the index, as the trainer's exact resume needs)."""

    def __init__(self, clips: list[Clip], pose_length: int, stride: int):
        self.clips = clips
        self.pose_length = pose_length
        self.index = [
            (c, s)
            for c, clip in enumerate(clips)
            for s in range(0, len(clip.motion) - pose_length + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, s = self.index[i]
        return {MOTION: torch.from_numpy(self.clips[c].motion[s : s + self.pose_length])}

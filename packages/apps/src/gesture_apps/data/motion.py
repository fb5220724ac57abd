"""Generated motion on screen: stick-figure video and approximate SMPL-X joints.

:class:`Motion` and the BEAT2 npz reader/writer live in :mod:`gesture_data.motion`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gesture_apps.data.speech import SAMPLE_RATE
from gesture_apps.errors import GenerationError
from gesture_data.motion import Motion, write_beat2_npz


def render_video(
    path: str | Path, motion: Motion, audio: np.ndarray | None = None, size: int = 320
) -> Path:
    """Stick-figure video of ``motion`` (SMPL-X joints from an approximate rest skeleton),
    ``.mp4`` with the speech muxed in, or ``.gif``; written atomically."""
    from gesture_data.render import render_motion

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise GenerationError(f"{path}: expected a .mp4 or .gif file name")
    joints = joints_approx(motion.poses, motion.trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    return render_motion(
        joints,
        path,
        fps=motion.fps,
        audio=audio,
        sample_rate=SAMPLE_RATE,
        titles=["generated"],
        size=(size, size),
    )


def joints_approx(poses: np.ndarray, trans: np.ndarray | None = None) -> np.ndarray:
    """``(T, 55, 3)`` float32 SMPL-X joints of ``(T, 165)`` axis-angle poses (+ ``(T, 3)``
    translation) on gesture_data's approximate rest skeleton: no SMPL-X model file needed."""
    from gesture_data.skeleton import smplx_joints_approx

    t = None if trans is None else torch.from_numpy(np.asarray(trans, np.float64))
    j = smplx_joints_approx(torch.from_numpy(np.asarray(poses, np.float64)), t)
    return np.asarray(j, np.float32)


__all__ = ["Motion", "joints_approx", "render_video", "write_beat2_npz"]

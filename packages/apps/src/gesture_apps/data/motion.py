"""Generated motion: the BEAT2 npz layout, rendering and joint helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gesture_apps.data.speech import FPS, SAMPLE_RATE
from gesture_apps.errors import GenerationError
from motion_tokenizers.io import atomic_write


@dataclass
class Motion:
    """Generated motion in BEAT2's SMPL-X layout at ``fps``."""

    poses: np.ndarray  # (T, 165) float32 axis-angle, 55 joints
    trans: np.ndarray  # (T, 3) metres, Y up
    expressions: np.ndarray  # (T, 100) FLAME coefficients (zeros unless the face is generated)
    fps: int = FPS

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])


def write_beat2_npz(path: str | Path, motion: Motion) -> Path:
    """BEAT2's ``smplxflame_30`` npz layout, written to a temporary file then renamed."""
    path = Path(path)
    if path.is_dir():
        raise GenerationError(f"{path}: is a folder; give a .npz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "poses": np.asarray(motion.poses, np.float32),
        "trans": np.asarray(motion.trans, np.float64),
        "expressions": np.asarray(motion.expressions, np.float64),
        "betas": np.zeros(300, np.float32),
        "model": np.array("smplx2020"),
        "gender": np.array("neutral"),
        "mocap_frame_rate": np.array(motion.fps, np.int32),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)

    atomic_write(path, write)  # keeps the umask's mode (mkstemp would leave 0600)
    return path


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


def mean_joint_speed(joints: list[np.ndarray], fps: float = FPS) -> np.ndarray:
    """Per-joint mean speed ``(J,)`` over sequences of ``(T, J, 3)`` joints: BC's speed
    normaliser when BEAT2's ``mean_vel`` file does not apply."""
    from gesture_eval.beat import joint_speed

    speeds = np.concatenate([joint_speed(j, fps) for j in joints])
    return np.maximum(speeds.mean(axis=0), 1e-6)

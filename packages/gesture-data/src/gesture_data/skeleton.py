"""Kinematic trees and forward kinematics.

``smplx_joints_approx`` gives SMPL-X joint positions without the (licensed) body model,
from a fixed approximate neutral rest skeleton. It is good for rendering, beat metrics and
tests; use :func:`gesture_data.datasets.smplx_model.smplx_joints` with a real model file for
exact joints.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .rotations import axis_angle_to_matrix

# SMPL-X kintree (55 joints): body 0-21, jaw 22, eyes 23-24, left hand 25-39, right 40-54
# (each hand: index, middle, pinky, ring, thumb; 3 joints each).
# fmt: off
SMPLX_PARENTS = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
]
# fmt: on
SMPLX_NAMES = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "jaw",
    "left_eye_smplhf",
    "right_eye_smplhf",
] + [
    f"{side}_{f}{i}"
    for side in ("left", "right")
    for f in ("index", "middle", "pinky", "ring", "thumb")
    for i in (1, 2, 3)
]


def _rest_smplx() -> np.ndarray:
    """Approximate neutral SMPL-X rest joint positions (m): x left, y up, z forward."""
    body = {
        0: (0, 0, 0),
        1: (0.06, -0.09, 0),
        2: (-0.06, -0.09, 0),
        3: (0, 0.11, -0.02),
        4: (0.10, -0.47, 0),
        5: (-0.10, -0.47, 0),
        6: (0, 0.25, -0.01),
        7: (0.09, -0.87, -0.04),
        8: (-0.09, -0.87, -0.04),
        9: (0, 0.30, 0.01),
        10: (0.12, -0.92, 0.08),
        11: (-0.12, -0.92, 0.08),
        12: (0, 0.51, -0.02),
        13: (0.07, 0.42, -0.01),
        14: (-0.07, 0.42, -0.01),
        15: (0, 0.61, 0.03),
        16: (0.17, 0.45, -0.02),
        17: (-0.17, 0.45, -0.02),
        18: (0.42, 0.43, -0.04),
        19: (-0.42, 0.43, -0.04),
        20: (0.67, 0.44, -0.04),
        21: (-0.67, 0.44, -0.04),
        22: (0, 0.58, 0.05),
        23: (0.03, 0.65, 0.09),
        24: (-0.03, 0.65, 0.09),
    }
    pos = np.zeros((55, 3))
    for j, p in body.items():
        pos[j] = p
    # finger bases relative to the wrist (left hand; mirrored in x for the right)
    bases = {
        "index": (0.09, 0, 0.025),
        "middle": (0.095, 0, 0.0),
        "pinky": (0.08, 0, -0.04),
        "ring": (0.09, 0, -0.02),
        "thumb": (0.03, -0.01, 0.035),
    }
    step = {
        "index": (0.03, 0, 0),
        "middle": (0.032, 0, 0),
        "pinky": (0.022, 0, 0),
        "ring": (0.03, 0, 0),
        "thumb": (0.02, -0.005, 0.02),
    }
    for side, wrist, sx in (("left", 20, 1.0), ("right", 21, -1.0)):
        k = 25 if side == "left" else 40
        for f in ("index", "middle", "pinky", "ring", "thumb"):
            b = np.array(bases[f]) * [sx, 1, 1]
            s = np.array(step[f]) * [sx, 1, 1]
            for i in range(3):
                pos[k] = pos[wrist] + b + i * s
                k += 1
    return pos


SMPLX_REST = _rest_smplx()


def offsets_from_rest(rest: np.ndarray, parents) -> np.ndarray:
    """Parent-relative offsets ``(J, 3)`` from absolute rest positions (root keeps its own)."""
    off = rest.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            off[j] = rest[j] - rest[p]
    return off


def forward_kinematics(
    local_rot: Tensor, offsets: Tensor, parents, root_pos: Tensor | None = None
) -> Tensor:
    """Joint positions ``(..., J, 3)`` from local rotation matrices ``(..., J, 3, 3)``,
    parent-relative ``offsets (J, 3)`` and an optional root translation ``(..., 3)``:
    ``G_j = G_parent R_j``, ``p_j = p_parent + G_parent offset_j``. Parents must precede
    children."""
    local_rot = torch.as_tensor(local_rot)
    offsets = torch.as_tensor(offsets, dtype=local_rot.dtype, device=local_rot.device)
    glob, pos = [], []
    for j, p in enumerate(parents):
        if p < 0:
            g = local_rot[..., j, :, :]
            x = offsets[j].expand(*local_rot.shape[:-3], 3)
            if root_pos is not None:
                x = x + torch.as_tensor(root_pos, dtype=local_rot.dtype)
        else:
            g = glob[p] @ local_rot[..., j, :, :]
            x = pos[p] + (glob[p] @ offsets[j].unsqueeze(-1)).squeeze(-1)
        glob.append(g)
        pos.append(x)
    return torch.stack(pos, dim=-2)


def smplx_joints_approx(poses, trans=None) -> Tensor:
    """``poses (..., 165)`` axis-angle (+ ``trans (..., 3)``) -> approximate joints
    ``(..., 55, 3)`` on the built-in rest skeleton."""
    poses = torch.as_tensor(poses)
    rot = axis_angle_to_matrix(poses.reshape(*poses.shape[:-1], 55, 3))
    off = offsets_from_rest(SMPLX_REST, SMPLX_PARENTS)
    return forward_kinematics(rot, torch.as_tensor(off, dtype=rot.dtype), SMPLX_PARENTS, trans)

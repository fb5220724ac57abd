"""Rotation conversions: axis-angle <-> matrix <-> 6D (the one module that owns them).

6D convention (checked against BEAT2's published statistics): the 6D vector of a rotation
matrix ``R`` is its **first two rows**, ``R[..., :2, :].reshape(..., 6)``, exactly what
pytorch3d's ``matrix_to_rotation_6d`` and GestureLSM do. (DESIGN.md says "columns"; on the
fixture take the row layout reproduces ``beatx_2_330_mean.npy`` to a mean absolute error of
0.033 while the column layout is off by 0.22, so rows it is.) For a pose of J joints the
vector is per-joint contiguous: ``(..., J*6)`` with joint j at ``[6j, 6j+6)``.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_6d",
    "axis_angle_to_matrix",
    "matrix_to_6d",
    "matrix_to_axis_angle",
    "rot6d_to_axis_angle",
    "rot6d_to_matrix",
]


def _as_tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """``(..., 3)`` axis-angle (radians) -> ``(..., 3, 3)`` rotation matrices."""
    return roma.rotvec_to_rotmat(_as_tensor(aa))


def matrix_to_axis_angle(mat: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 3)`` axis-angle with angle in [0, pi]."""
    return roma.rotmat_to_rotvec(_as_tensor(mat))


def matrix_to_6d(mat: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two rows (pytorch3d/GestureLSM)."""
    mat = _as_tensor(mat)
    return mat[..., :2, :].reshape(*mat.shape[:-2], 6)


def rot6d_to_matrix(d6: Tensor) -> Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt; the two 3-vectors become rows 0, 1."""
    d6 = _as_tensor(d6)
    a1, a2 = d6[..., :3], d6[..., 3:6]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def axis_angle_to_6d(aa: Tensor) -> Tensor:
    """Axis-angle to 6D. Accepts ``(..., J, 3)`` or flat ``(..., J*3)``; returns ``(..., J*6)``
    for flat input (e.g. BEAT2 ``(T, 165) -> (T, 330)``) and ``(..., J, 6)`` otherwise."""
    aa = _as_tensor(aa)
    flat = aa.shape[-1] != 3
    if flat:
        if aa.shape[-1] % 3:
            raise ValueError(f"axis-angle last dim must be a multiple of 3, got {aa.shape[-1]}")
        aa = aa.reshape(*aa.shape[:-1], -1, 3)
    d6 = matrix_to_6d(axis_angle_to_matrix(aa))
    return d6.reshape(*d6.shape[:-2], -1) if flat else d6


def rot6d_to_axis_angle(d6: Tensor) -> Tensor:
    """6D to axis-angle. ``(..., J*6) -> (..., J*3)`` for flat input, ``(..., J, 6) -> (..., J, 3)``
    otherwise (a trailing dim of exactly 6 is treated as one joint)."""
    d6 = _as_tensor(d6)
    flat = d6.shape[-1] != 6
    if flat:
        if d6.shape[-1] % 6:
            raise ValueError(f"6D last dim must be a multiple of 6, got {d6.shape[-1]}")
        d6 = d6.reshape(*d6.shape[:-1], -1, 6)
    aa = matrix_to_axis_angle(rot6d_to_matrix(d6))
    return aa.reshape(*aa.shape[:-2], -1) if flat else aa

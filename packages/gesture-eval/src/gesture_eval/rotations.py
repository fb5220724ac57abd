"""The rotation conversions the FGD encoder was trained with (private copy of the convention).

EMAGE's encoder input is pytorch3d's 6D: the first two **rows** of the rotation matrix,
row-major (``matrix[..., :2, :]``), reached from axis-angle through a quaternion with a
small-angle Taylor branch (|angle| < 1e-6). gesture-eval takes arrays and does not depend on
``gesture_data``, so it carries this one convention itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_rot6d_rows",
    "matrix_to_rot6d_rows",
    "rot6d_rows_to_matrix",
]


def _axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    angles = torch.linalg.vector_norm(aa, dim=-1, keepdim=True)
    small = angles.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(angles), angles)
    # sin(x/2)/x ~ 1/2 - x^2/48 near 0
    factor = torch.where(small, 0.5 - angles * angles / 48, torch.sin(0.5 * safe) / safe)
    return torch.cat([torch.cos(0.5 * angles), aa * factor], dim=-1)


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    # Work on contiguous component rows (unbind of the last dim gives strided views, ~5x
    # slower); the arithmetic is the same elementwise float ops, so results are unchanged.
    shape = q.shape[:-1]
    q = q.reshape(-1, 4)
    r, i, j, k = q.T.contiguous()
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return m.reshape((*shape, 3, 3))


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` -> rotation matrices ``(..., 3, 3)`` (via quaternions)."""
    return _quaternion_to_matrix(_axis_angle_to_quaternion(aa))


def matrix_to_rot6d_rows(m: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: first two rows, row-major (pytorch3d / EMAGE)."""
    return m[..., :2, :].reshape((*m.shape[:-2], 6))


def rot6d_rows_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt; rows as in :func:`matrix_to_rot6d_rows`."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def axis_angle_to_rot6d_rows(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` -> EMAGE 6D ``(..., 6)``."""
    return matrix_to_rot6d_rows(axis_angle_to_matrix(aa))

"""Rotation conversions in torch: axis-angle, 3x3 matrices and the 6D representation.

Small pure functions, batched over any leading dimensions, differentiable, working in
the input's dtype and device.

- Axis-angle ("rotation vector"): ``(..., 3)``, direction = axis, norm = angle in
  radians, as SMPL stores poses.
- Matrix: ``(..., 3, 3)`` rotation matrices acting on column vectors (``R @ x``).
- 6D (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
  CVPR 2019): ``(..., 6)``, the first two *columns* of the matrix, concatenated
  ``[r00, r10, r20, r01, r11, r21]``. Any 6-vector whose two halves are not parallel
  maps back to a rotation by Gram-Schmidt.
"""
from __future__ import annotations

import torch

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_rotation_6d",
    "rotation_6d_to_matrix",
    "axis_angle_to_rotation_6d",
    "rotation_6d_to_axis_angle",
    "nearest_rotation",
]


def _skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix [v]_x of vectors (..., 3) -> (..., 3, 3)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (Rodrigues).

    Uses Taylor expansions of sin(t)/t and (1 - cos t)/t^2 near t = 0, so that the
    value and its gradient stay finite and accurate at and around the zero rotation.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-6
    # Keep the unused branch of torch.where finite so its gradient is too.
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - torch.cos(theta)) / safe2)
    K = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * K + b * (K @ K)


def _shepperd_map() -> tuple[torch.Tensor, torch.Tensor]:
    """``(C (9, 16), c (16,))``: Shepperd's four candidate quaternions of a rotation matrix
    as one affine map of its 9 entries (row-major), ``m @ C + c`` = (4, 4) whose row k is
    4 |q_k| (w, x, y, z) by the formulas that divide by q_k, and whose diagonal is
    4 q_k^2 = 1 +- m00 +- m11 +- m22. One matrix product instead of a few dozen small
    operations (this runs on every live frame)."""
    C, c = torch.zeros(9, 4, 4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
    for k, signs in enumerate(((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))):
        c[k, k] = 1.0
        for i, sign in enumerate(signs):
            C[4 * i, k, k] = sign  # m_ii sits at 3 i + i
    # (row, column) pairs of the 4x4 and the entries they add: m_ab - m_ba or m_ab + m_ba.
    for (r, q), (a, b), sign in (((0, 1), (2, 1), -1), ((0, 2), (0, 2), -1), ((0, 3), (1, 0), -1),
                                 ((1, 2), (1, 0), 1), ((1, 3), (0, 2), 1), ((2, 3), (1, 2), 1)):
        for row, col in ((r, q), (q, r)):
            C[3 * a + b, row, col] += 1.0
            C[3 * b + a, row, col] += sign
    return C.reshape(9, 16), c.reshape(16)


_SHEPPERD = _shepperd_map()


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3) with angle in [0, pi] from rotation matrices (..., 3, 3).

    Goes through unit quaternions, choosing per matrix the numerically best of the four
    standard formulas (Shepperd's method), so it is accurate for every angle, including
    0 and pi.
    """
    C, c = _SHEPPERD
    if C.dtype != matrix.dtype or C.device != matrix.device:
        C, c = C.to(matrix), c.to(matrix)
    cands = (matrix.reshape(*matrix.shape[:-2], 9) @ C + c).unflatten(-1, (4, 4))
    # The row with the largest |q_k| (>= 1/2: the four squares sum to 1); its scale 4 |q_k| > 0
    # goes with the normalisation.
    best = cands.diagonal(dim1=-2, dim2=-1).argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    # Canonical sign w >= 0 gives angles in [0, pi].
    q = torch.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    sin_half2 = (xyz * xyz).sum(-1)
    small = sin_half2 < 1e-12
    # Safe branches keep values and gradients finite at the zero rotation.
    sin_half = torch.where(small, torch.ones_like(sin_half2), sin_half2).sqrt()
    angle = 2.0 * torch.atan2(sin_half, w)
    # angle / sin(angle / 2) -> 2 (1 + sin^2(angle / 2) / 6) as the angle -> 0.
    scale = torch.where(small, 2.0 + sin_half2 / 3.0, angle / sin_half)
    return xyz * scale[..., None]


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """6D representation (..., 6): the first two columns of the matrices (..., 3, 3)."""
    return matrix[..., :2].transpose(-1, -2).reshape(*matrix.shape[:-2], 6)


def nearest_rotation(U: torch.Tensor, Vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the SVD ``U diag(S) Vh`` of 3x3 matrices (..., 3, 3): the rotation nearest to
    them, ``U diag(D) Vh`` with ``D = (1, 1, det(U Vh))`` (without the reflection that an
    orthogonal fit can take: Kabsch, Umeyama), and ``D`` (..., 3)."""
    M = U @ Vh
    # det(U Vh) = +-1 as a triple product (linalg.det's LU costs more on 3x3s)
    d = torch.sign((M[..., 0, :] * torch.linalg.cross(M[..., 1, :], M[..., 2, :], dim=-1)).sum(-1))
    D = torch.ones_like(U[..., 0])
    D[..., 2] = d
    return (U * D[..., None, :]) @ Vh, D


def rotation_6d_to_matrix(d6: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from 6D vectors (..., 6) by Gram-Schmidt.

    The first column is the normalised first half; the second is the second half made
    orthogonal to it and normalised; the third is their cross product. Not unique in
    reverse: every 6-vector with the same Gram-Schmidt result maps to the same matrix.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def axis_angle_to_rotation_6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """6D representation (..., 6) from axis-angle vectors (..., 3)."""
    return matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle))


def rotation_6d_to_axis_angle(d6: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3) from 6D vectors (..., 6)."""
    return matrix_to_axis_angle(rotation_6d_to_matrix(d6))

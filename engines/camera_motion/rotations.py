"""Small rotation helpers shared by the visual tracker, the IMU fusion and the tests."""

from __future__ import annotations

import math

import numpy as np


def fit_rotation(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The rotation R minimising ``sum w_i |a_i - R b_i|^2`` (Kabsch) for unit vectors
    ``a``, ``b`` of shape ``(N, 3)``; batched over leading dimensions ``(..., N, 3)``."""
    if weights is not None:
        b = b * weights[..., None]
    M = np.swapaxes(a, -1, -2) @ b  # sum a_i b_i^T
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(U.shape[:-2] + (3,))
    D[..., 2] = d
    return (U * D[..., None, :]) @ Vt


def angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle of ``R (..., 3, 3)`` in degrees."""
    R = np.asarray(R, dtype=np.float64)
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    # atan2 of sine and cosine: arccos alone loses precision near 0 degrees
    w = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    return np.degrees(np.arctan2(np.linalg.norm(w, axis=-1) / 2.0, c))


def angle_between_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle of the rotation taking ``R2`` to ``R1`` (the geodesic distance), degrees."""
    return angle_deg(np.swapaxes(R1, -1, -2) @ R2)


def yaw_pitch_roll(yaw_right_deg, pitch_down_deg, roll_deg=0.0) -> np.ndarray:
    """Camera orientation ``R = R_yaw @ R_pitch @ R_roll`` in a y-down frame, the convention
    of :meth:`calibration.rig.Rig.from_angles`: yaw > 0 turns the optical axis right, pitch > 0
    tilts it down, roll > 0 turns the camera clockwise seen from behind. Broadcasts."""
    y, p, r = (np.radians(np.asarray(v, dtype=np.float64)) for v in (yaw_right_deg, pitch_down_deg, roll_deg))
    y, p, r = np.broadcast_arrays(y, p, r)
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    one, zero = np.ones_like(y), np.zeros_like(y)
    R_yaw = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    R_pitch = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, sp], -1), np.stack([zero, -sp, cp], -1)], -2)
    R_roll = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return R_yaw @ R_pitch @ R_roll


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """The nearest rotation to ``R`` (removes accumulated rounding)."""
    U, _, Vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(U.shape[:-2] + (3,))
    D[..., 2] = d
    return (U * D[..., None, :]) @ Vt


def rad_per_px(focal_px: float) -> float:
    """Angle one pixel subtends at the image centre, radians."""
    return math.atan(1.0 / focal_px)

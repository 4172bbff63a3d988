"""Differentiable, batched projection through OpenCV camera models, in torch.

Matches ``cv2.projectPoints`` (pinhole, radial-tangential, rational and thin-prism terms) and
``cv2.fisheye.projectPoints`` (Kannala-Brandt) for points in front of the camera, and keeps
gradients finite everywhere, so score guidance can reproject samples through the real lens.

Shapes: ``points`` ``(..., N, 3)`` camera frame (OpenCV: x right, y down, z forward);
``K`` ``(..., 3, 3)`` and ``dist`` ``(..., D)`` whose leading dimensions broadcast against
``points.shape[:-2]`` (one camera per point set). A single camera is simply ``K (3, 3)``,
``dist (D,)``.
"""

from __future__ import annotations

import torch

#: Depth below which points are clamped (metres): avoids division by zero for points at or
#: behind the camera plane; their gradient w.r.t. depth is then zero.
MIN_DEPTH = 1e-6


def _intrinsics(K: torch.Tensor):
    # (..., 3, 3) -> four (..., 1) tensors that broadcast against (..., N)
    return (K[..., 0, 0, None], K[..., 1, 1, None], K[..., 0, 2, None], K[..., 1, 2, None])


def _coeff(dist: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
    if dist.shape[-1] > i:
        return dist[..., i, None]
    return torch.zeros((), dtype=like.dtype, device=like.device)


def distort_pinhole(xy: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Apply OpenCV radial-tangential (+rational, thin-prism) distortion to normalised ``(..., N, 2)``."""
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = (_coeff(dist, i, x) for i in range(12))
    r2 = x * x + y * y
    r4 = r2 * r2
    r6 = r4 * r2
    radial = (1 + k1 * r2 + k2 * r4 + k3 * r6) / (1 + k4 * r2 + k5 * r4 + k6 * r6)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r4
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r4
    return torch.stack([xd, yd], dim=-1)


def project_pinhole(points: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels ``(..., N, 2)`` of camera-frame points through a (distorted) pinhole camera."""
    if dist is not None and dist.shape[-1] > 12:
        raise ValueError("project_pinhole: tilted-sensor coefficients (14 values) are not supported")
    z = points[..., 2].clamp(min=MIN_DEPTH)
    xy = points[..., :2] / z[..., None]
    if dist is not None and dist.shape[-1] > 0:
        xy = distort_pinhole(xy, dist)
    fx, fy, cx, cy = _intrinsics(K)
    return torch.stack([fx * xy[..., 0] + cx, fy * xy[..., 1] + cy], dim=-1)


def project_fisheye(points: torch.Tensor, K: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Pixels ``(..., N, 2)`` of camera-frame points through a Kannala-Brandt fisheye (``cv2.fisheye``).

    The angle from the optical axis is ``atan2(sqrt(x^2 + y^2), z)``, so points beside and
    behind the camera (theta >= 90 deg) still project along their true direction; ``cv2.fisheye``
    agrees for z > 0.
    """
    if dist.shape[-1] != 4:
        raise ValueError(f"project_fisheye: dist must have 4 coefficients, got {dist.shape[-1]}")
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    rho2 = x * x + y * y
    small = rho2 < 1e-20
    # double-where: keep the unused branch finite so its gradient is not NaN
    rho = torch.sqrt(torch.where(small, torch.ones_like(rho2), rho2))
    theta = torch.atan2(rho, z)
    k1, k2, k3, k4 = (dist[..., i, None] for i in range(4))
    t2 = theta * theta
    theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    # near the axis theta_d / rho -> 1 / z
    scale = torch.where(small, 1.0 / z.clamp(min=MIN_DEPTH), theta_d / rho)
    fx, fy, cx, cy = _intrinsics(K)
    return torch.stack([fx * x * scale + cx, fy * y * scale + cy], dim=-1)


def project_points(points: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None, model: str) -> torch.Tensor:
    """Project through ``model`` (``"pinhole"`` or ``"fisheye"``); see the module doc for shapes."""
    if points.shape[-1] != 3:
        raise ValueError(f"project_points: points must have shape (..., 3), got {tuple(points.shape)}")
    squeeze = points.dim() == 1
    if squeeze:
        points = points[None]
    if model == "pinhole":
        out = project_pinhole(points, K, dist)
    elif model == "fisheye":
        if dist is None:
            raise ValueError("project_points: fisheye needs 4 distortion coefficients")
        out = project_fisheye(points, K, dist)
    else:
        raise ValueError(f"project_points: model must be 'pinhole' or 'fisheye', got {model!r}")
    return out[0] if squeeze else out

"""Camera translation of a posed body, in closed form.

Given the body's 3D points relative to its root, already rotated into the camera, and
where those points were seen (normalised camera coordinates, confidence-weighted), the
translation ``t`` that best explains the 2D points solves a 3x3 linear system: for each
point ``X`` seen at ``(u, v)``,

    (X_x + t_x) - u (X_z + t_z) = 0,    (X_y + t_y) - v (X_z + t_z) = 0,

a least-squares problem in ``t`` (the usual weak-to-full perspective trick of SPIN/ProHMR).
A weak prior on the depth keeps it well posed when only a few points are seen. Detector
outliers are down-weighted by a few rounds of iteratively reweighted least squares with a
Geman-McClure weight on each point's reprojection residual, and the depth is kept in front
of the camera.
"""

from __future__ import annotations

import torch


def solve_translation(points3d: torch.Tensor, points2d: torch.Tensor, weights: torch.Tensor, *,
                      depth_prior: float = 5.0, prior_weight: float = 1e-7, robust_iterations: int = 3,
                      robust_scale: float = 0.05, min_depth: float = 0.2) -> torch.Tensor:
    """Translation (B, 3) placing ``points3d`` (B, J, 3) so they project onto ``points2d``
    (B, J, 2, normalised coordinates) with per-point ``weights`` (B, J).

    ``robust_scale`` is the Geman-McClure scale as a fraction of the 2D extent of the
    points; ``robust_iterations = 0`` gives the plain weighted least squares.
    """
    t = _weighted_solve(points3d, points2d, weights, depth_prior, prior_weight, min_depth)
    if robust_iterations:
        seen = weights > 0
        big = torch.finfo(points2d.dtype).max
        lo = torch.where(seen[..., None], points2d, torch.full_like(points2d, big)).amin(1)
        hi = torch.where(seen[..., None], points2d, torch.full_like(points2d, -big)).amax(1)
        sigma2 = ((hi - lo).amax(-1).clamp(min=1e-3) * robust_scale).pow(2)[:, None]
        for _ in range(robust_iterations):
            placed = points3d + t[:, None]
            projected = placed[..., :2] / placed[..., 2:].clamp(min=1e-3)
            r2 = (projected - points2d).pow(2).sum(-1)
            t = _weighted_solve(points3d, points2d, weights * sigma2 / (sigma2 + r2), depth_prior, prior_weight,
                                min_depth)
    return t


def _weighted_solve(points3d, points2d, weights, depth_prior, prior_weight, min_depth) -> torch.Tensor:
    X, Y, Z = points3d.unbind(-1)
    u, v = points2d.unbind(-1)
    w = weights.clamp(min=0)
    zeros, ones = torch.zeros_like(u), torch.ones_like(u)
    # Rows of the design matrix for the x and y equations of every point.
    ax = torch.stack([ones, zeros, -u], dim=-1)
    ay = torch.stack([zeros, ones, -v], dim=-1)
    A = torch.cat([ax, ay], dim=1)  # (B, 2J, 3)
    b = torch.cat([u * Z - X, v * Z - Y], dim=1)  # (B, 2J)
    W = torch.cat([w, w], dim=1)
    AtA = torch.einsum("bni,bn,bnj->bij", A, W, A)
    Atb = torch.einsum("bni,bn,bn->bi", A, W, b)
    scale = W.sum(dim=1).clamp(min=1e-6)
    reg = prior_weight * scale
    AtA = AtA + torch.diag_embed(torch.stack([reg, reg, reg], dim=-1))
    Atb = Atb + torch.stack([torch.zeros_like(reg), torch.zeros_like(reg), reg * depth_prior], dim=-1)
    t = torch.linalg.solve(AtA, Atb)
    # The root must lie in front of the camera; a degenerate fit (a body that overflows the
    # frame, few points seen) can land behind it.
    return torch.cat([t[:, :2], t[:, 2:].clamp(min=min_depth)], dim=-1)

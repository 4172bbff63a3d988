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

from engines.diffusion.features import point_bounds


def solve_translation(points3d: torch.Tensor, points2d: torch.Tensor, weights: torch.Tensor, *,
                      depth_prior: float = 5.0, prior_weight: float = 1e-7, robust_iterations: int = 3,
                      robust_scale: float = 0.05, min_depth: float = 0.2) -> torch.Tensor:
    """Translation (B, 3) placing ``points3d`` (B, J, 3) so they project onto ``points2d``
    (B, J, 2, normalised coordinates) with per-point ``weights`` (B, J).

    ``robust_scale`` is the Geman-McClure scale as a fraction of the 2D extent of the
    points; ``robust_iterations = 0`` gives the plain weighted least squares.
    """
    rows = _normal_equation_rows(points3d, points2d)
    t = _weighted_solve(rows, weights, depth_prior, prior_weight, min_depth)
    if robust_iterations:
        lo, hi = point_bounds(points2d, weights > 0)
        sigma2 = ((hi - lo).amax(-1).clamp(min=1e-3) * robust_scale).pow(2)[:, None]
        for _ in range(robust_iterations):
            placed = points3d + t[:, None]
            projected = placed[..., :2] / placed[..., 2:].clamp(min=1e-3)
            r2 = (projected - points2d).pow(2).sum(-1)
            t = _weighted_solve(rows, weights * sigma2 / (sigma2 + r2), depth_prior, prior_weight, min_depth)
    return t


def _normal_equation_rows(points3d: torch.Tensor, points2d: torch.Tensor) -> torch.Tensor:
    """(B, J, 7) what each point adds, per unit of its weight, to the sums the normal
    equations are made of (:func:`_weighted_solve`): 1, u, v, u^2 + v^2, and the right-hand
    side's u Z - X, v Z - Y and -(u (u Z - X) + v (v Z - Y)). They do not depend on the
    weights, so the robust rounds reweight them with one product each."""
    uv = points2d
    rhs = uv * points3d[..., 2:] - points3d[..., :2]  # (B, J, 2): u Z - X, v Z - Y
    return torch.cat([torch.ones_like(uv[..., :1]), uv, uv.pow(2).sum(-1, keepdim=True), rhs,
                      -(uv * rhs).sum(-1, keepdim=True)], -1)


def _weighted_solve(rows: torch.Tensor, weights: torch.Tensor, depth_prior: float, prior_weight: float,
                    min_depth: float) -> torch.Tensor:
    # The normal equations of the rows (1, 0, -u) t = u Z - X and (0, 1, -v) t = v Z - Y,
    # weighted by w: A = [[a, 0, -su], [0, a, -sv], [-su, -sv, c]] t = (bx, by, bz), solved in
    # closed form (eliminate tx and ty): a handful of operations on (B,) tensors, where the
    # lift's time is their count, not their size.
    sums = (weights.clamp(min=0)[:, None] @ rows)[:, 0]  # (B, 7)
    sw, su, sv, suv, bx, by, bz = sums.unbind(-1)
    reg = prior_weight * (2 * sw).clamp(min=1e-6)
    a, c = sw + reg, suv + reg
    tz = (a * (bz + reg * depth_prior) + su * bx + sv * by) / (a * c - su * su - sv * sv)
    # The root must lie in front of the camera; a degenerate fit (a body that overflows the
    # frame, few points seen) can land behind it.
    return torch.stack([(bx + su * tz) / a, (by + sv * tz) / a, tz.clamp(min=min_depth)], -1)

"""Camera translation of a posed body, in closed form.

Given the body's 3D points relative to its root, already rotated into the camera, and
where those points were seen (normalised camera coordinates, confidence-weighted), the
translation ``t`` that best explains the 2D points solves a 3x3 linear system: for each
point ``X`` seen at ``(u, v)``,

    (X_x + t_x) - u (X_z + t_z) = 0,    (X_y + t_y) - v (X_z + t_z) = 0,

a least-squares problem in ``t`` (the usual weak-to-full perspective trick of SPIN/ProHMR).
A weak prior on the depth keeps it well posed when only a few points are seen.
"""

from __future__ import annotations

import torch


def solve_translation(points3d: torch.Tensor, points2d: torch.Tensor, weights: torch.Tensor, *,
                      depth_prior: float = 5.0, prior_weight: float = 1e-7) -> torch.Tensor:
    """Translation (B, 3) placing ``points3d`` (B, J, 3) so they project onto ``points2d``
    (B, J, 2, normalised coordinates) with per-point ``weights`` (B, J)."""
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
    return torch.linalg.solve(AtA, Atb)

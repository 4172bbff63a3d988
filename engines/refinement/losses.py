"""Guidance losses: robust reprojection through the real camera model and temporal
smoothness over a window, batched over windows (S) and frames (T), differentiable; and the
keypoint fit's robust reprojection and world-landmark terms with their Gauss-Newton blocks,
shared by every camera of a rig."""

from __future__ import annotations

import torch

from calibration.torch_projection import project_points
from engines.body.rotations import nearest_rotation
from engines.diffusion.features import point_bounds


def geman_mcclure(residual_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals: ``r^2 / (r^2 + sigma^2)`` in [0, 1)."""
    return residual_sq / (residual_sq + sigma * sigma)


def person_size_px(keypoints: torch.Tensor, min_confidence: float = 0.05) -> torch.Tensor:
    """Larger side (..., ) of the box around the confident keypoints (..., J, 3), pixels (>= 8)."""
    valid = keypoints[..., 2] > min_confidence
    lo, hi = point_bounds(keypoints[..., :2], valid)
    size = (hi - lo).amax(-1)
    return size.masked_fill(valid.sum(-1) < 2, 8.0).clamp(min=8.0)


def reprojection_loss(points3d: torch.Tensor, keypoints: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None,
                      model: str, *, sigma: float, min_confidence: float = 0.05,
                      size: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row robust reprojection loss (...,): camera-frame keypoints ``points3d`` (..., J, 3)
    projected through the camera (``K``, ``dist``, ``model`` as in
    :func:`calibration.torch_projection.project_points`) against detected ``keypoints``
    (..., J, 3) pixel x, y, confidence. Residuals are divided by the person's size in the
    image, so ``sigma`` is a fraction of it; the result is the confidence-weighted mean."""
    px = project_points(points3d, K, dist, model)
    conf = keypoints[..., 2] * (keypoints[..., 2] > min_confidence)
    if size is None:
        size = person_size_px(keypoints, min_confidence)
    r2 = (px - keypoints[..., :2]).pow(2).sum(-1) / size[..., None].pow(2)
    return (conf * geman_mcclure(r2, sigma)).sum(-1) / conf.sum(-1).clamp(min=1e-6)


def difference_penalty(x: torch.Tensor, valid: torch.Tensor, order: int) -> torch.Tensor:
    """Sum of squared ``order``-th differences along the frame axis of ``x`` (S, T, ...) over
    runs of valid frames, per window (S,). ``valid`` (S, T) marks real frames (padding False)."""
    d, ok = x, valid
    for _ in range(order):
        d = d[:, 1:] - d[:, :-1]
        ok = ok[:, 1:] & ok[:, :-1]
    sq = d.pow(2).flatten(2).sum(-1)
    return (sq * ok).sum(-1)


def smoothness_loss(joints: torch.Tensor, valid: torch.Tensor, *, joint_vel: float, joint_acc: float) -> torch.Tensor:
    """Temporal smoothness per window (S,) of camera-frame joints (S, T, 24, 3) in metres:
    weighted squared velocities and accelerations (the rotations are smoothed by the
    proximal step, ``GuidedRefiner.smooth``)."""
    return joint_vel * difference_penalty(joints, valid, 1) + joint_acc * difference_penalty(joints, valid, 2)


def similarity_align(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``source`` (..., J, 3) moved onto ``target`` by the weighted similarity transform
    (rotation, scale, translation) that fits it best; ``weights`` (..., J). Rows whose
    weights are all zero come back as garbage that weighs nothing."""
    w = weights[..., None]
    wsum = w.sum(-2, keepdim=True).clamp(min=1e-9)
    mu_s, mu_t = (w * source).sum(-2, keepdim=True) / wsum, (w * target).sum(-2, keepdim=True) / wsum
    a, b = source - mu_s, target - mu_t
    cov = (w * b).transpose(-1, -2) @ a  # (..., 3, 3)
    U, S, Vh = torch.linalg.svd(cov)
    R, D = nearest_rotation(U, Vh)
    var = (w * a.pow(2)).sum((-1, -2)).clamp(min=1e-12)
    s = (S * D).sum(-1) / var
    return s[..., None, None] * a @ R.transpose(-1, -2) + mu_t



# -- robust terms of the keypoint fit's normal equations (engines.refinement.fitting) ---------
# Each adds its energy to ``E`` (N,) and returns it; with a Jacobian ``jac`` (N, P, C, A) of
# its residual it also adds its iteratively reweighted Gauss-Newton blocks to ``H`` (N, A, A)
# and ``g`` (N, A) in place. The reference camera and each other camera of a rig use the same.


def add_reprojection_term(res: torch.Tensor, jac: torch.Tensor | None, conf: torch.Tensor, size: torch.Tensor,
                          noise: torch.Tensor, robust_scale: float, E: torch.Tensor, H: torch.Tensor | None,
                          g: torch.Tensor | None) -> torch.Tensor:
    """Pixel residuals ``res`` (N, P, 2), in units of the person's ``size`` (N, 1) px, under a
    Geman-McClure penalty of scale ``robust_scale``, Gaussian with the detector's ``noise``
    (N, 1) near zero, weighted by ``conf`` (N, P)."""
    rho2 = res.pow(2).sum(-1) / size.pow(2)
    sc2 = robust_scale ** 2
    E = E + (conf * sc2 * rho2 / (rho2 + sc2) / noise ** 2).sum(-1)
    if jac is not None:
        wd = conf * (sc2 / (rho2 + sc2)) ** 2 / (size * noise) ** 2
        _add_weighted_normal_equations(jac, wd[..., None].expand_as(res), res, H, g)
    return E


def add_world_term(points: torch.Tensor, jac: torch.Tensor | None, world: torch.Tensor, weights: torch.Tensor,
                   axes: torch.Tensor, robust: float, E: torch.Tensor, H: torch.Tensor | None,
                   g: torch.Tensor | None) -> torch.Tensor:
    """World landmarks ``world`` (N, P, 3) aligned onto the body's camera-frame ``points``
    (N, P, 3) by a similarity (held fixed in the derivative), the remaining distances weighted
    per axis by ``axes`` (3,) (the camera's depth most: what its 2D cannot tell) and per point by
    ``weights`` (N, P), robust beyond ``robust`` metres."""
    rw = points - similarity_align(world, points, weights)
    r2 = (rw.pow(2) * axes).sum(-1)  # m^2, anisotropic
    rb2 = robust ** 2
    E = E + (weights * rb2 * r2 / (r2 + rb2)).sum(-1)
    if jac is not None:
        ww = weights * (rb2 / (r2 + rb2)) ** 2
        _add_weighted_normal_equations(jac, ww[..., None] * axes, rw, H, g)
    return E


def _add_weighted_normal_equations(jac: torch.Tensor, w: torch.Tensor, res: torch.Tensor, H: torch.Tensor,
                                   g: torch.Tensor) -> None:
    """``H += J^T W J`` and ``g += J^T W r`` for residuals ``res`` (N, P, C) with Jacobian
    ``jac`` (N, P, C, A) and per-residual weights ``w`` (N, P, C), as two batched matrix
    products (a multi-operand einsum contracted them pair by pair, several times slower)."""
    J = jac.flatten(1, 2)  # (N, P C, A)
    Jw = J * w.flatten(1)[..., None]
    H += Jw.transpose(1, 2) @ J
    g += (Jw.transpose(1, 2) @ res.flatten(1)[..., None])[..., 0]

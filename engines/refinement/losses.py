"""Guidance losses: robust reprojection through the real camera model and temporal
smoothness over a window. Batched over windows (S) and frames (T); differentiable."""

from __future__ import annotations

import torch

from calibration.torch_projection import project_points


def geman_mcclure(residual_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals: ``r^2 / (r^2 + sigma^2)`` in [0, 1)."""
    return residual_sq / (residual_sq + sigma * sigma)


def person_size_px(keypoints: torch.Tensor, min_confidence: float = 0.05) -> torch.Tensor:
    """Larger side (..., ) of the box around the confident keypoints (..., J, 3), pixels (>= 8)."""
    valid = keypoints[..., 2] > min_confidence
    big = torch.finfo(keypoints.dtype).max
    xy = keypoints[..., :2]
    lo = torch.where(valid[..., None], xy, torch.full_like(xy, big)).amin(-2)
    hi = torch.where(valid[..., None], xy, torch.full_like(xy, -big)).amax(-2)
    size = (hi - lo).amax(-1)
    return torch.where(valid.sum(-1) >= 2, size, torch.full_like(size, 8.0)).clamp(min=8.0)


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
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.ones_like(S)
    D[..., 2] = d
    R = U @ torch.diag_embed(D) @ Vh
    var = (w * a.pow(2)).sum((-1, -2)).clamp(min=1e-12)
    s = (S * D).sum(-1) / var
    return s[..., None, None] * a @ R.transpose(-1, -2) + mu_t


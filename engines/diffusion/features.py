"""Conditioning features: what the denoiser knows about a person.

Keypoints arrive in *normalised camera coordinates* (x/z, y/z of the ray through each
pixel: intrinsics and lens distortion already removed, see :mod:`calibration`), in the
BlazePose-33 layout with a confidence per point (0 = missing; COCO-17 input is placed into
its BlazePose slots). From them:

- the person's box in normalised coordinates: centre (2) and log size (1). These tell the
  network where the person sits in the field of view and how large they appear, so an
  off-centre person or a wide-angle view is handled;
- each keypoint relative to the box, ``(p - centre) / size``, and its confidence.
"""

from __future__ import annotations

import torch

NUM_KEYPOINTS = 33
COND_DIM = NUM_KEYPOINTS * 3 + 3
BOX_MARGIN = 1.2  # box side = this times the larger extent of the confident points
MIN_CONFIDENCE = 0.05


def person_box(points: torch.Tensor, conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (B, 2) and side length (B,) of the square box around the confident points."""
    valid = conf > MIN_CONFIDENCE
    big = torch.finfo(points.dtype).max
    lo = torch.where(valid[..., None], points, torch.full_like(points, big)).amin(dim=1)
    hi = torch.where(valid[..., None], points, torch.full_like(points, -big)).amax(dim=1)
    centre = (lo + hi) / 2
    size = (hi - lo).amax(dim=-1) * BOX_MARGIN
    return centre, size.clamp(min=1e-3)


def condition_features(keypoints: torch.Tensor) -> torch.Tensor:
    """(B, 33, 3) normalised x, y, confidence -> (B, COND_DIM) denoiser condition.

    Rows with fewer than two confident points are not liftable; callers filter them out
    first (see :func:`liftable`).
    """
    points, conf = keypoints[..., :2], keypoints[..., 2].clamp(0, 1)
    centre, size = person_box(points, conf)
    rel = (points - centre[:, None]) / size[:, None, None]
    rel = torch.where(conf[..., None] > MIN_CONFIDENCE, rel, torch.zeros_like(rel))
    per_point = torch.cat([rel, conf[..., None]], dim=-1).flatten(1)
    box = torch.cat([centre, torch.log(size)[:, None]], dim=-1)
    return torch.cat([per_point, box], dim=-1)


def liftable(keypoints: torch.Tensor, min_points: int = 4) -> torch.Tensor:
    """(B,) True where at least ``min_points`` keypoints are confident."""
    return (keypoints[..., 2] > MIN_CONFIDENCE).sum(dim=-1) >= min_points

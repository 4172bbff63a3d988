"""Conditioning features: what the denoiser knows about a person.

Keypoints arrive in *normalised camera coordinates* (x/z, y/z of the ray through each
pixel: intrinsics and lens distortion already removed, see :mod:`calibration`), in the
BlazePose-33 layout with a confidence per point (0 = missing; COCO-17 input is placed into
its BlazePose slots). From them:

- the person's box in normalised coordinates: centre (2) and log size (1). These tell the
  network where the person sits in the field of view and how large they appear, so an
  off-centre person or a wide-angle view is handled;
- each keypoint relative to the box, ``(p - centre) / size``, and its confidence;
- for a network trained with them (``DenoiserConfig.world_landmarks``), the landmark
  network's 33 metric world landmarks (origin between the hips, camera axes, metres) and a
  flag saying whether they are present: the same network lifts with or without them.
"""

from __future__ import annotations

import torch

NUM_KEYPOINTS = 33
KEYPOINT_FEATURES = 3  # per keypoint: x, y in the box, confidence
COND_DIM = NUM_KEYPOINTS * KEYPOINT_FEATURES + 3
WORLD_COND_DIM = COND_DIM + NUM_KEYPOINTS * 3 + 1  # with the world landmarks and their flag
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


def condition_features(keypoints: torch.Tensor, world_landmarks: torch.Tensor | None = None, *,
                       world: bool = False) -> torch.Tensor:
    """(B, 33, 3) normalised x, y, confidence -> (B, COND_DIM) denoiser condition; with
    ``world`` (a network trained with world landmarks) -> (B, WORLD_COND_DIM), the landmarks
    (B, 33, 3) appended (zeros and flag 0 where ``world_landmarks`` is None or a row is all
    zeros: not seen).

    Rows with fewer than two confident points are not liftable; callers filter them out
    first (see :func:`liftable`).
    """
    base = _keypoint_features(keypoints)
    if not world:
        return base
    B = keypoints.shape[0]
    if world_landmarks is None:
        world_landmarks = keypoints.new_zeros(B, NUM_KEYPOINTS, 3)
    wl = torch.where(torch.isfinite(world_landmarks), world_landmarks, torch.zeros_like(world_landmarks))
    present = (wl.abs().flatten(1).amax(-1) > 0).to(base.dtype)
    wl = wl - wl[:, [23, 24]].mean(1, keepdim=True)  # origin between the hips, as BlazePose's
    wl = wl * present[:, None, None]
    return torch.cat([base, wl.flatten(1), present[:, None]], dim=-1)


def _keypoint_features(keypoints: torch.Tensor) -> torch.Tensor:
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

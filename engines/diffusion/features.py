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
  network's 33 metric world landmarks (origin between the hips, metres) turned into camera
  axes (:func:`world_landmarks_to_camera`) and a flag saying whether they are present: the
  same network lifts with or without them.
"""

from __future__ import annotations

import torch

NUM_KEYPOINTS = 33
KEYPOINT_FEATURES = 3  # per keypoint: x, y in the box, confidence
COND_DIM = NUM_KEYPOINTS * KEYPOINT_FEATURES + 3
WORLD_COND_DIM = COND_DIM + NUM_KEYPOINTS * 3 + 1  # with the world landmarks and their flag
BOX_MARGIN = 1.2  # box side = this times the larger extent of the confident points
MIN_CONFIDENCE = 0.05


def point_bounds(points: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest and the largest coordinates (..., D) of the points (..., J, D)
    that ``keep`` (..., J) marks; the float type's +max and -max where it marks none."""
    hidden = ~keep[..., None]
    big = torch.finfo(points.dtype).max
    return points.masked_fill(hidden, big).amin(-2), points.masked_fill(hidden, -big).amax(-2)


def person_box(points: torch.Tensor, conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (B, 2) and side length (B,) of the square box around the confident points."""
    lo, hi = point_bounds(points, conf > MIN_CONFIDENCE)
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
    wl = world_landmarks.nan_to_num(0.0, 0.0, 0.0)  # NaN and infinities to 0: not seen
    present = (wl.abs().flatten(1).amax(-1) > 0).to(base.dtype)
    wl = wl - wl[:, 23:25].mean(1, keepdim=True)  # origin between the hips, as BlazePose's
    wl = world_landmarks_to_camera(wl, keypoints)
    wl = wl * present[:, None, None]
    return torch.cat([base, wl.flatten(1), present[:, None]], dim=-1)


def world_landmarks_given(cond: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which rows of a (B, WORLD_COND_DIM) condition carry world landmarks (the
    flag :func:`condition_features` appends last)."""
    return cond[:, -1] > 0.5


def viewing_ray_rotation(xy: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) the smallest rotation taking the optical axis (0, 0, 1) onto the ray through
    normalised image points ``xy`` (B, 2)."""
    # Rodrigues for the turn of a onto b (unit): R = c I + [v]x + v v^T / (1 + c) with
    # v = a x b = (-b_y, b_x, 0) and c = a . b = b_z > 0 (a ray through the image).
    r = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=-1)
    r = r / r.norm(dim=-1, keepdim=True)
    vx, vy, c = -r[:, 1], r[:, 0], r[:, 2]
    k = 1.0 / (1.0 + c)
    vxy = vx * vy * k
    return torch.stack([c + vx * vx * k, vxy, vy, vxy, c + vy * vy * k, -vx, -vy, vx, c], -1).view(-1, 3, 3)


def person_ray(keypoints: torch.Tensor) -> torch.Tensor:
    """(B, 2) the normalised image point the landmark network's crop is centred on: between
    the hips (BlazePose's alignment centre), or the box centre where a hip is not seen."""
    conf = keypoints[..., 2]
    hips_seen = (conf[:, 23:25] > MIN_CONFIDENCE).all(-1)  # the hips: points 23 and 24
    centre, _ = person_box(keypoints[..., :2], conf)
    return torch.where(hips_seen[:, None], keypoints[:, 23:25, :2].mean(1), centre)


def world_landmarks_to_camera(world: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """World landmarks (B, 33, 3) from the landmark network's frame into camera axes.

    The network sees only a crop around the person and cannot know where in the frame it
    was cut: its depth axis is the ray through the crop, not the optical axis, so for a
    person off to the side the landmarks come turned by the angle of that ray (on the
    bundled clip this removes most of their yaw against the fitted bodies). Turned back by
    :func:`viewing_ray_rotation` of :func:`person_ray`."""
    R = viewing_ray_rotation(person_ray(keypoints))
    return world @ R.transpose(1, 2)


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

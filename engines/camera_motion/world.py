"""The gravity-aligned world frame.

World frame (metres): origin at the camera's centre, **y down along gravity**, z forward
(the first frame's viewing direction made level), x to the right. It is the camera frame
of a level camera that looks where the first frame looked, so a level, unmoving camera's
outputs are the same in both, and everything that reads camera-frame motion (the Y-up
BVH and ``.smpl`` conversion) reads world motion unchanged, with a level floor.

Where gravity comes from, in order: an IMU (its frame's up); ``--camera-pitch`` (the first
frame's pitch, roll taken as 0); the people in view (:class:`PeopleGravity`).
"""

from __future__ import annotations

import math

import numpy as np

from .imu import IMU_WORLD_UP

#: SMPL joints used for the people's up direction and floor.
PELVIS, NECK = 0, 12
FEET = (7, 8, 10, 11)  # ankles and feet


def world_from_down(down: np.ndarray, forward=(0.0, 0.0, 1.0)) -> np.ndarray:
    """world-from-reference-camera rotation, given gravity's direction ``down`` in the
    reference camera's frame and the direction that is to become forward (levelled)."""
    y = np.asarray(down, np.float64)
    y = y / np.linalg.norm(y)
    f = np.asarray(forward, np.float64)
    z = f - (f @ y) * y
    if np.linalg.norm(z) < 1e-6:  # looking straight down or up: the camera's up becomes forward
        z = np.array([0.0, -1.0, 0.0]) - y[1] * y
    z = z / np.linalg.norm(z)
    x = np.cross(y, z)
    return np.stack([x, y, z])


def down_from_pitch(pitch_down_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """Gravity in the frame of a camera pitched ``pitch_down_deg`` down (and rolled)."""
    p, r = math.radians(pitch_down_deg), math.radians(roll_deg)
    # R_pitch @ R_roll (calibration.rig convention): down in the camera = second row of it
    d = np.array([0.0, math.cos(p), math.sin(p)])
    R_roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return R_roll.T @ d


def down_from_imu(imu_world_from_reference: np.ndarray) -> np.ndarray:
    """Gravity in the reference camera's frame from its orientation in the IMU's world."""
    return -(np.asarray(imu_world_from_reference).T @ IMU_WORLD_UP)


class PeopleGravity:
    """Gravity from the people in view over the first seconds: the mean direction of their
    spines (pelvis to neck; upright people lean a few degrees) and, once their feet have
    covered enough floor (``floor_span`` metres across), the normal of the plane through the
    lowest foot joint of each person in each frame. Settles after ``frames`` frames with
    people and then stays fixed."""

    def __init__(self, frames: int = 60, floor_span: float = 1.0):
        self.frames = frames
        self.floor_span = floor_span
        self._spine = np.zeros(3)
        self._feet: list[np.ndarray] = []
        self._seen = 0
        self.method: str | None = None
        self._down: np.ndarray | None = None

    @property
    def settled(self) -> bool:
        return self._down is not None

    def add(self, joints_ref: list[np.ndarray]) -> None:
        """Add one frame's people: SMPL joints ``(24, 3)`` each, in the reference camera's frame."""
        if self.settled or not joints_ref:
            return
        for j in joints_ref:
            spine = j[NECK] - j[PELVIS]
            n = np.linalg.norm(spine)
            if n > 1e-6:
                self._spine += spine / n
                down = -spine / n
                feet = j[list(FEET)]
                self._feet.append(feet[int(np.argmax(feet @ down))])
        self._seen += 1
        if self._seen >= self.frames:
            self._down = self.down()
            self.method = self._method

    def down(self) -> np.ndarray:
        """The estimate so far (the camera's own down, (0, 1, 0), before any person)."""
        if self._down is not None:
            return self._down
        self._method = "level camera assumed (no people yet)"
        if not self._spine.any():
            return np.array([0.0, 1.0, 0.0])
        spine_down = -self._spine / np.linalg.norm(self._spine)
        self._method = "people's spines"
        if len(self._feet) >= 10:
            feet = np.array(self._feet)
            centred = feet - feet.mean(axis=0)
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            span = 2 * 2 * s[1] / math.sqrt(len(feet))  # +-2 sigma along the floor's narrower direction
            normal = vt[2] if vt[2] @ spine_down > 0 else -vt[2]
            if span >= self.floor_span and math.degrees(math.acos(min(1.0, normal @ spine_down))) < 20.0:
                self._method = "people's feet on a common floor"
                return normal
        return spine_down

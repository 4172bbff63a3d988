"""Head-mounted rigs: where a camera sits on the wearer's head.

Frames (metres):

- **camera frame**: OpenCV, x right, y down, z forward along the optical axis.
- **head frame**: origin between the wearer's eyes (the bridge of the nose); with the head
  upright, x to the wearer's right, y down, z forward (where the wearer looks). A camera
  looking straight ahead from between the eyes has the identity pose.

A rig stores the camera's pose in the head frame: ``p_head = rotation @ p_cam + translation``.
``rotation``'s columns are the camera's axes written in the head frame; ``translation`` is
the camera's centre in the head frame.

Rig file fields (YAML via ``cv2.FileStorage``, or JSON):

- ``rig``: ``head_mounted``;
- ``rotation``: 3x3 rotation matrix, or instead ``rotation_vector``: 3 values (axis-angle,
  radians, OpenCV ``Rodrigues``);
- ``translation``: 3 values, metres;
- ``camera_file`` (optional): the camera file of this camera, relative to the rig file;
- ``imu_rotation`` (optional): 3x3, how an IMU sits on the camera: camera-from-IMU
  (``v_cam = imu_rotation @ v_imu``; its columns are the IMU's axes in the camera frame).
  Without it ``run --imu`` finds it from the motion (``engines.camera_motion.imu``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.fileio import FileFormatError, get_array, get_str, read_fields, write_fields

RIG_TYPES = ("head_mounted",)
#: A camera further than this from the head is almost certainly a unit mistake (mm for m).
MAX_OFFSET_M = 0.5


class RigError(ValueError):
    """Invalid rig parameters; the message names the field."""


@dataclass(frozen=True, eq=False)
class Rig:
    """Pose of a head-mounted camera in the head frame (see module doc)."""

    rotation: np.ndarray
    translation: np.ndarray
    camera_file: str | None = None
    imu_rotation: np.ndarray | None = None  # camera-from-IMU, when the rig has an IMU

    def __post_init__(self) -> None:
        if self.imu_rotation is not None:
            M = np.array(self.imu_rotation, dtype=np.float64)
            if M.shape != (3, 3) or not np.isfinite(M).all() or np.abs(M.T @ M - np.eye(3)).max() > 1e-3 \
                    or np.linalg.det(M) < 0:
                raise RigError("imu_rotation: must be a 3x3 rotation matrix (camera-from-IMU)")
            u, _, vt = np.linalg.svd(M)
            object.__setattr__(self, "imu_rotation", u @ vt)
        R = np.array(self.rotation, dtype=np.float64)
        t = np.array(self.translation, dtype=np.float64).reshape(-1)
        validate_rig(R, t)
        # remove the rounding a file may carry so the inverse is exact
        u, _, vt = np.linalg.svd(R)
        R = u @ vt
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "rotation", R)
        object.__setattr__(self, "translation", t)

    @staticmethod
    def from_angles(pitch_down_deg: float = 0.0, yaw_right_deg: float = 0.0, roll_deg: float = 0.0,
                    translation=(0.0, 0.0, 0.0), camera_file: str | None = None) -> Rig:
        """A rig from intuitive angles: ``R = R_yaw @ R_pitch @ R_roll``.

        ``pitch_down_deg`` > 0 tilts the optical axis down (towards the wearer's body),
        ``yaw_right_deg`` > 0 turns it to the wearer's right, ``roll_deg`` > 0 rotates the camera
        clockwise about its optical axis as seen from behind it (its x axis dips to the right).
        """
        p, y, r = (math.radians(a) for a in (pitch_down_deg, yaw_right_deg, roll_deg))
        R_pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
        R_yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
        R_roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        return Rig(R_yaw @ R_pitch @ R_roll, np.asarray(translation, dtype=np.float64), camera_file)

    @property
    def optical_axis(self) -> np.ndarray:
        """The camera's viewing direction in the head frame."""
        return self.rotation[:, 2].copy()

    def pitch_down_deg(self) -> float:
        """How far the optical axis points below the head's forward direction, degrees."""
        z = self.optical_axis
        return math.degrees(math.atan2(z[1], math.hypot(z[0], z[2])))

    def camera_to_head(self, points: np.ndarray) -> np.ndarray:
        """Camera-frame points ``(..., 3)`` in the head frame."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.rotation.T + self.translation

    def head_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Head-frame points ``(..., 3)`` in the camera frame."""
        p = np.asarray(points, dtype=np.float64)
        return (p - self.translation) @ self.rotation

    def rotations_camera_to_head(self, rotations: np.ndarray) -> np.ndarray:
        """Orientations ``(..., 3, 3)`` given in the camera frame (e.g. SMPL global orient) in the head frame."""
        return self.rotation @ np.asarray(rotations, dtype=np.float64)

    def camera_path(self, rig_path: str | Path) -> Path | None:
        """The camera file, resolved relative to the rig file's folder."""
        if self.camera_file is None:
            return None
        p = Path(self.camera_file)
        return p if p.is_absolute() else Path(rig_path).parent / p


def look_from(position, target=(0.0, 0.0, 4.0)) -> tuple[np.ndarray, np.ndarray]:
    """The pose ``(R, t)`` (reference frame -> camera, as a rig stores it) of a camera at
    ``position`` looking at ``target``, both in the reference camera's frame (x right, y
    down, z forward), its image upright: a synthetic rig's cameras."""
    position, target = np.asarray(position, float), np.asarray(target, float)
    z = (target - position) / np.linalg.norm(target - position)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return R, -R @ position


def validate_rig(R: np.ndarray, t: np.ndarray) -> None:
    """Raise :class:`RigError` naming the field when ``R``/``t`` cannot be a rig pose."""
    if R.shape != (3, 3):
        raise RigError(f"rotation: must be 3x3, got shape {R.shape}")
    if not np.isfinite(R).all():
        raise RigError("rotation: contains non-finite values")
    dev = float(np.abs(R.T @ R - np.eye(3)).max())
    if dev > 1e-3:
        raise RigError(f"rotation: not a rotation matrix (R^T R differs from identity by {dev:.3g})")
    if np.linalg.det(R) < 0:
        raise RigError("rotation: is a reflection (determinant -1); check the axis conventions")
    if t.shape != (3,):
        raise RigError(f"translation: must have 3 values, got {t.size}")
    if not np.isfinite(t).all():
        raise RigError("translation: contains non-finite values")
    if np.linalg.norm(t) > MAX_OFFSET_M:
        raise RigError(
            f"translation: camera {np.linalg.norm(t):.3g} m from the head; values are metres (not millimetres)"
        )


def load_rig(path: str | Path) -> Rig:
    """Read a rig file (``.yaml``/``.yml``/``.json``); errors name the file and field."""
    where = str(path)
    fields = read_fields(path)
    get_str(fields, "rig", where, RIG_TYPES)
    has_R, has_r = "rotation" in fields, "rotation_vector" in fields
    if has_R == has_r:
        raise FileFormatError(f"{where}: give exactly one of 'rotation' (3x3) or 'rotation_vector' (3 values)")
    if has_R:
        R = get_array(fields, "rotation", where, shape=(3, 3))
    else:
        rvec = get_array(fields, "rotation_vector", where, shape=(3,), flatten=True)
        R, _ = cv2.Rodrigues(rvec)
    t = get_array(fields, "translation", where, shape=(3,), flatten=True)
    camera_file = get_str(fields, "camera_file", where) if "camera_file" in fields else None
    imu = get_array(fields, "imu_rotation", where, shape=(3, 3)) if "imu_rotation" in fields else None
    try:
        return Rig(R, t, camera_file, imu)
    except RigError as e:
        raise FileFormatError(f"{where}: {e}") from None


def save_rig(rig: Rig, path: str | Path) -> None:
    """Write ``rig`` to ``path`` (format from the suffix)."""
    fields = {"rig": "head_mounted", "rotation": rig.rotation, "translation": rig.translation.copy()}
    if rig.camera_file is not None:
        fields["camera_file"] = rig.camera_file
    if rig.imu_rotation is not None:
        fields["imu_rotation"] = rig.imu_rotation
    write_fields(
        path, fields,
        comment="smplstream head-mounted rig: p_head = rotation @ p_cam + translation (metres); "
        "head frame: origin between the eyes, x right, y down, z forward",
    )

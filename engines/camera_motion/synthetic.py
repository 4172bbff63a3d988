"""Real footage seen by a camera that turns by a known rotation: the test fixture of the
camera-motion estimate (``docs/head-mounted.md``).

A frame of a static camera is a record of the rays through its centre. A camera at the
same centre turned by ``R`` sees the same rays, re-sampled: its pixel ``p`` looks along
``R @ unproject(p)`` in the source camera's frame, which the source image shows at
``project(R @ unproject(p))``. For pinholes this is the homography ``K_src R K_dst^-1``; through
:class:`calibration.camera.Camera` it holds for a fisheye target too. The people in the
frames are real; only the camera moves. The result is exact up to the source's own
resolution (pixels the source never saw are black).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.camera import Camera

from .rotations import yaw_pitch_roll

#: The bundled clip (1768 x 994) is taken as a 110 degree wide pinhole (its true lens is
#: unknown and does not matter: the warp only needs a consistent model), so a narrower
#: virtual camera can turn +-30 degrees and still see it.
SOURCE_HFOV_DEG = 110.0


def source_camera(width: int, height: int, hfov_deg: float = SOURCE_HFOV_DEG) -> Camera:
    """The pinhole the source frames are taken to come from."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera("pinhole", width, height, K, np.zeros(0))


def virtual_pinhole(width: int = 512, height: int = 384, focal: float = 620.0) -> Camera:
    """The turning camera of the pinhole fixture (about 45 x 34 degrees)."""
    K = np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera("pinhole", width, height, K, np.zeros(0))


def virtual_fisheye(width: int = 512, height: int = 384, focal: float = 400.0) -> Camera:
    """The turning camera of the fisheye fixture (Kannala-Brandt, about 74 x 57 degrees)."""
    K = np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera("fisheye", width, height, K, np.array([0.08, -0.02, 0.004, -0.0005]))


@dataclass(frozen=True)
class HeadMotion:
    """A head turning side to side (``yaw``, +-``yaw_deg`` every ``yaw_period`` s) while
    nodding (``pitch``, +-``pitch_deg`` every ``pitch_period`` s); starts level, looking ahead."""

    yaw_deg: float = 30.0
    yaw_period: float = 4.0
    pitch_deg: float = 15.0
    pitch_period: float = 3.0

    def angles(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Yaw (right) and pitch (down) in degrees at times ``t`` (s)."""
        t = np.asarray(t, dtype=np.float64)
        return (self.yaw_deg * np.sin(2 * np.pi * t / self.yaw_period),
                self.pitch_deg * np.sin(2 * np.pi * t / self.pitch_period))

    def rotations(self, t: np.ndarray) -> np.ndarray:
        """Source-camera-from-turning-camera rotations ``(T, 3, 3)`` at times ``t``."""
        yaw, pitch = self.angles(t)
        return yaw_pitch_roll(yaw, pitch)


class RotationWarp:
    """Re-samples source frames into ``target`` turned by a rotation (see the module doc)."""

    def __init__(self, source: Camera, target: Camera):
        self.source, self.target = source, target
        u, v = np.meshgrid(np.arange(target.width, dtype=np.float64), np.arange(target.height, dtype=np.float64))
        self._rays = target.unproject(np.stack([u, v], axis=-1)).reshape(-1, 3)

    def maps(self, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps for source-from-target rotation ``rotation``."""
        src = self.source.project(self._rays @ np.asarray(rotation, np.float64).T)
        src = np.where(np.isfinite(src), src, -1e4).astype(np.float32)
        shape = (self.target.height, self.target.width)
        return src[:, 0].reshape(shape), src[:, 1].reshape(shape)

    def __call__(self, image: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        mx, my = self.maps(rotation)
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def boxes(self, boxes: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """Source-image boxes ``(P, 4)`` carried into the turned camera (the box of their
        outline's image; empty boxes for people out of view)."""
        out = []
        for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
            s = np.linspace(0, 1, 9)
            outline = np.concatenate([np.stack([x1 + (x2 - x1) * s, np.full(9, y1)], 1),
                                      np.stack([x1 + (x2 - x1) * s, np.full(9, y2)], 1),
                                      np.stack([np.full(9, x1), y1 + (y2 - y1) * s], 1),
                                      np.stack([np.full(9, x2), y1 + (y2 - y1) * s], 1)])
            rays = self.source.unproject(outline) @ np.asarray(rotation, np.float64)  # into the target frame
            px = self.target.project(rays)
            px = px[np.isfinite(px).all(axis=1)]
            if len(px) == 0:
                out.append([0.0, 0.0, 0.0, 0.0])
                continue
            out.append([px[:, 0].min(), px[:, 1].min(), px[:, 0].max(), px[:, 1].max()])
        return np.array(out, dtype=np.float64).reshape(-1, 4)


def read_frames(path: str, max_frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """RGB frames of a video and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"{path}: cannot open the video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps

"""A second camera made from one video, with a rig known by construction, for tests and
benchmarks of multi-camera runs (``docs/multi-camera.md``).

A flat scene parallel to the image plane at depth ``Z`` seen by two identical cameras side
by side (the second ``B`` metres to the right, looking the same way) looks the same in both,
shifted left by the disparity ``d = f B / Z`` pixels in the second. So a video and its copy
shifted by ``d`` pixels are an exact stereo pair of a world where everything (the people
too) is a cut-out at depth ``f B / d``: association has one answer, triangulation a known
depth, and a fit that uses both views must put the people there, whatever depth one camera
alone would guess. Real people are not flat, so the body cannot fit both views exactly; the
depth is what this checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from calibration.camera import Camera
from calibration.rig_calibration import RigCamera, write_multi_camera_rig

from .frames import Frame


class ShiftedSource:
    """``inner``'s frames shifted ``dx`` pixels to the left (the right edge black): the
    second camera of a stereo pair whose scene is at ``f B / dx`` (module doc)."""

    def __init__(self, inner, dx: int):
        if not 0 < dx < inner.size[0]:
            raise ValueError(f"ShiftedSource: the shift must be between 1 and the width - 1 pixels, got {dx}")
        self.inner, self.dx = inner, int(dx)
        self.name = f"{inner.name} (shifted {dx} px)"
        self.size, self.fps, self.is_live = inner.size, getattr(inner, "fps", None), inner.is_live
        self.frame_count = getattr(inner, "frame_count", None)

    def frames(self) -> Iterator[Frame]:
        for frame in self.inner.frames():
            image = np.zeros_like(frame.image)
            image[:, :-self.dx] = frame.image[:, self.dx:]
            frame.image = image
            yield frame

    def close(self) -> None:
        self.inner.close()


def write_stereo_rig(path: str | Path, camera: Camera, baseline: float, depth: float) -> int:
    """Write the rig of two ``camera`` s, the second ``baseline`` metres to the right of the
    first, and return the whole-pixel disparity of a scene at ``depth`` metres (the shift of
    :class:`ShiftedSource`; the scene is then at ``camera.fx * baseline / dx`` exactly)."""
    dx = round(camera.fx * baseline / depth)
    write_multi_camera_rig([RigCamera("left", camera, np.eye(3), np.zeros(3)),
                            RigCamera("right", camera, np.eye(3), np.array([baseline, 0.0, 0.0]))], path,
                           board="virtual stereo pair")
    return dx

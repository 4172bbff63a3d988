"""Camera models, checkerboard calibration, undistortion and head-mounted rig extrinsics.

Main entry points (see docs/calibration.md):

- :class:`calibration.camera.Camera`, :func:`calibration.camera.assumed_camera`;
- :func:`calibration.camera_file.load_camera`, :func:`~calibration.camera_file.save_camera`,
  :func:`~calibration.camera_file.camera_or_assumed`;
- :func:`calibration.torch_projection.project_points` (differentiable, imports torch);
- :func:`calibration.calibrate.calibrate_source`, :func:`calibration.cli.main`;
- :class:`calibration.rig.Rig`, :func:`~calibration.rig.load_rig`, :func:`~calibration.rig.save_rig`.
"""

from calibration.camera import DEFAULT_HFOV_DEG, Camera, CameraError, assumed_camera
from calibration.camera_file import camera_or_assumed, load_camera, save_camera
from calibration.fileio import FileFormatError
from calibration.rig import Rig, RigError, load_rig, save_rig

__all__ = [
    "DEFAULT_HFOV_DEG",
    "Camera",
    "CameraError",
    "FileFormatError",
    "Rig",
    "RigError",
    "assumed_camera",
    "camera_or_assumed",
    "load_camera",
    "load_rig",
    "save_camera",
    "save_rig",
]

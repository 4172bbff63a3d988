"""Camera files: YAML (``cv2.FileStorage``), JSON, or XML.

Fields (all required unless noted):

- ``model``: ``pinhole`` or ``fisheye``;
- ``image_width``, ``image_height``: the resolution the intrinsics refer to (pixels);
- ``camera_matrix``: 3x3 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``;
- ``dist_coeffs``: OpenCV order; pinhole 0/4/5/8/12 values, fisheye exactly 4;
- anything else (e.g. ``rms_reprojection_error`` written by calibration) is kept as metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


import numpy as np

from calibration.camera import MODELS, Camera, CameraError
from calibration.fileio import FileFormatError, file_format, get_array, get_int, get_str, read_fields, write_fields

REQUIRED_FIELDS = ("model", "image_width", "image_height", "camera_matrix", "dist_coeffs")


def camera_to_fields(camera: Camera, row_vector: bool = True) -> dict[str, Any]:
    """The file fields of ``camera``; ``dist_coeffs`` as a 1xN matrix (as OpenCV writes it) or a flat list."""
    return {
        "model": camera.model,
        "image_width": camera.width,
        "image_height": camera.height,
        "camera_matrix": camera.K,
        "dist_coeffs": camera.dist.reshape(1, -1) if row_vector else camera.dist.copy(),
    }


def camera_from_fields(fields: dict[str, Any], where: str = "camera") -> Camera:
    """Build a :class:`Camera` from file fields; errors name ``where`` and the field."""
    model = get_str(fields, "model", where, MODELS)
    width = get_int(fields, "image_width", where)
    height = get_int(fields, "image_height", where)
    K = get_array(fields, "camera_matrix", where, shape=(3, 3))
    dist = get_array(fields, "dist_coeffs", where, flatten=True)
    try:
        return Camera(model, width, height, K, dist)
    except CameraError as e:
        raise FileFormatError(f"{where}: {e}") from None


def load_camera(path: str | Path) -> Camera:
    """Read a camera file (``.yaml``/``.yml``, ``.json`` or ``.xml``).

    Raises :class:`FileFormatError` with a one-line message naming the file and field.
    """
    fields = read_fields(path)
    return camera_from_fields(fields, str(path))


def load_camera_metadata(path: str | Path) -> dict[str, Any]:
    """The fields of a camera file other than the intrinsics (e.g. calibration figures)."""
    return {k: v for k, v in read_fields(path).items() if k not in REQUIRED_FIELDS}


def save_camera(camera: Camera, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write ``camera`` (and optional scalar/array ``metadata``) to ``path`` (format from the suffix)."""
    if camera.model == "pinhole" and camera.dist.size == 0:
        # five zeros rather than an empty matrix, which some readers of OpenCV files reject
        camera = Camera("pinhole", camera.width, camera.height, camera.K, np.zeros(5))
    fields = camera_to_fields(camera, row_vector=file_format(path) != "json")
    for k, v in (metadata or {}).items():
        if k in fields:
            raise ValueError(f"save_camera: metadata key {k!r} clashes with a camera field")
        fields[k] = v
    comment = (
        f"smplstream camera file: {camera.model} model, OpenCV conventions "
        "(dist_coeffs in OpenCV order; pixel centres at integer coordinates)"
    )
    write_fields(path, fields, comment=comment)


def camera_or_assumed(path: str | Path | None, width: int, height: int) -> tuple[Camera, bool]:
    """The camera from ``path`` scaled to ``width`` x ``height``, or the assumed one.

    Returns ``(camera, assumed)``; ``assumed`` is True when no file was given, so the caller can
    say so ("no camera file: assuming a 63 deg horizontal field of view"). A file whose aspect
    ratio differs from the frames' (beyond 1%) is an error: the frames are cropped, not resized.
    """
    from calibration.camera import assumed_camera

    if path is None:
        return assumed_camera(width, height), True
    cam = load_camera(path)
    if (cam.width, cam.height) != (width, height):
        if abs(cam.width / cam.height - width / height) > 0.01 * (width / height):
            raise FileFormatError(
                f"{path}: calibrated at {cam.width}x{cam.height}, but the frames are {width}x{height} "
                "(different aspect ratio: calibrate at this resolution)"
            )
        cam = cam.scaled(width, height)
    return cam, False


def camera_note(camera: Camera, assumed: bool, path: str | Path | None = None) -> str:
    """One line for the run's log saying which intrinsics are used."""
    hfov, vfov = camera.fov_deg()
    if assumed:
        return (
            f"no camera file: assuming a distortion-free pinhole with a {hfov:.0f} deg horizontal field of view "
            f"(fx=fy={camera.fx:.1f} px at {camera.width}x{camera.height}); give --camera CAM.yaml for a "
            "calibrated or fisheye camera"
        )
    return (
        f"camera {path}: {camera.model}, {camera.width}x{camera.height}, fx={camera.fx:.1f} fy={camera.fy:.1f}, "
        f"field of view {hfov:.0f} x {vfov:.0f} deg"
    )


__all__ = [
    "camera_note",
    "REQUIRED_FIELDS",
    "camera_from_fields",
    "camera_or_assumed",
    "camera_to_fields",
    "load_camera",
    "load_camera_metadata",
    "save_camera",
]


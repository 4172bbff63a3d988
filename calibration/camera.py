"""Camera intrinsics: pinhole with OpenCV radial-tangential distortion, and fisheye (Kannala-Brandt).

Frames and units follow OpenCV: camera frame x right, y down, z forward, metres; pixel
coordinates with the centre of the top-left pixel at (0, 0). The numpy methods go through
OpenCV (``cv2.projectPoints``, ``cv2.fisheye.*``); :mod:`calibration.torch_projection` holds
the differentiable torch equivalent used for guidance.

Distortion coefficients are in OpenCV order:

- ``pinhole``: ``k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4]]]`` (4, 5, 8 or 12 values, or none);
- ``fisheye``: ``k1 k2 k3 k4`` of ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

CameraModel = Literal["pinhole", "fisheye"]
MODELS: tuple[str, ...] = ("pinhole", "fisheye")

#: Horizontal field of view assumed when no camera file is given. Typical webcams and laptop
#: cameras are 60-70 degrees horizontally (e.g. Logitech C920: 70.4 deg diagonal, ~62 deg
#: horizontal); phones' main cameras are wider (~65-75 deg). 63 deg sits in the middle.
DEFAULT_HFOV_DEG: float = 63.0

#: Accepted numbers of pinhole distortion coefficients (OpenCV order). 14 (tilted sensor) is
#: not supported because the torch projection does not implement the tilt.
PINHOLE_DIST_SIZES: tuple[int, ...] = (0, 4, 5, 8, 12)

# Tight criteria: the default 5 iterations of cv2.undistortPoints leave pixel-sized errors on
# strong distortion.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


class CameraError(ValueError):
    """Invalid camera parameters or camera file; the message names the file/field."""


@dataclass(frozen=True, eq=False)
class Camera:
    """Intrinsics of one camera at one resolution.

    Attributes:
        model: ``"pinhole"`` (OpenCV radial-tangential) or ``"fisheye"`` (Kannala-Brandt, ``cv2.fisheye``).
        width, height: image size in pixels the intrinsics refer to.
        K: 3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (no skew).
        dist: distortion coefficients, OpenCV order (see module doc).
    """

    model: CameraModel
    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray
    _maps: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        K = np.array(self.K, dtype=np.float64)
        dist = np.array(self.dist, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "width", _as_int(self.width, "image_width"))
        object.__setattr__(self, "height", _as_int(self.height, "image_height"))
        validate_intrinsics(self.model, self.width, self.height, K, dist)
        K.setflags(write=False)
        dist.setflags(write=False)

    # -- basic properties -------------------------------------------------------------------
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    @property
    def is_distorted(self) -> bool:
        """True for fisheye, and for pinhole with any non-zero coefficient."""
        return self.model == "fisheye" or bool(np.any(self.dist != 0))

    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view in degrees, through the principal point.

        Sums the angles of the two image edges from the optical axis, so fisheye lenses wider
        than 180 degrees are measured correctly. NaN where an edge lies outside the lens model.
        """
        edges = self.unproject(np.array([[-0.5, self.cy], [self.width - 0.5, self.cy],
                                         [self.cx, -0.5], [self.cx, self.height - 0.5]]))
        off_axis = np.degrees(np.arccos(np.clip(edges[:, 2], -1.0, 1.0)))
        return float(off_axis[0] + off_axis[1]), float(off_axis[2] + off_axis[3])

    def __repr__(self) -> str:
        return (
            f"Camera(model={self.model!r}, size={self.width}x{self.height}, fx={self.fx:.2f}, fy={self.fy:.2f}, "
            f"cx={self.cx:.2f}, cy={self.cy:.2f}, dist={np.array2string(self.dist, precision=5)})"
        )

    def allclose(self, other: Camera, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Same model, size and (numerically) the same parameters."""
        if (self.model, self.width, self.height) != (other.model, other.width, other.height):
            return False
        n = max(self.dist.size, other.dist.size)
        return np.allclose(self.K, other.K, rtol, atol) and np.allclose(
            _pad(self.dist, n), _pad(other.dist, n), rtol, atol
        )

    # -- projection ---------------------------------------------------------------------------
    def project(self, points: np.ndarray) -> np.ndarray:
        """Project camera-frame 3D points ``(..., 3)`` (metres) to pixels ``(..., 2)``.

        Pinhole: points at or behind the camera plane (z <= 0) give NaN. Fisheye: the angle
        from the optical axis is ``atan2(sqrt(x^2 + y^2), z)``, so lenses wider than 180 degrees
        project points beside and behind the camera plane (same as ``cv2.fisheye.projectPoints``
        for z > 0, which cannot represent them); only points exactly behind the centre give NaN.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1] != 3:
            raise ValueError(f"project: points must have shape (..., 3), got {pts.shape}")
        flat = pts.reshape(-1, 3)
        out = np.full((flat.shape[0], 2), np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if self.model == "fisheye":
            x, y, z = flat[ok].T
            rho = np.hypot(x, y)
            theta = np.arctan2(rho, z)
            t2 = theta * theta
            k1, k2, k3, k4 = self.dist
            theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(rho > 1e-12, theta_d / np.where(rho > 1e-12, rho, 1.0), np.where(z > 0, 1.0 / z, np.nan))
            out[ok] = np.stack([self.fx * x * scale + self.cx, self.fy * y * scale + self.cy], axis=1)
        else:
            ok &= flat[:, 2] > 0
            if ok.any():
                zero = np.zeros(3)
                img, _ = cv2.projectPoints(np.ascontiguousarray(flat[ok]), zero, zero, self.K, self._cv_dist())
                out[ok] = img.reshape(-1, 2)
        return out.reshape(pts.shape[:-1] + (2,))

    def undistort_points(self, pixels: np.ndarray, new_K: np.ndarray | None = None) -> np.ndarray:
        """Remove distortion from pixel coordinates ``(..., 2)``.

        Returns normalised coordinates ``(x/z, y/z)`` of the viewing rays, or, when ``new_K`` is
        given, pixels of the ideal (distortion-free) pinhole camera ``new_K``. Non-finite inputs
        give NaN. Fisheye rays at 90 degrees or more from the axis have no pinhole image and
        give NaN.
        """
        px = np.asarray(pixels, dtype=np.float64)
        if px.shape[-1] != 2:
            raise ValueError(f"undistort_points: pixels must have shape (..., 2), got {px.shape}")
        flat = px.reshape(-1, 2)
        out = np.full_like(flat, np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if self.model == "fisheye":
            ok &= self._fisheye_valid(flat)
        if ok.any():
            src = np.ascontiguousarray(flat[ok]).reshape(-1, 1, 2)
            P = None if new_K is None else np.asarray(new_K, dtype=np.float64)
            if self.model == "fisheye":
                und = cv2.fisheye.undistortPoints(src, self.K, self.dist, None, P, criteria=_UNDISTORT_CRITERIA)
            else:
                und = _undistort_pinhole(src, self.K, self._cv_dist(), P)
            out[ok] = und.reshape(-1, 2)
        return out.reshape(px.shape)

    def unproject(self, pixels: np.ndarray) -> np.ndarray:
        """Viewing rays ``(..., 3)`` (unit length, camera frame) of pixels ``(..., 2)``.

        For fisheye the ray is built from the undistorted angle, so rays beyond 90 degrees
        (possible with >180 degree lenses) are returned correctly.
        """
        px = np.asarray(pixels, dtype=np.float64)
        if px.shape[-1] != 2:
            raise ValueError(f"unproject: pixels must have shape (..., 2), got {px.shape}")
        if self.model == "pinhole":
            xy = self.undistort_points(px)
            rays = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1)
            return rays / np.linalg.norm(rays, axis=-1, keepdims=True)
        flat = px.reshape(-1, 2)
        out = np.full((flat.shape[0], 3), np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            # distorted normalised coordinates -> theta_d (radius) and direction
            a = (flat[ok, 0] - self.cx) / self.fx
            b = (flat[ok, 1] - self.cy) / self.fy
            theta_d = np.hypot(a, b)
            theta = _solve_kb_theta(theta_d, self.dist)
            with np.errstate(invalid="ignore", divide="ignore"):
                s = np.where(theta_d > 1e-12, np.sin(theta) / np.where(theta_d > 1e-12, theta_d, 1.0), 1.0)
            out[ok] = np.stack([a * s, b * s, np.cos(theta)], axis=1)
        return out.reshape(px.shape[:-1] + (3,))

    def normalize_keypoints(self, keypoints: np.ndarray) -> np.ndarray:
        """Undistorted normalised coordinates ``(x/z, y/z)`` of 2D keypoints in pixels.

        Accepts ``(..., 2)`` pixels (a point without a pinhole image gives NaN) or ``(..., 3)``
        (pixel x, y, confidence; 0 means missing). With confidences the output has no NaN:
        missing points keep confidence 0 with coordinates 0, and points that cannot be
        undistorted (non-finite, or a fisheye ray 90 degrees or more off-axis) become missing.
        This is what the lifter consumes: a distortion-free pinhole view with focal length 1
        and principal point 0.
        """
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.shape[-1] == 2:
            return self.undistort_points(kp)
        if kp.shape[-1] == 3:
            conf = np.where(np.isfinite(kp[..., 2]), kp[..., 2], 0.0)
            present = conf > 0
            xy = np.zeros(kp.shape[:-1] + (2,))
            xy[present] = self.undistort_points(kp[present][:, :2])
            bad = ~np.isfinite(xy).all(axis=-1)
            xy[bad] = 0.0
            conf = np.where(bad, 0.0, conf)
            return np.concatenate([xy, conf[..., None]], axis=-1)
        raise ValueError(f"normalize_keypoints: keypoints must have shape (..., 2) or (..., 3), got {kp.shape}")

    # -- ideal pinhole & image undistortion ------------------------------------------------------
    def ideal_pinhole(self, balance: float = 0.0, size: tuple[int, int] | None = None) -> Camera:
        """A distortion-free pinhole camera for undistorted images of this one.

        ``balance`` 0 keeps only valid pixels (crops the black border), 1 keeps the whole
        original field of view (pinhole) or as much of it as fits (fisheye). ``size`` defaults
        to this camera's size.
        """
        if not 0.0 <= balance <= 1.0:
            raise ValueError(f"ideal_pinhole: balance must be in [0, 1], got {balance}")
        w, h = size or self.size
        if not self.is_distorted:
            K = self.scaled(w, h).K if (w, h) != self.size else self.K.copy()
            return Camera("pinhole", w, h, K, np.zeros(0))
        if self.model == "fisheye":
            K = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                self.K, self.dist, self.size, np.eye(3), balance=balance, new_size=(w, h)
            )
        else:
            K, _ = cv2.getOptimalNewCameraMatrix(self.K, self._cv_dist(), self.size, balance, (w, h))
        K = np.array(K, dtype=np.float64)
        K[0, 1] = 0.0
        return Camera("pinhole", w, h, K, np.zeros(0))

    def undistortion_maps(self, target: Camera | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps from this camera's image to ``target`` (default: ``ideal_pinhole()``).

        Maps are cached per target, so undistorting a stream costs one remap per frame.
        """
        target = target or self.ideal_pinhole()
        if target.is_distorted:
            raise ValueError("undistortion_maps: the target camera must be a distortion-free pinhole")
        key = (target.width, target.height, target.K.tobytes())
        maps = self._maps.get(key)
        if maps is None:
            if self.model == "fisheye":
                maps = cv2.fisheye.initUndistortRectifyMap(
                    self.K, self.dist, np.eye(3), target.K, target.size, cv2.CV_16SC2
                )
            else:
                maps = cv2.initUndistortRectifyMap(
                    self.K, self._cv_dist(), np.eye(3), target.K, target.size, cv2.CV_16SC2
                )
            if len(self._maps) > 8:  # a handful of targets at most; do not grow without bound
                self._maps.clear()
            self._maps[key] = maps
        return maps

    def undistort_image(
        self, image: np.ndarray, target: Camera | None = None, interpolation: int = cv2.INTER_LINEAR
    ) -> np.ndarray:
        """Resample ``image`` (taken by this camera) into the ideal pinhole ``target``."""
        if image.shape[1] != self.width or image.shape[0] != self.height:
            raise ValueError(
                f"undistort_image: image is {image.shape[1]}x{image.shape[0]} but the camera is "
                f"{self.width}x{self.height}; use camera.scaled(w, h) first"
            )
        m1, m2 = self.undistortion_maps(target)
        return cv2.remap(image, m1, m2, interpolation, borderMode=cv2.BORDER_CONSTANT)

    # -- resolution -----------------------------------------------------------------------------
    def scaled(self, width: int, height: int) -> Camera:
        """The same camera at another resolution (the image resized, not cropped).

        Pixel centres map as ``x' = (x + 0.5) * sx - 0.5``; distortion, being defined on
        normalised coordinates, is unchanged.
        """
        width, height = _as_int(width, "width"), _as_int(height, "height")
        if width <= 0 or height <= 0:
            raise ValueError(f"scaled: size must be positive, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(self.model, width, height, K, self.dist.copy())

    # -- torch --------------------------------------------------------------------------------
    def torch_params(self, dtype=None, device=None):
        """``(K, dist)`` as torch tensors for :func:`calibration.torch_projection.project_points`."""
        import torch

        dtype = dtype or torch.float32
        return (
            torch.tensor(self.K, dtype=dtype, device=device),
            torch.tensor(self.dist, dtype=dtype, device=device),
        )

    def project_torch(self, points):
        """Differentiable :meth:`project` for a torch tensor ``(..., 3)`` (any dtype/device)."""
        from calibration.torch_projection import project_points

        K, dist = self.torch_params(points.dtype, points.device)
        return project_points(points, K, dist, self.model)

    # -- helpers --------------------------------------------------------------------------------
    def _cv_dist(self) -> np.ndarray:
        return self.dist if self.dist.size else np.zeros(4)

    def _fisheye_valid(self, flat_pixels: np.ndarray) -> np.ndarray:
        """Pixels whose undistorted angle is below 90 degrees (they have a pinhole image)."""
        a = (flat_pixels[:, 0] - self.cx) / self.fx
        b = (flat_pixels[:, 1] - self.cy) / self.fy
        with np.errstate(invalid="ignore"):
            return _solve_kb_theta(np.hypot(a, b), self.dist) < (math.pi / 2 - 1e-6)


def assumed_camera(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> Camera:
    """A distortion-free pinhole camera for a ``width`` x ``height`` image of unknown intrinsics.

    Square pixels, principal point at the image centre, focal length from the horizontal field
    of view (default :data:`DEFAULT_HFOV_DEG`, typical of webcams).
    """
    width, height = _as_int(width, "width"), _as_int(height, "height")
    if width <= 0 or height <= 0:
        raise ValueError(f"assumed_camera: image size must be positive, got {width}x{height}")
    if not 1.0 <= hfov_deg < 179.0:
        raise ValueError(f"assumed_camera: hfov_deg must be in [1, 179), got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera("pinhole", width, height, K, np.zeros(0))


def validate_intrinsics(model: str, width: int, height: int, K: np.ndarray, dist: np.ndarray) -> None:
    """Raise :class:`CameraError` naming the field when the parameters cannot describe a camera."""
    if model not in MODELS:
        raise CameraError(f"model: must be one of {', '.join(MODELS)}, got {model!r}")
    if width <= 0:
        raise CameraError(f"image_width: must be a positive integer, got {width}")
    if height <= 0:
        raise CameraError(f"image_height: must be a positive integer, got {height}")
    if K.shape != (3, 3):
        raise CameraError(f"camera_matrix: must be 3x3, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise CameraError("camera_matrix: contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraError(f"camera_matrix: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if K[0, 1] != 0 or K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1]):
        raise CameraError("camera_matrix: must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    if not np.isfinite(dist).all():
        raise CameraError("dist_coeffs: contains non-finite values")
    if model == "fisheye" and dist.size != 4:
        raise CameraError(f"dist_coeffs: fisheye needs exactly 4 values (k1 k2 k3 k4), got {dist.size}")
    if model == "pinhole" and dist.size not in PINHOLE_DIST_SIZES:
        raise CameraError(
            f"dist_coeffs: pinhole needs 0, 4, 5, 8 or 12 values (OpenCV order), got {dist.size}"
        )


def _solve_kb_theta(theta_d: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Invert ``theta_d = theta (1 + k1 t^2 + k2 t^4 + k3 t^6 + k4 t^8)`` by Newton's method.

    Points where the polynomial is not invertible (past its turning point) give NaN.
    """
    k1, k2, k3, k4 = (float(v) for v in k)
    theta = np.array(theta_d, dtype=np.float64)
    for _ in range(30):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        step = f / np.where(np.abs(df) > 1e-12, df, 1e-12)
        theta = theta - step
        if np.all(np.abs(step) < 1e-14):
            break
    t2 = theta * theta
    resid = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
    df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
    bad = (np.abs(resid) > 1e-9) | (df <= 0) | (theta < 0) | (theta > math.pi)
    return np.where(bad, np.nan, theta)


def _undistort_pinhole(src: np.ndarray, K: np.ndarray, dist: np.ndarray, P: np.ndarray | None) -> np.ndarray:
    # OpenCV 4 spells the iterative version undistortPointsIter; OpenCV 5 folded it into
    # undistortPoints(criteria=...)
    if hasattr(cv2, "undistortPointsIter"):
        return cv2.undistortPointsIter(src, K, dist, None, P, _UNDISTORT_CRITERIA)
    return cv2.undistortPoints(src, K, dist, None, P, criteria=_UNDISTORT_CRITERIA)


def _pad(v: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([v, np.zeros(n - v.size)])


def _as_int(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise CameraError(f"{name}: must be an integer, got {v!r}")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise CameraError(f"{name}: must be an integer, got {v!r}")

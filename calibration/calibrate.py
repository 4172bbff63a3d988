"""Camera calibration from images or a video of a checkerboard or ChArUco board.

Steps: read frames (a folder of images, or a video sampled evenly), detect the board,
reject blurred views (variance of the Laplacian inside the board, relative to the other
views) and near-duplicates (corners within a few pixels of an already kept view), keep the
views that best cover the image and the range of board tilts, calibrate with
``cv2.calibrateCamera`` (pinhole) or ``cv2.fisheye.calibrate`` (fisheye), drop views whose
reprojection error is far above the others and calibrate again.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardSpec, Detection
from calibration.camera import Camera, CameraError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_VIEWS = 5
COVERAGE_GRID = (8, 6)  # cells across x, y for coverage scoring and reporting


class CalibrationError(RuntimeError):
    """Calibration could not be done; the message says why and what to try."""


@dataclass(eq=False)
class View:
    """One usable board detection."""

    name: str
    detection: Detection
    sharpness: float  # variance of the Laplacian inside the board's bounding box


@dataclass
class CalibrationResult:
    camera: Camera
    rms: float  # RMS reprojection error over all corners of the used views, pixels
    views: list[View]  # the views used, in the order of per_view_errors
    per_view_errors: np.ndarray  # RMS reprojection error of each used view, pixels
    rvecs: list[np.ndarray]
    tvecs: list[np.ndarray]
    board: BoardSpec
    frames_read: int = 0
    rejected: dict[str, list[str]] = field(default_factory=dict)  # reason -> view names
    coverage: float = 0.0  # fraction of COVERAGE_GRID cells holding a used corner

    def summary(self) -> str:
        c = self.camera
        lines = [
            f"board: {self.board.describe()}",
            f"frames read: {self.frames_read}; views used: {len(self.views)}"
            + "".join(f"; rejected {reason}: {len(names)}" for reason, names in self.rejected.items() if names),
            f"model: {c.model}  image: {c.width}x{c.height}",
            f"fx={c.fx:.2f} fy={c.fy:.2f} cx={c.cx:.2f} cy={c.cy:.2f}  (fov {c.fov_deg()[0]:.1f} x {c.fov_deg()[1]:.1f} deg)",
            f"dist_coeffs: {' '.join(f'{v:.6g}' for v in c.dist)}",
            f"RMS reprojection error: {self.rms:.3f} px; per view: min {self.per_view_errors.min():.3f}, "
            f"median {np.median(self.per_view_errors):.3f}, max {self.per_view_errors.max():.3f}",
            f"image coverage: {100 * self.coverage:.0f}% of a {COVERAGE_GRID[0]}x{COVERAGE_GRID[1]} grid",
        ]
        if self.coverage < 0.6:
            lines.append("warning: corners cover little of the image; add views with the board near the edges and corners")
        if self.rms > 1.0:
            lines.append("warning: RMS above 1 px; check the board size/square, focus, and the --model")
        return "\n".join(lines)

    def metadata(self) -> dict:
        """Fields written next to the intrinsics in the camera file."""
        return {
            "rms_reprojection_error": float(self.rms),
            "num_views": len(self.views),
            "per_view_errors": self.per_view_errors.astype(np.float64),
            "coverage": float(self.coverage),
            "board": self.board.describe(),
            "calibrated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


# --- frames ----------------------------------------------------------------------------------
def iter_frames(source: str | Path, max_frames: int = 300) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, BGR image)`` from a folder of images (sorted by name) or a video file.

    A video is sampled evenly so that at most ``max_frames`` frames are looked at.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CalibrationError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        step = max(1, math.ceil(len(files) / max_frames))
        for p in files[::step]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise CalibrationError(f"{p}: cannot read this image")
            yield p.name, img
        return
    if not path.exists():
        raise CalibrationError(f"{path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise CalibrationError(f"{path}: one image is not enough; give a folder of images or a video")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CalibrationError(f"{path}: cannot open as a video")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        step = max(1, math.ceil(total / max_frames)) if total > 0 else 1
        index = 0
        while True:
            if not cap.grab():
                break
            if index % step == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield f"frame{index:06d}", frame
            index += 1
        if index == 0:
            raise CalibrationError(f"{path}: no frames could be decoded")
    finally:
        cap.release()


# --- detection and view filtering -------------------------------------------------------------
def board_sharpness(gray: np.ndarray, points: np.ndarray) -> float:
    """Variance of the Laplacian inside the bounding box of ``points``."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 1
    h, w = gray.shape
    roi = gray[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if roi.size < 16:
        return 0.0
    return float(cv2.Laplacian(roi, cv2.CV_64F).var())


def _same_view(a: Detection, b: Detection, tol_px: float) -> bool:
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    if common.size < 0.5 * max(a.ids.size, b.ids.size):
        return False
    d = np.linalg.norm(a.image_points[ia] - b.image_points[ib], axis=1)
    return float(d.mean()) < tol_px


def detect_views(
    frames: Iterable[tuple[str, np.ndarray]],
    board: BoardSpec,
    blur_ratio: float = 0.3,
    duplicate_px: float | None = None,
) -> tuple[list[View], dict[str, list[str]], tuple[int, int], int]:
    """Detect the board in each frame and drop blurred and near-duplicate views.

    Returns ``(views, rejected, image_size, frames_read)``. A view is blurred when its
    board-region sharpness is below ``blur_ratio`` times the median of all detected views; a
    duplicate when its corners lie on average within ``duplicate_px`` (default 1% of the image
    diagonal) of a kept view's (the sharper of the two is kept).
    """
    rejected: dict[str, list[str]] = {"no board": [], "blurred": [], "duplicate": []}
    found: list[View] = []
    size: tuple[int, int] | None = None
    n = 0
    for name, img in frames:
        n += 1
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if size is None:
            size = (gray.shape[1], gray.shape[0])
        elif size != (gray.shape[1], gray.shape[0]):
            raise CalibrationError(
                f"{name}: image is {gray.shape[1]}x{gray.shape[0]} but earlier ones are {size[0]}x{size[1]}; "
                "calibrate one resolution at a time"
            )
        det = board.detect(gray)
        if det is None:
            rejected["no board"].append(name)
            continue
        found.append(View(name, det, board_sharpness(gray, det.image_points)))
    if size is None:
        raise CalibrationError("no frames to calibrate from")
    if found:
        threshold = blur_ratio * float(np.median([v.sharpness for v in found]))
        rejected["blurred"] = [v.name for v in found if v.sharpness < threshold]
        found = [v for v in found if v.sharpness >= threshold]
    tol = duplicate_px if duplicate_px is not None else 0.01 * math.hypot(*size)
    kept: list[View] = []
    for v in found:
        for i, k in enumerate(kept):
            if _same_view(v.detection, k.detection, tol):
                if v.sharpness > k.sharpness:
                    rejected["duplicate"].append(k.name)
                    kept[i] = v
                else:
                    rejected["duplicate"].append(v.name)
                break
        else:
            kept.append(v)
    return kept, rejected, size, n


def _cells(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    gx, gy = COVERAGE_GRID
    cx = np.clip((points[:, 0] / size[0] * gx).astype(int), 0, gx - 1)
    cy = np.clip((points[:, 1] / size[1] * gy).astype(int), 0, gy - 1)
    return np.unique(cy * gx + cx)


def _tilt_bin(det: Detection, board: BoardSpec) -> int:
    """Coarse direction of the board's tilt from its foreshortening: 0 frontal, 1-4 left/right/up/down."""
    H, _ = cv2.findHomography(det.object_points[:, :2], det.image_points, 0)
    if H is None:
        return 0
    # local scale of the board image at the board's left/right/top/bottom edge
    obj = det.object_points[:, :2]
    lo, hi = obj.min(axis=0), obj.max(axis=0)
    mid = (lo + hi) / 2

    def scale_at(p):
        w = H[2, 0] * p[0] + H[2, 1] * p[1] + H[2, 2]
        return 1.0 / (w * w)

    lr = scale_at((lo[0], mid[1])) / scale_at((hi[0], mid[1]))
    tb = scale_at((mid[0], lo[1])) / scale_at((mid[0], hi[1]))
    if max(abs(math.log(lr)), abs(math.log(tb))) < 0.15:
        return 0
    if abs(math.log(lr)) >= abs(math.log(tb)):
        return 1 if lr > 1 else 2
    return 3 if tb > 1 else 4


def select_views(views: list[View], size: tuple[int, int], board: BoardSpec, max_views: int) -> list[View]:
    """At most ``max_views`` views, picked greedily to cover the image and the range of tilts.

    Each pick maximises the sum over its grid cells of ``1 / (1 + times covered)`` plus a bonus
    for an under-represented tilt direction; ties go to the sharper view.
    """
    if len(views) <= max_views:
        return list(views)
    cells = [_cells(v.detection.image_points, size) for v in views]
    tilts = [_tilt_bin(v.detection, board) for v in views]
    cover = np.zeros(COVERAGE_GRID[0] * COVERAGE_GRID[1])
    tilt_count = np.zeros(5)
    max_sharp = max(v.sharpness for v in views) or 1.0
    chosen: list[int] = []
    remaining = set(range(len(views)))
    while len(chosen) < max_views and remaining:
        def score(i: int) -> float:
            return (float(np.sum(1.0 / (1.0 + cover[cells[i]]))) / max(1, len(cells[i])) * 4
                    + 1.0 / (1.0 + tilt_count[tilts[i]]) + 0.01 * views[i].sharpness / max_sharp)

        best = max(remaining, key=score)
        chosen.append(best)
        remaining.discard(best)
        cover[cells[best]] += 1
        tilt_count[tilts[best]] += 1
    return [views[i] for i in sorted(chosen)]


def coverage_fraction(views: list[View], size: tuple[int, int]) -> float:
    """Fraction of the :data:`COVERAGE_GRID` cells that hold at least one corner."""
    if not views:
        return 0.0
    cells = np.unique(np.concatenate([_cells(v.detection.image_points, size) for v in views]))
    return cells.size / (COVERAGE_GRID[0] * COVERAGE_GRID[1])


# --- calibration -----------------------------------------------------------------------------
def _fisheye_flag(name: str) -> int:
    """OpenCV 4 has fisheye flags in ``cv2.fisheye`` (other values); OpenCV 5 merged them into ``cv2``."""
    value = getattr(cv2.fisheye, name, None)
    return int(value if value is not None else getattr(cv2, name))


def _solve(views: list[View], size: tuple[int, int], model: str, pinhole_flags: int):
    # (1, N, C): OpenCV 5's fisheye.calibrate rejects the (N, 1, C) layout of 4.x examples
    obj = [v.detection.object_points.astype(np.float64).reshape(1, -1, 3) for v in views]
    img = [v.detection.image_points.astype(np.float64).reshape(1, -1, 2) for v in views]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-10)
    try:
        if model == "fisheye":
            flags = _fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | _fisheye_flag("CALIB_FIX_SKEW")
            _, K, D, rvecs, tvecs = cv2.fisheye.calibrate(obj, img, size, np.zeros((3, 3)), np.zeros(4),
                                                          flags=flags, criteria=crit)
        else:
            obj32 = [o.astype(np.float32) for o in obj]
            img32 = [i.astype(np.float32) for i in img]
            _, K, D, rvecs, tvecs = cv2.calibrateCamera(obj32, img32, size, None, None,
                                                        flags=pinhole_flags, criteria=crit)
    except cv2.error as e:
        msg = " ".join(str(e).split())
        raise CalibrationError(f"OpenCV calibration failed ({msg[-160:]}); add more varied views") from None
    K = np.asarray(K, dtype=np.float64)
    K[0, 1] = 0.0
    D = np.asarray(D, dtype=np.float64).reshape(-1)
    try:
        cam = Camera(model, size[0], size[1], K, D)
    except CameraError as e:
        raise CalibrationError(f"calibration gave an invalid camera ({e}); add more varied views") from None
    errors = []
    sq = 0.0
    n = 0
    for o, i, r, t in zip(obj, img, rvecs, tvecs):
        if model == "fisheye":
            proj, _ = cv2.fisheye.projectPoints(o, r, t, K, D)
        else:
            proj, _ = cv2.projectPoints(o, r, t, K, D)
        d2 = np.sum((proj.reshape(-1, 2) - i.reshape(-1, 2)) ** 2, axis=1)
        errors.append(math.sqrt(float(d2.mean())))
        sq += float(d2.sum())
        n += d2.size
    return cam, math.sqrt(sq / n), np.array(errors), [np.ravel(r) for r in rvecs], [np.ravel(t) for t in tvecs]


def calibrate_views(
    views: list[View],
    size: tuple[int, int],
    board: BoardSpec,
    model: str = "pinhole",
    outlier_factor: float = 3.0,
    pinhole_flags: int = 0,
) -> CalibrationResult:
    """Calibrate from detected views; views with error above ``outlier_factor`` x median (and
    above 0.5 px) are dropped and the calibration is repeated once."""
    if model not in ("pinhole", "fisheye"):
        raise CalibrationError(f"--model: must be pinhole or fisheye, got {model!r}")
    if len(views) < MIN_VIEWS:
        raise CalibrationError(
            f"only {len(views)} usable board views (need at least {MIN_VIEWS}); check --board "
            "(inner corners, COLSxROWS) and show the board sharp, whole and from varied angles"
        )
    cam, rms, errs, rvecs, tvecs = _solve(views, size, model, pinhole_flags)
    rejected: list[str] = []
    bad = errs > max(outlier_factor * float(np.median(errs)), 0.5)
    if bad.any() and (~bad).sum() >= MIN_VIEWS:
        rejected = [v.name for v, b in zip(views, bad) if b]
        views = [v for v, b in zip(views, bad) if not b]
        cam, rms, errs, rvecs, tvecs = _solve(views, size, model, pinhole_flags)
    res = CalibrationResult(cam, rms, views, errs, rvecs, tvecs, board)
    res.rejected["reprojection outlier"] = rejected
    res.coverage = coverage_fraction(views, size)
    return res


def calibrate_images(
    frames: Iterable[tuple[str, np.ndarray]],
    board: BoardSpec,
    model: str = "pinhole",
    max_views: int = 40,
    blur_ratio: float = 0.3,
    duplicate_px: float | None = None,
) -> CalibrationResult:
    """Detect, filter, select and calibrate from ``(name, image)`` pairs."""
    views, rejected, size, n = detect_views(frames, board, blur_ratio, duplicate_px)
    selected = select_views(views, size, board, max_views)
    kept = {id(v) for v in selected}
    unselected = [v.name for v in views if id(v) not in kept]
    res = calibrate_views(selected, size, board, model)
    res.frames_read = n
    res.rejected = {**rejected, "not selected": unselected, **res.rejected}
    return res


def calibrate_source(source: str | Path, board: BoardSpec, model: str = "pinhole", max_views: int = 40,
                     max_frames: int = 300) -> CalibrationResult:
    """Calibrate from a folder of images or a video file (see :func:`iter_frames`)."""
    return calibrate_images(iter_frames(source, max_frames), board, model, max_views)


# --- coverage picture --------------------------------------------------------------------------
def draw_coverage(result: CalibrationResult, path: str | Path | None = None, max_side: int = 1280) -> np.ndarray:
    """A picture of the corners of all used views on an image-sized canvas (BGR), optionally saved.

    Each view has its own colour and its board outline; the grid is the coverage grid; the
    header gives the number of views, RMS error and coverage.
    """
    w, h = result.camera.size
    s = min(1.0, max_side / max(w, h))
    W, H = int(round(w * s)), int(round(h * s))
    canvas = np.full((H, W, 3), 32, np.uint8)
    gx, gy = COVERAGE_GRID
    for i in range(1, gx):
        x = int(round(i * W / gx))
        cv2.line(canvas, (x, 0), (x, H - 1), (70, 70, 70), 1)
    for j in range(1, gy):
        y = int(round(j * H / gy))
        cv2.line(canvas, (0, y), (W - 1, y), (70, 70, 70), 1)
    n = max(1, len(result.views))
    for k, v in enumerate(result.views):
        hue = int(180 * k / n)
        colour = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        pts = (v.detection.image_points + 0.5) * s - 0.5
        if len(pts) >= 3:
            hull = cv2.convexHull(pts.astype(np.float32)).astype(np.int32)
            cv2.polylines(canvas, [hull], True, colour, 1, cv2.LINE_AA)
        for p in pts:
            cv2.circle(canvas, (int(round(p[0])), int(round(p[1]))), 2, colour, -1, cv2.LINE_AA)
    text = (f"{len(result.views)} views  RMS {result.rms:.2f} px  coverage {100 * result.coverage:.0f}%  "
            f"{result.camera.model} {w}x{h}")
    cv2.putText(canvas, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), canvas):
            raise CalibrationError(f"{path}: cannot write the coverage picture")
    return canvas

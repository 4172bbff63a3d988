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
#: Below MIN_VIEWS a pinhole calibration still runs from this many views, with a warning,
#: when the views pin the focal length down to FEW_VIEWS_MAX_FOCAL_ERROR (relative, 1 sigma),
#: with the few-views model (FEW_VIEWS_FLAGS).
FEW_VIEWS_MIN = 3
FEW_VIEWS_MAX_FOCAL_ERROR = 0.10
#: Few views cannot tell the principal point and the higher distortion terms from the focal
#: length (on 4 real webcam views they left it +-14 %; with these fixed, +-3.5 %).
FEW_VIEWS_FLAGS = cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_K3
#: Video frames that get the detector's full-size tries (the rest only the fast ones): the
#: full-size tries cost up to a second an image.
VIDEO_THOROUGH_FRAMES = 60
DUPLICATE_FRACTION = 0.0025  # of the image diagonal: corners this close (mean) make a duplicate view
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
    warnings: list[str] = field(default_factory=list)
    focal_sigma: tuple[float, float] | None = None  # 1-sigma error of fx, fy (px) where estimated
    frame_names: list[str] = field(default_factory=list)  # every frame looked at, in order
    detection_tries: str = ""  # what the detector tried on each frame (BoardSpec.detection_tries)

    def summary(self) -> str:
        c = self.camera
        lines = [
            f"board: {self.board.describe()}",
            f"frames read: {self.frames_read}; views used: {len(self.views)}"
            + "".join(f"; rejected {reason}: {len(names)}" for reason, names in self.rejected.items() if names),
            f"model: {c.model}  image: {c.width}x{c.height}",
            f"fx={c.fx:.2f} fy={c.fy:.2f} cx={c.cx:.2f} cy={c.cy:.2f}  (fov {c.fov_deg()[0]:.1f} x {c.fov_deg()[1]:.1f} deg)",
            f"dist_coeffs: {' '.join(f'{v:.6g}' for v in c.dist)}",
            *([f"focal length error (1 sigma, from the fit's covariance): fx +-{self.focal_sigma[0]:.1f} px, "
               f"fy +-{self.focal_sigma[1]:.1f} px"] if self.focal_sigma else []),
            f"RMS reprojection error: {self.rms:.3f} px; per view: min {self.per_view_errors.min():.3f}, "
            f"median {np.median(self.per_view_errors):.3f}, max {self.per_view_errors.max():.3f}",
            f"image coverage: {100 * self.coverage:.0f}% of a {COVERAGE_GRID[0]}x{COVERAGE_GRID[1]} grid",
        ]
        if self.coverage < 0.6:
            lines.append("warning: corners cover little of the image; add views with the board near the edges and corners")
        if self.rms > 1.0:
            lines.append("warning: RMS above 1 px; check the board size/square, focus, and the --model")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def report(self) -> list[str]:
        """One line per frame looked at: whether the board was found (and by which try of
        the detector), and what became of the view, or why not."""
        used = {v.name: v for v in self.views}
        why = {name: reason for reason, names in self.rejected.items() for name in names}
        lines = []
        for name in self.frame_names:
            if name in used:
                lines.append(f"{name}: found ({used[name].detection.how}); used")
            elif why.get(name) == "no board":
                lines.append(f"{name}: not found (tried {self.detection_tries})")
            elif why.get(name) == "no board, fast tries only":
                lines.append(f"{name}: not found (fast tries only: full-size tries go to the first "
                             f"{VIDEO_THOROUGH_FRAMES} video frames without a board)")
            elif name in why:
                lines.append(f"{name}: found; not used: {why[name]}")
        return lines

    def metadata(self) -> dict:
        """Fields written next to the intrinsics in the camera file."""
        return {
            "rms_reprojection_error": float(self.rms),
            "num_views": len(self.views),
            "per_view_errors": self.per_view_errors.astype(np.float64),
            "coverage": float(self.coverage),
            "board": self.board.describe(),
            **({"warnings": "; ".join(self.warnings)} if self.warnings else {}),
            **({"focal_sigma_px": np.asarray(self.focal_sigma, np.float64)} if self.focal_sigma else {}),
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
    thorough_frames: int | None = None,
) -> tuple[list[View], dict[str, list[str]], tuple[int, int], int]:
    """Detect the board in each frame and drop blurred and near-duplicate views.

    ``thorough_frames``: at most this many frames without a board found by the fast tries
    get the detector's full-size tries (``None``: every frame); the others are rejected as
    ``"no board, fast tries only"``.

    Returns ``(views, rejected, image_size, frames_read)``. A view is blurred when its
    board-region sharpness is below ``blur_ratio`` times the median of all detected views; a
    duplicate when its corners lie on average within ``duplicate_px`` (default DUPLICATE_FRACTION of the image
    diagonal) of a kept view's (the sharper of the two is kept).
    """
    rejected: dict[str, list[str]] = {"no board": [], "no board, fast tries only": [], "blurred": [], "duplicate": []}
    found: list[View] = []
    thorough_left = thorough_frames
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
        det = board.detect(gray, tries="fast")
        if det is None and (thorough_left is None or thorough_left > 0):
            det = board.detect(gray, tries="full")
            if det is None and thorough_left is not None:
                thorough_left -= 1
        elif det is None:
            rejected["no board, fast tries only"].append(name)
            continue
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
    # A board held still repeats its corners to within a pixel or two of noise; one moved by
    # a few pixels is a new view (on real 48-frame videos 1 % threw away 80 % of the views
    # and moved the focal length 2-11 % from another tool's: docs/calibration.md).
    tol = duplicate_px if duplicate_px is not None else DUPLICATE_FRACTION * math.hypot(*size)
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
    sigma = None
    try:
        if model == "fisheye":
            flags = _fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | _fisheye_flag("CALIB_FIX_SKEW")
            _, K, D, rvecs, tvecs = cv2.fisheye.calibrate(obj, img, size, np.zeros((3, 3)), np.zeros(4),
                                                          flags=flags, criteria=crit)
        else:
            obj32 = [o.astype(np.float32) for o in obj]
            img32 = [i.astype(np.float32) for i in img]
            _, K, D, rvecs, tvecs, std_intrinsics, _, _ = cv2.calibrateCameraExtended(
                obj32, img32, size, None, None, flags=pinhole_flags, criteria=crit)
            sigma = (float(std_intrinsics[0, 0]), float(std_intrinsics[1, 0]))  # fx, fy, 1 sigma
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
    return (cam, math.sqrt(sq / n), np.array(errors), [np.ravel(r) for r in rvecs], [np.ravel(t) for t in tvecs],
            sigma)


def calibrate_views(
    views: list[View],
    size: tuple[int, int],
    board: BoardSpec,
    model: str = "pinhole",
    outlier_factor: float = 3.0,
    pinhole_flags: int = 0,
) -> CalibrationResult:
    """Calibrate from detected views; views with error above ``outlier_factor`` x median (and
    above 0.5 px) are dropped and the calibration is repeated once.

    Fewer than MIN_VIEWS views: a pinhole calibration from at least FEW_VIEWS_MIN still
    runs, with the principal point at the image centre, no tangential distortion and k3 = 0
    (FEW_VIEWS_FLAGS), when the views pin the focal length
    down (its 1-sigma error, from OpenCV's covariance, under FEW_VIEWS_MAX_FOCAL_ERROR); the
    result then carries a warning with that error. Otherwise, and always for fisheye (no
    error estimate), CalibrationError says how many views there are and what to do."""
    if model not in ("pinhole", "fisheye"):
        raise CalibrationError(f"--model: must be pinhole or fisheye, got {model!r}")
    few = len(views) < MIN_VIEWS
    advice = ("check --board (inner corners, COLSxROWS) and show the board sharp, whole and from varied angles")
    if few and (model == "fisheye" or len(views) < FEW_VIEWS_MIN):
        raise CalibrationError(
            f"only {len(views)} usable board views (need at least {MIN_VIEWS}"
            + ("" if model == "fisheye" else f", or {FEW_VIEWS_MIN} that pin the focal length down") + f"); {advice}")
    if few:
        pinhole_flags |= FEW_VIEWS_FLAGS
    cam, rms, errs, rvecs, tvecs, sigma = _solve(views, size, model, pinhole_flags)
    rejected: list[str] = []
    bad = errs > max(outlier_factor * float(np.median(errs)), 0.5)
    if bad.any() and (~bad).sum() >= MIN_VIEWS:
        rejected = [v.name for v, b in zip(views, bad) if b]
        views = [v for v, b in zip(views, bad) if not b]
        cam, rms, errs, rvecs, tvecs, sigma = _solve(views, size, model, pinhole_flags)
    res = CalibrationResult(cam, rms, views, errs, rvecs, tvecs, board, focal_sigma=sigma)
    if few:
        relative = max(sigma[0] / cam.fx, sigma[1] / cam.fy) if sigma else math.inf
        if not relative < FEW_VIEWS_MAX_FOCAL_ERROR:
            raise CalibrationError(
                f"only {len(views)} usable board views, and they leave the focal length uncertain "
                f"(+-{100 * relative:.0f} %); need at least {MIN_VIEWS}, or views from more varied angles; {advice}")
        res.warnings.append(
            f"only {len(views)} board views (5 or more recommended): expect the focal length to be off by about "
            f"+-{sigma[0]:.0f} px ({100 * relative:.1f} %), with the principal point assumed at the image centre "
            "and only radial distortion (k1, k2); add views with the board tilted and near the image's edges for "
            "a reliable calibration")
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
    thorough_frames: int | None = None,
) -> CalibrationResult:
    """Detect, filter, select and calibrate from ``(name, image)`` pairs
    (``thorough_frames``: see :func:`detect_views`)."""
    names: list[str] = []

    def named(frames):
        for name, image in frames:
            names.append(name)
            yield name, image

    views, rejected, size, n = detect_views(named(frames), board, blur_ratio, duplicate_px, thorough_frames)
    selected = select_views(views, size, board, max_views)
    kept = {id(v) for v in selected}
    unselected = [v.name for v in views if id(v) not in kept]
    try:
        res = calibrate_views(selected, size, board, model)
    except CalibrationError as exc:
        found = len(names) - len(rejected["no board"]) - len(rejected["no board, fast tries only"])
        raise CalibrationError(f"{exc} [board found in {found} of {len(names)} frames; "
                               f"tried {board.detection_tries(size)}]") from None
    res.frames_read = n
    res.rejected = {**rejected, "not selected": unselected, **res.rejected}
    res.frame_names = names
    res.detection_tries = board.detection_tries(size)
    return res


def calibrate_source(source: str | Path, board: BoardSpec, model: str = "pinhole", max_views: int = 40,
                     max_frames: int = 300) -> CalibrationResult:
    """Calibrate from a folder of images or a video file (see :func:`iter_frames`). Every
    image of a folder gets the detector's full-size tries; of a video, the first
    VIDEO_THOROUGH_FRAMES frames that need them."""
    thorough = None if Path(source).is_dir() else VIDEO_THOROUGH_FRAMES
    return calibrate_images(iter_frames(source, max_frames), board, model, max_views, thorough_frames=thorough)


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

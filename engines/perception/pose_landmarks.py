"""BlazePose GHUM (full) landmarks through ONNX Runtime, batched over persons.

For each person a rotated square region of interest (ROI) is cut out of the
frame into a 256x256 RGB crop in [0, 1] (cv2.warpAffine) and all crops of a
frame go through the network in one call. The network returns 39 points of
(x, y, z, visibility, presence) in crop pixels: 33 body landmarks and auxiliary
points, of which 33 (hip centre) and 34 (a point whose distance from it is half
the body's extent) align the next frame's ROI, as MediaPipe's
PoseLandmarksToRoi does, so the detector need not run on every frame. It also
returns a pose-presence probability and 33 (+6) metric world landmarks (metres,
origin between the hips).

ROI geometry follows MediaPipe's AlignmentPointsRectsCalculator and
RectTransformationCalculator: centre at the alignment centre point, side
2 * |scale point - centre| * 1.25, rotated so the centre->scale vector points up.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from engines.body.joint_sets import COCO17_FROM_BLAZEPOSE33 as _COCO17_FROM_BLAZEPOSE33

from engines.runtime.models import load_onnx_model

from .onnx_session import LANDMARKS_ONNX

INPUT_SIZE = 256
NUM_LANDMARKS = 33
NUM_POINTS = 39  # 33 landmarks + 6 auxiliary points
ROI_SCALE = 1.25  # RectTransformation scale_x/scale_y in MediaPipe's pose graphs
HEATMAP_KERNEL = 7  # RefineLandmarksFromHeatmap kernel_size in MediaPipe's graph
HEATMAP_MIN_CONFIDENCE = 0.5

# The COCO-17 subset, from the joint sets (names and drawing edges live there too).
COCO17_FROM_BLAZEPOSE33 = np.array(_COCO17_FROM_BLAZEPOSE33)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


@dataclass
class Roi:
    """A rotated square region in image pixels.

    Attributes:
        center: (2,) x, y.
        size: side length in pixels.
        rotation: radians; 0 means upright, positive turns the crop's up
            direction clockwise on screen (image y points down).
    """

    center: np.ndarray
    size: float
    rotation: float

    @classmethod
    def from_alignment(cls, center: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE) -> "Roi":
        """ROI from a centre point and a scale point (distance = half the side before `scale`)."""
        c = np.asarray(center, dtype=np.float64)
        p = np.asarray(scale_point, dtype=np.float64)
        d = p - c
        # Target angle 90 deg: the centre->scale vector is made to point up (y flipped).
        rotation = math.pi / 2 - math.atan2(-d[1], d[0])
        rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
        return cls(c, float(2.0 * np.hypot(*d) * scale), rotation)

    def crop_to_image(self, crop_size: int = INPUT_SIZE) -> np.ndarray:
        """2x3 affine matrix taking crop pixel coordinates to image pixel coordinates."""
        s = self.size / crop_size
        c, si = math.cos(self.rotation), math.sin(self.rotation)
        a = np.array([[s * c, -s * si], [s * si, s * c]])
        # Crop centre (crop_size/2) maps to the ROI centre.
        t = self.center - a @ np.array([crop_size / 2, crop_size / 2])
        return np.hstack([a, t[:, None]])

    def corners(self) -> np.ndarray:
        """(4, 2) image-pixel corners of the ROI (for drawing)."""
        m = self.crop_to_image()
        pts = np.array([[0, 0], [INPUT_SIZE, 0], [INPUT_SIZE, INPUT_SIZE], [0, INPUT_SIZE]], float)
        return pts @ m[:, :2].T + m[:, 2]


@dataclass
class PoseLandmarks:
    """Landmarks of one person.

    Attributes:
        roi: the ROI the crop was taken from.
        presence: pose presence probability (MediaPipe's pose flag; < 0.5 means
            no person in the ROI).
        image: (33, 3) x, y in image pixels and z (relative depth, hip-centred,
            in the same pixel scale; smaller is nearer the camera).
        visibility, landmark_presence: (33,) probabilities.
        world: (33, 3) metres, origin between the hips, (x right, y down, z away) as
            seen along the ray through the crop (the network sees only the crop, so its
            depth axis is that ray, not the camera's optical axis: see
            ``engines.diffusion.features.world_landmarks_to_camera``).
        auxiliary: (6, 2) the extra points in image pixels (0: hip centre,
            1: body scale point used for the next ROI).
    """

    roi: Roi
    presence: float
    image: np.ndarray
    visibility: np.ndarray
    landmark_presence: np.ndarray
    world: np.ndarray
    auxiliary: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """(33,) per-landmark confidence: visibility * presence (both probabilities)."""
        return self.visibility * self.landmark_presence

    @property
    def keypoints33(self) -> np.ndarray:
        """(33, 3) pixel x, y, confidence."""
        return np.column_stack([self.image[:, :2], self.confidence]).astype(np.float32)

    @property
    def coco17(self) -> np.ndarray:
        """(17, 3) pixel x, y, confidence in COCO order."""
        return self.keypoints33[COCO17_FROM_BLAZEPOSE33]

    def box(self, min_confidence: float = 0.3, margin: float = 0.05) -> np.ndarray:
        """(4,) x1, y1, x2, y2 around landmarks with confidence >= min_confidence (all if none)."""
        pts = self.image[:, :2]
        ok = self.confidence >= min_confidence
        if ok.sum() >= 2:
            pts = pts[ok]
        lo, hi = pts.min(0), pts.max(0)
        pad = margin * (hi - lo).max()
        return np.r_[lo - pad, hi + pad].astype(np.float32)

    def next_roi(self, scale: float = ROI_SCALE) -> Roi:
        """ROI for the next frame from the auxiliary alignment points (tracking by landmarks)."""
        return Roi.from_alignment(self.auxiliary[0], self.auxiliary[1], scale)


def refine_with_heatmap(xy_crop: np.ndarray, heatmap: np.ndarray, kernel: int = HEATMAP_KERNEL,
                        min_confidence: float = HEATMAP_MIN_CONFIDENCE) -> np.ndarray:
    """Refine landmark positions with the model's heatmap, as MediaPipe's RefineLandmarksFromHeatmap.

    Args:
        xy_crop: (K, 2) landmark x, y in crop pixels (0..256).
        heatmap: (64, 64, K) logits.

    Returns:
        (K, 2) refined positions: the confidence-weighted mean cell position in
        a kernel x kernel window around each landmark, where the window's best
        confidence reaches `min_confidence`; unchanged elsewhere.
    """
    hm_h, hm_w, k = heatmap.shape
    out = xy_crop.copy()
    n = min(k, len(xy_crop))
    off = (kernel - 1) // 2
    # All landmarks at once (this runs per person per frame): each one's kernel x kernel
    # window of cells, with cells outside the map masked out.
    col = (xy_crop[:n, 0] / INPUT_SIZE * hm_w).astype(np.int64)
    row = (xy_crop[:n, 1] / INPUT_SIZE * hm_h).astype(np.int64)
    inside = (col >= 0) & (col < hm_w) & (row >= 0) & (row < hm_h)
    steps = np.arange(-off, off + 1)
    rows = row[:, None] + steps  # (n, kernel)
    cols = col[:, None] + steps
    valid = ((rows >= 0) & (rows < hm_h))[:, :, None] & ((cols >= 0) & (cols < hm_w))[:, None, :]
    logits = heatmap[np.clip(rows, 0, hm_h - 1)[:, :, None], np.clip(cols, 0, hm_w - 1)[:, None, :],
                     np.arange(n)[:, None, None]]
    conf = np.where(valid, _sigmoid(logits.astype(np.float64)), 0.0)  # (n, kernel, kernel)
    total = conf.sum((1, 2))
    ok = inside & (conf.max((1, 2)) >= min_confidence) & (total > 0)
    safe = np.where(total > 0, total, 1.0)
    out[:n, 0] = np.where(ok, (conf * cols[:, None, :]).sum((1, 2)) / safe / hm_w * INPUT_SIZE, out[:n, 0])
    out[:n, 1] = np.where(ok, (conf * rows[:, :, None]).sum((1, 2)) / safe / hm_h * INPUT_SIZE, out[:n, 1])
    return out


class PoseLandmarker:
    """Runs the bundled BlazePose GHUM (full) landmark model on ROIs of a frame.

    Args:
        model_path: ONNX file (default: the bundled one).
        refine_heatmap: refine x, y with the heatmap output, as MediaPipe does.
        providers, intra_op_threads: ONNX Runtime settings (threads: also the thread
            count reported for the other backends).
        backend: ``onnxruntime`` (default), ``torch``, ``torch-compile``, ``tensorrt`` or
            ``auto`` (see :func:`engines.runtime.resolve_backend`).
        device: ``cpu`` or ``cuda`` (default: the backend's).
        sessions: with more than one, the crops of a frame are split over this many copies
            of the network, each run on a thread of its own (the caller's and a pool's), so
            several people's landmarks are computed on several cores at once. On the 2-core
            development machine two single-threaded sessions took 0.6-0.7 of one batched
            call's wall time for 2 and 4 people (docs/performance.md); results are the same.
        batch_crops: one network call for a session's crops (True) or one per crop (False).
            Default: per crop on ONNX Runtime's CPU provider, batched elsewhere. Results are
            the same.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        refine_heatmap: bool = True,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        backend: str = "onnxruntime",
        device: str | None = None,
        sessions: int = 1,
        batch_crops: bool | None = None,
    ) -> None:
        if sessions < 1:
            raise ValueError(f"pose landmarks: sessions must be at least 1, got {sessions}")
        self.engine = load_onnx_model(model_path or LANDMARKS_ONNX, backend, device, threads=intra_op_threads,
                                      providers=providers, name="landmarks")
        self._others = [load_onnx_model(model_path or LANDMARKS_ONNX, backend, device, threads=intra_op_threads,
                                        providers=providers, name="landmarks") for _ in range(sessions - 1)]
        self._pool = ThreadPoolExecutor(max_workers=len(self._others), thread_name_prefix="landmarks") \
            if self._others else None
        self.pool_cpu_seconds = 0.0  # thread CPU time of the shares run on the pool's threads
        self._pool_lock = threading.Lock()
        self.session = getattr(self.engine, "session", None)  # the ORT session, when on onnxruntime
        self.input_name = self.engine.spec.input_names[0]
        by_shape = {}
        for name, shape in zip(self.engine.spec.outputs, self.engine.spec.output_shapes):
            by_shape[tuple(shape[1:])] = name
        try:
            self.out_landmarks = by_shape[(NUM_POINTS * 5,)]
            self.out_flag = by_shape[(1,)]
            self.out_heatmap = by_shape[(64, 64, NUM_POINTS)]
            self.out_world = by_shape[(NUM_POINTS * 3,)]
        except KeyError as e:
            raise ValueError(f"{model_path or LANDMARKS_ONNX}: not a BlazePose landmark model (no output of shape {e})") from e
        self.refine_heatmap = refine_heatmap
        # On ONNX Runtime's CPU provider each crop is its own call: batch 1 costs no more per
        # crop there, and a session that only ever sees one shape never plans a new one in
        # the middle of a live run (a first batch of 2 took 80 ms against 12 for one crop,
        # docs/performance.md).
        info = getattr(self.engine, "info", None)
        on_ort_cpu = info is not None and info.backend == "onnxruntime" and info.device == "cpu"
        self.batch_crops = not on_ort_cpu if batch_crops is None else batch_crops

    def crops(self, image_rgb: np.ndarray, rois: Sequence[Roi]) -> np.ndarray:
        """(N, 256, 256, 3) float32 crops in [0, 1] for the ROIs (outside the image is black)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(
                f"pose landmarks: expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}"
            )
        out = np.empty((len(rois), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        for i, roi in enumerate(rois):
            m = cv2.invertAffineTransform(roi.crop_to_image())
            crop = cv2.warpAffine(
                image_rgb, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
            )
            np.multiply(crop, 1.0 / 255.0, out=out[i], casting="unsafe")
        return out

    def __call__(self, image_rgb: np.ndarray, rois: Sequence[Roi]) -> list[PoseLandmarks]:
        """Landmarks for each ROI of the frame (one batched network call per session)."""
        if not rois:
            return []
        engines = [self.engine, *self._others][: len(rois)]
        if len(engines) == 1:
            return self._landmarks(self.engine, image_rgb, rois)
        # Contiguous shares, in order: the caller's thread runs the first, the pool the rest.
        bounds = np.linspace(0, len(rois), len(engines) + 1).round().astype(int)
        shares = [list(rois[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        futures = [self._pool.submit(self._timed, e, image_rgb, s) for e, s in zip(engines[1:], shares[1:])]
        out = self._landmarks(engines[0], image_rgb, shares[0])
        for f in futures:
            out += f.result()
        return out

    def _timed(self, engine, image_rgb: np.ndarray, rois: Sequence[Roi]) -> list[PoseLandmarks]:
        t0 = time.thread_time()
        try:
            return self._landmarks(engine, image_rgb, rois)
        finally:
            spent = time.thread_time() - t0
            with self._pool_lock:
                self.pool_cpu_seconds += spent

    def _landmarks(self, engine, image_rgb: np.ndarray, rois: Sequence[Roi]) -> list[PoseLandmarks]:
        x = self.crops(image_rgb, rois)
        names = [self.out_landmarks, self.out_flag, self.out_world]
        if self.refine_heatmap:
            names.append(self.out_heatmap)
        if not self.batch_crops:
            parts = [engine.run({self.input_name: x[i : i + 1]}) for i in range(len(x))]
            outs = [np.concatenate([part[n] for part in parts]) for n in names]
        else:
            result_by_name = engine.run({self.input_name: x})
            outs = [result_by_name[n] for n in names]
        lm = outs[0].reshape(len(rois), NUM_POINTS, 5)
        flag = outs[1].reshape(len(rois))
        world = outs[2].reshape(len(rois), NUM_POINTS, 3)
        result = []
        for i, roi in enumerate(rois):
            xy = lm[i, :, :2].astype(np.float64)
            if self.refine_heatmap:
                xy = refine_with_heatmap(xy, outs[3][i])
            m = roi.crop_to_image()
            img_xy = xy @ m[:, :2].T + m[:, 2]
            z = lm[i, :, 2] * (roi.size / INPUT_SIZE)
            # The world landmarks come in the crop's axes: turn them back by the ROI's
            # in-plane rotation into the image's (as MediaPipe's WorldLandmarkProjection).
            turn = m[:, :2] / math.sqrt(abs(np.linalg.det(m[:, :2])))
            w = world[i, :NUM_LANDMARKS].astype(np.float64)
            w[:, :2] = w[:, :2] @ turn.T
            result.append(
                PoseLandmarks(
                    roi=roi,
                    presence=float(flag[i]),
                    image=np.column_stack([img_xy[:NUM_LANDMARKS], z[:NUM_LANDMARKS]]).astype(np.float32),
                    visibility=_sigmoid(lm[i, :NUM_LANDMARKS, 3]).astype(np.float32),
                    landmark_presence=_sigmoid(lm[i, :NUM_LANDMARKS, 4]).astype(np.float32),
                    world=w.astype(np.float32),
                    auxiliary=img_xy[NUM_LANDMARKS:].astype(np.float32),
                )
            )
        return result

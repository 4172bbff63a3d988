"""BlazePose person detector (MediaPipe pose_detection, run through ONNX Runtime).

The network looks at a 224x224 letterboxed view of the whole frame and predicts,
for each of 2254 SSD anchors, a score, a box (around the face) and four
alignment keypoints: 0 hip centre, 1 a point whose distance and direction from
the hip centre give the full body's size and rotation, 2 shoulder centre, 3
the same for the upper body. Decoding follows MediaPipe's public pose-detection
graph (`mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`): its
SsdAnchorsCalculator and TensorsToDetectionsCalculator options are reproduced
in `ANCHOR_OPTIONS` / `DECODE_OPTIONS`, and its weighted non-maximum
suppression in `weighted_nms`. All detections above the score threshold are
kept, so several people are found in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .boxes import iou_matrix
from engines.runtime.models import load_onnx_model

from .onnx_session import DETECTOR_ONNX

# From MediaPipe's pose_detection_cpu.pbtxt (SsdAnchorsCalculatorOptions).
ANCHOR_OPTIONS = dict(
    num_layers=5,
    min_scale=0.1484375,
    max_scale=0.75,
    input_size=224,
    anchor_offset=0.5,
    strides=(8, 16, 32, 32, 32),
    aspect_ratios=(1.0,),
    interpolated_scale_aspect_ratio=1.0,
    fixed_anchor_size=True,
)
# From the same graph (TensorsToDetectionsCalculatorOptions, NonMaxSuppression).
DECODE_OPTIONS = dict(
    num_boxes=2254,
    num_coords=12,
    num_keypoints=4,
    score_clipping=100.0,
    scale=224.0,  # x_scale = y_scale = w_scale = h_scale
    min_score=0.2,
    nms_iou=0.3,
)
INPUT_SIZE = 224


def ssd_anchors(
    num_layers: int = 5,
    min_scale: float = 0.1484375,
    max_scale: float = 0.75,
    input_size: int = 224,
    anchor_offset: float = 0.5,
    strides: Sequence[int] = (8, 16, 32, 32, 32),
    aspect_ratios: Sequence[float] = (1.0,),
    interpolated_scale_aspect_ratio: float = 1.0,
    fixed_anchor_size: bool = True,
) -> np.ndarray:
    """SSD anchors as MediaPipe's SsdAnchorsCalculator lays them out.

    Returns:
        (N, 4) float32 of (x_center, y_center, w, h), normalised to [0, 1].
        Consecutive layers with the same stride share one feature map, and
        each contributes len(aspect_ratios) (+1 interpolated) anchors per cell.
    """

    def scale_at(i: int) -> float:
        if num_layers == 1:
            return (min_scale + max_scale) / 2
        return min_scale + (max_scale - min_scale) * i / (num_layers - 1)

    anchors = []
    layer = 0
    while layer < num_layers:
        sizes = []  # (w, h) per anchor at this feature map
        last = layer
        while last < num_layers and strides[last] == strides[layer]:
            scale = scale_at(last)
            for ar in aspect_ratios:
                r = math.sqrt(ar)
                sizes.append((scale * r, scale / r))
            if interpolated_scale_aspect_ratio > 0:
                next_scale = 1.0 if last == num_layers - 1 else scale_at(last + 1)
                s = math.sqrt(scale * next_scale)
                r = math.sqrt(interpolated_scale_aspect_ratio)
                sizes.append((s * r, s / r))
            last += 1
        fm = int(math.ceil(input_size / strides[layer]))
        for y in range(fm):
            for x in range(fm):
                for w, h in sizes:
                    if fixed_anchor_size:
                        w, h = 1.0, 1.0
                    anchors.append(((x + anchor_offset) / fm, (y + anchor_offset) / fm, w, h))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


@dataclass
class PoseDetection:
    """One detected person, in full-image pixels.

    Attributes:
        score: detector confidence in [0, 1].
        face_box: (4,) x1, y1, x2, y2 of the box the detector regresses (the face).
        keypoints: (4, 2) alignment points: hip centre, full-body scale/rotation
            point, shoulder centre, upper-body scale/rotation point.
    """

    score: float
    face_box: np.ndarray
    keypoints: np.ndarray

    @property
    def hip_center(self) -> np.ndarray:
        return self.keypoints[0]

    @property
    def body_radius(self) -> float:
        """Distance from the hip centre to the full-body scale point (about half the body height)."""
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    @property
    def box(self) -> np.ndarray:
        """Axis-aligned body box: the square of side 2*body_radius about the hip centre."""
        c, r = self.hip_center, self.body_radius
        return np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r], dtype=np.float32)


def letterbox_matrix(width: int, height: int, size: int = INPUT_SIZE) -> np.ndarray:
    """2x3 affine matrix mapping image pixels into a size x size letterbox (centred, kept aspect)."""
    s = size / max(width, height)
    return np.array(
        [[s, 0.0, (size - s * width) / 2], [0.0, s, (size - s * height) / 2]], dtype=np.float64
    )


def preprocess(image_rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox an RGB uint8 frame to the detector input.

    Returns:
        (tensor (1, size, size, 3) float32 in [-1, 1], 2x3 image->letterbox matrix).
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"pose detector: expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}"
        )
    h, w = image_rgb.shape[:2]
    m = letterbox_matrix(w, h, size)
    img = cv2.warpAffine(
        image_rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    # Padding is black before the range mapping (-1 in the tensor), as in
    # MediaPipe's CPU ImageToTensorCalculator (warp with border 0, then scale).
    x = img.astype(np.float32) * (2.0 / 255.0) - 1.0
    return x[None], m


def decode_boxes(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float = 224.0,
    score_clipping: float = 100.0, min_score: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode raw SSD outputs (normalised letterbox coordinates).

    Args:
        raw_boxes: (N, 12): x, y, w, h offsets then 4 keypoints (x, y), in input pixels.
        raw_scores: (N,) or (N, 1) logits.
        anchors: (N, 4) from `ssd_anchors`.

    Returns:
        (scores (K,), boxes (K, 4) x1 y1 x2 y2, keypoints (K, 4, 2)) for the
        anchors whose sigmoid score is at least min_score; coordinates in [0, 1]
        of the letterboxed input.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -score_clipping, score_clipping)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw = raw_boxes[keep].astype(np.float32)
    a = anchors[keep]
    cx = raw[:, 0] / scale * a[:, 2] + a[:, 0]
    cy = raw[:, 1] / scale * a[:, 3] + a[:, 1]
    w = raw[:, 2] / scale * a[:, 2]
    h = raw[:, 3] / scale * a[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kp = raw[:, 4:12].reshape(-1, 4, 2) / scale
    kp = kp * a[:, None, 2:4] + a[:, None, 0:2]
    return scores[keep].astype(np.float32), boxes, kp


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float = 0.3
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Takes the best remaining candidate, gathers every candidate overlapping it
    by more than `iou_threshold`, and replaces them with their score-weighted
    mean box and keypoints (keeping the best score). Stable on video, where
    plain NMS jitters between neighbouring anchors.
    """
    order = np.argsort(-scores)
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    out = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        iou = iou_matrix(boxes[top], boxes[remaining])[0]
        group = remaining[iou > iou_threshold]
        if group.size == 0:  # degenerate box: keep it alone
            group = remaining[:1]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kp = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((float(scores[top]), box, kp))
        remaining = remaining[~np.isin(remaining, group)]
    return out


class PoseDetector:
    """Finds people in a frame with the bundled BlazePose detector.

    Args:
        model_path: ONNX file (default: the bundled one).
        min_score: keep detections whose score reaches this (MediaPipe: 0.2
            before NMS, 0.5 for a person to be accepted by its pose graph).
        nms_iou: overlap above which candidates merge in weighted NMS.
        max_detections: keep at most this many, best first.
        tile_size: if set, also run the detector on overlapping square tiles of
            this many pixels and merge the results (non-maximum suppression on
            the body boxes). The network sees the whole frame at 224x224, so
            people shorter than about a third of the frame are missed; tiles
            find them at one network run per tile (opt-in, for wide or crowded
            scenes).
        tile_overlap: fraction by which neighbouring tiles overlap.
        providers, intra_op_threads: ONNX Runtime settings (threads: also the thread
            count reported for the other backends).
        backend: ``onnxruntime`` (default), ``torch``, ``torch-compile``, ``tensorrt`` or
            ``auto`` (see :func:`engines.runtime.resolve_backend`); the torch backends run
            the ONNX graph converted by :mod:`engines.runtime.onnx_to_torch`.
        device: ``cpu`` or ``cuda`` (default: the backend's).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        min_score: float = 0.5,
        nms_iou: float = DECODE_OPTIONS["nms_iou"],
        max_detections: int = 10,
        tile_size: int | None = None,
        tile_overlap: float = 0.25,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        backend: str = "onnxruntime",
        device: str | None = None,
    ) -> None:
        if tile_size is not None and tile_size < 64:
            raise ValueError(f"PoseDetector: tile_size must be at least 64 pixels, got {tile_size}")
        if not 0.0 <= tile_overlap < 0.9:
            raise ValueError(f"PoseDetector: tile_overlap must be in [0, 0.9), got {tile_overlap}")
        self.tile_size = tile_size
        self.tile_overlap = float(tile_overlap)
        self.engine = load_onnx_model(model_path or DETECTOR_ONNX, backend, device, threads=intra_op_threads,
                                      providers=providers, name="detector")
        self.session = getattr(self.engine, "session", None)  # the ORT session, when on onnxruntime
        spec = self.engine.spec
        self.input_name = spec.input_names[0]
        outs = dict(zip(spec.outputs, spec.output_shapes))
        # Pick outputs by shape: boxes (1, N, 12), scores (1, N, 1).
        self.boxes_name = next(n for n, s in outs.items() if s[-1] == DECODE_OPTIONS["num_coords"])
        self.scores_name = next(n for n, s in outs.items() if s[-1] == 1)
        self.anchors = ssd_anchors(**ANCHOR_OPTIONS)
        if len(self.anchors) != DECODE_OPTIONS["num_boxes"]:
            raise RuntimeError(f"anchor layout gives {len(self.anchors)} anchors, model has {DECODE_OPTIONS['num_boxes']}")
        self.min_score = float(min_score)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)

    def run_raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on a prepared (1, 224, 224, 3) tensor; returns (raw_boxes (N,12), raw_scores (N,))."""
        outs = self.engine.run({self.input_name: tensor})
        return outs[self.boxes_name][0], outs[self.scores_name][0, :, 0]

    def detect_single(self, image_rgb: np.ndarray) -> list[PoseDetection]:
        """Detect people in one view of the whole image (no tiling); best first, image pixels."""
        tensor, m = preprocess(image_rgb)
        raw_boxes, raw_scores = self.run_raw(tensor)
        scores, boxes, kps = decode_boxes(
            raw_boxes, raw_scores, self.anchors, DECODE_OPTIONS["scale"],
            DECODE_OPTIONS["score_clipping"], min(self.min_score, DECODE_OPTIONS["min_score"]),
        )
        merged = weighted_nms(scores, boxes, kps, self.nms_iou)
        # Letterbox [0,1] -> image pixels: undo the letterbox affine.
        s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
        out = []
        for score, box, kp in merged:
            if score < self.min_score:
                continue
            box_px = (box.reshape(2, 2) * INPUT_SIZE - [tx, ty]) / s
            kp_px = (kp * INPUT_SIZE - [tx, ty]) / s
            out.append(PoseDetection(score, box_px.reshape(4).astype(np.float32), kp_px.astype(np.float32)))
        return out

    def tiles(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The tiles (x0, y0, x1, y1) a full look at a width x height frame adds to the whole
        frame's view (none without ``tile_size``)."""
        return tile_grid(width, height, self.tile_size, self.tile_overlap) if self.tile_size else []

    def detect_in(self, image_rgb: np.ndarray, tiles: Sequence[tuple[int, int, int, int]]) -> list[PoseDetection]:
        """Detect people in the whole frame and in ``tiles`` of it (one network run each),
        merged; best first, image pixels."""
        dets = self.detect_single(image_rgb)
        if len(tiles):
            for x0, y0, x1, y1 in tiles:
                for d in self.detect_single(np.ascontiguousarray(image_rgb[y0:y1, x0:x1])):
                    d.face_box += np.array([x0, y0, x0, y0], np.float32)
                    d.keypoints += np.array([x0, y0], np.float32)
                    dets.append(d)
            dets = suppress_duplicates(dets, self.nms_iou)
        dets.sort(key=lambda d: -d.score)
        return dets[: self.max_detections]

    def __call__(self, image_rgb: np.ndarray) -> list[PoseDetection]:
        """Detect people in an RGB uint8 frame (the whole frame and every tile); returns
        detections best first, in image pixels."""
        h, w = image_rgb.shape[:2]
        return self.detect_in(image_rgb, self.tiles(w, h))


def tile_grid(width: int, height: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) covering a width x height image."""

    def starts(n: int) -> list[int]:
        size = min(tile, n)
        step = max(1, int(size * (1 - overlap)))
        out = list(range(0, n - size + 1, step))
        if out[-1] + size < n:
            out.append(n - size)
        return out

    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in starts(height) for x in starts(width)]


def suppress_duplicates(dets: list[PoseDetection], iou_threshold: float = 0.3) -> list[PoseDetection]:
    """Plain NMS on body boxes: keep the best-scoring detection of each person."""
    kept: list[PoseDetection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if kept and iou_matrix(d.box, np.stack([k.box for k in kept]))[0].max() > iou_threshold:
            continue
        kept.append(d)
    return kept

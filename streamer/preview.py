"""Preview overlay: boxes, track ids and skeletons drawn on a frame (OpenCV)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from engines.perception.pose_landmarks import BLAZEPOSE33_EDGES

# Distinct BGR colours, picked by track id.
_PALETTE = (
    (255, 128, 0), (0, 200, 255), (80, 220, 80), (255, 0, 255), (0, 128, 255),
    (255, 255, 0), (128, 0, 255), (0, 255, 128), (200, 200, 200), (60, 60, 255),
)  # fmt: skip


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track id."""
    return _PALETTE[track_id % len(_PALETTE)]


def draw_persons(
    frame_bgr: np.ndarray,
    persons: Sequence,
    min_confidence: float = 0.3,
    draw_roi: bool = False,
) -> np.ndarray:
    """Draw tracked persons on a copy of a BGR frame.

    Args:
        frame_bgr: (H, W, 3) uint8 BGR image.
        persons: objects with `track_id`, `score`, `box` (x1, y1, x2, y2) and
            `keypoints33` ((33, 3) x, y, confidence), e.g.
            `streamer.keypoints_stage.TrackedPerson`.
        min_confidence: landmarks below this are not drawn.
        draw_roi: also outline each person's landmark ROI (needs `.roi`).

    Returns:
        The annotated copy.
    """
    out = frame_bgr.copy()
    scale = max(out.shape[:2]) / 1000.0
    thick = max(1, int(round(2 * scale)))
    for p in persons:
        colour = track_colour(int(p.track_id))
        x1, y1, x2, y2 = (int(round(v)) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = f"id {p.track_id} {p.score:.2f}"
        cv2.putText(out, label, (x1, max(0, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour, thick, cv2.LINE_AA)
        kp = np.asarray(p.keypoints33)
        ok = kp[:, 2] >= min_confidence
        for a, b in BLAZEPOSE33_EDGES:
            if ok[a] and ok[b]:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), colour, thick, cv2.LINE_AA)
        for (x, y, _), good in zip(kp, ok):
            if good:
                cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        if draw_roi and getattr(p, "roi", None) is not None:
            cv2.polylines(out, [p.roi.corners().astype(np.int32)], True, colour, 1, cv2.LINE_AA)
    return out

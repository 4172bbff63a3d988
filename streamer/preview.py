"""Preview video: each frame with its persons (boxes, track ids, skeletons) drawn over it."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np

from engines.perception.pose_landmarks import BLAZEPOSE33_EDGES

from .frames import Frame, Person

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
    persons: Sequence[Person],
    min_confidence: float = 0.3,
) -> np.ndarray:
    """Draw the persons of a frame (box, id, score, BlazePose skeleton) on a copy of a BGR image.

    Persons are :class:`streamer.frames.Person` s; what is drawn comes from their arrays
    ``box_xyxy`` and ``keypoints_blazepose33`` (either may be absent).
    """
    out = frame_bgr.copy()
    scale = max(out.shape[:2]) / 1000.0
    thick = max(1, int(round(2 * scale)))
    for p in persons:
        colour = track_colour(int(p.track_id))
        box = p.arrays.get("box_xyxy")
        if box is not None:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
            cv2.putText(out, f"id {p.track_id} {p.score:.2f}", (x1, max(0, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, colour, thick, cv2.LINE_AA)
        kp = p.arrays.get("keypoints_blazepose33")
        if kp is None:
            continue
        kp = np.asarray(kp)
        ok = kp[:, 2] >= min_confidence
        for a, b in BLAZEPOSE33_EDGES:
            if ok[a] and ok[b]:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), colour, thick, cv2.LINE_AA)
        for (x, y, _), good in zip(kp, ok):
            if good:
                cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def draw_status(frame_bgr: np.ndarray, text: str) -> None:
    """Write a status line (frame number, fps) in the top-left corner, in place."""
    scale = max(frame_bgr.shape[:2]) / 1000.0
    org = (int(10 * scale), int(30 * scale))
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(frame_bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                    max(1, int(round(width * scale))), cv2.LINE_AA)


class PreviewWriter:
    """Writes the pipeline's frames with their persons drawn over them to an H.264 video.

    Frames are written at the source's rate; in live mode, frames the pipeline dropped are
    missing from the preview, so it plays faster than real time.
    """

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise ValueError(f"--preview {path}: use a .mp4, .mkv or .mov file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # Even sizes for 4:2:0 chroma.
        self._stream.width, self._stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}
        self._started = time.monotonic()
        self.frames = 0

    def write(self, frame: Frame) -> None:
        if frame.image is None:
            return
        bgr = draw_persons(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), frame.persons)
        self.frames += 1
        fps = self.frames / max(time.monotonic() - self._started, 1e-6)
        draw_status(bgr, f"frame {frame.index}  {len(frame.persons)} person(s)  {fps:.1f} fps")
        h, w = self._stream.height, self._stream.width
        if bgr.shape[0] != h or bgr.shape[1] != w:
            bgr = cv2.resize(bgr, (w, h)) if abs(bgr.shape[1] - w) > 1 else bgr[:h, :w]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

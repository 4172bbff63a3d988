"""Preview overlay drawing and the preview video writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engines.perception.pose_landmarks import Roi
from streamer.preview import draw_persons, track_colour, write_preview

CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"


@dataclass
class P:
    track_id: int
    score: float
    box: np.ndarray
    keypoints33: np.ndarray
    roi: Roi | None = None


def test_draw_persons_draws_on_a_copy():
    frame = np.zeros((200, 300, 3), np.uint8)
    kp = np.zeros((33, 3), np.float32)
    kp[:, 0] = np.linspace(60, 140, 33)
    kp[:, 1] = np.linspace(40, 160, 33)
    kp[:, 2] = 1.0
    kp[5, 2] = 0.0  # not drawn
    p = P(3, 0.9, np.array([50, 30, 150, 170.0]), kp, Roi(np.array([100.0, 100.0]), 160.0, 0.2))
    out = draw_persons(frame, [p], draw_roi=True)
    assert frame.max() == 0  # input untouched
    assert tuple(out[100, 50]) == track_colour(3)  # left edge of the box
    assert out[int(kp[20, 1]), int(kp[20, 0])].any()  # a landmark


def test_write_preview(tmp_path):
    out = tmp_path / "preview.mp4"
    s = write_preview(str(CLIP), str(out), max_frames=6)
    assert s["frames"] == 6
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 6 and frames[0].width == 1768

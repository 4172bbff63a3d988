"""A synthetic camera for benchmarks: one real frame of the test clip, replayed at a set rate,
with 1 to 16 copies of a real person pasted in on a grid.

The background is a frame of ``tests/data/sports2d_demo.mp4`` where nobody is in view; the
person is the walking woman cropped by a fixed box from another frame of the same clip
(same camera, same light), pasted at distinct places, every other copy mirrored. Up to 6
people keep (almost) her real size; more people are scaled down to fit a 3x3 or 4x4 grid,
and :attr:`SyntheticPeopleSource.detector_tile_size` says which detector tile size finds
them (the full-frame detector sees the frame at 224x224: it misses people shorter than about
a third of the frame and, here, all but one of several look-alikes).

In live mode (``realtime=True``) frames are stamped and released at the set rate like a
camera's, whether or not the pipeline keeps up (the live queues then drop the oldest).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import ConfigError, SourceError
from .frames import Frame

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "sports2d_demo.mp4"
BACKGROUND_FRAME = 225  # the woman has left; the man is behind the tree at the right edge
PERSON_FRAME = 120  # the woman walking, whole body in view; the right edge is clear
CLEAR_FROM_X = 1400  # the background right of this comes from PERSON_FRAME (nobody there)
PERSON_BOX = (690, 505, 980, 965)  # x1, y1, x2, y2 around her in PERSON_FRAME (pixels)
MAX_PEOPLE = 16


def grid_shape(people: int) -> tuple[int, int]:
    """Columns and rows of the paste grid for ``people`` copies."""
    cols = math.ceil(math.sqrt(people))
    return cols, math.ceil(people / cols)


@functools.lru_cache(maxsize=2)
def _clip_frames(path: Path, wanted: frozenset[int]) -> dict[int, np.ndarray]:
    """The frames ``wanted`` of the clip (decoded once per process; callers copy)."""
    import av

    if not path.is_file():
        raise SourceError(f"{path}: the test clip the synthetic source is made from is missing")
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                out[index] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    if len(out) != len(wanted):
        raise SourceError(f"{path}: has fewer than {max(wanted) + 1} frames")
    return out


def compose(people: int, clip: Path = CLIP) -> tuple[np.ndarray, list[tuple[int, int, int, int]], float]:
    """The synthetic frame: background with ``people`` pasted copies.

    Returns:
        (RGB uint8 image (H, W, 3), the pasted boxes x1, y1, x2, y2, the scale of the copies).
    """
    if not 1 <= people <= MAX_PEOPLE:
        raise ConfigError(f"--synthetic takes 1 to {MAX_PEOPLE} people, got {people}")
    frames = _clip_frames(Path(clip), frozenset({BACKGROUND_FRAME, PERSON_FRAME}))
    canvas = frames[BACKGROUND_FRAME].copy()
    canvas[:, CLEAR_FROM_X:] = frames[PERSON_FRAME][:, CLEAR_FROM_X:]
    x1, y1, x2, y2 = PERSON_BOX
    person = frames[PERSON_FRAME][y1:y2, x1:x2]
    ph, pw = person.shape[:2]
    height, width = canvas.shape[:2]
    cols, rows = grid_shape(people)
    cell_w, cell_h = width / cols, height / rows
    scale = min(1.0, 0.95 * cell_h / ph, 0.95 * cell_w / pw)
    sw, sh = max(1, round(pw * scale)), max(1, round(ph * scale))
    copy = cv2.resize(person, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1.0 else person
    boxes = []
    for i in range(people):
        col, row = i % cols, i // cols
        # Centred in its cell, feet towards the cell's bottom (as people stand on the ground).
        cx = round((col + 0.5) * cell_w - sw / 2)
        cy = round((row + 1) * cell_h - sh - 0.025 * cell_h)
        patch = copy[:, ::-1] if i % 2 else copy
        canvas[cy:cy + sh, cx:cx + sw] = patch
        boxes.append((cx, cy, cx + sw, cy + sh))
    return canvas, boxes, scale


class SyntheticPeopleSource:
    """Replays one composed frame (see :func:`compose`) ``frames`` times at ``rate`` fps.

    ``realtime``: pace the frames at ``rate`` and stamp each at its due time (a live
    camera); otherwise yield them as fast as they are taken (offline)."""

    def __init__(self, people: int, *, rate: float = 30.0, frames: int = 300, realtime: bool = True,
                 clip: Path = CLIP):
        if rate <= 0:
            raise ConfigError(f"--rate must be positive, got {rate}")
        if frames < 1:
            raise ConfigError(f"--frames must be at least 1, got {frames}")
        self.people = people
        self.image, self.boxes, self.scale = compose(people, clip)
        self.fps = float(rate)
        self.frame_count = int(frames)
        self.realtime = realtime
        self.is_live = realtime
        self.size = (self.image.shape[1], self.image.shape[0])
        self.name = f"synthetic:{people}-people@{rate:g}fps"
        self._closed = False

    @property
    def detector_tile_size(self) -> int | None:
        """Detector tile size that finds the pasted people (None: the whole frame does).

        The full-frame view finds one person here but rarely several look-alikes side by
        side; tiles of about 1.25 person heights find every copy (measured for 2 to 16)."""
        if self.people == 1:
            return None
        return max(256, round(1.25 * (self.boxes[0][3] - self.boxes[0][1])))

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        for index in range(self.frame_count):
            if self._closed:
                return
            due = start + index / self.fps
            if self.realtime:
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            captured = time.monotonic()
            # A fresh buffer per frame, as a camera delivers.
            yield Frame(index=index, image=self.image.copy(), capture_time=captured,
                        source_size=self.size, stream_time=index / self.fps)

    def close(self) -> None:
        self._closed = True

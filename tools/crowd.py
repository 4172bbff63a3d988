"""A crowd for load tests: a stage that gives every frame N people with real keypoints.

The keypoints are a real person's (the walking woman of the test clip, tracked by the
keypoints stage and stored in ``tests/data/keypoints``, or any keypoint ``.npz``), copied N
times across the image at different places and sizes, so the lift and refine stages, the
publisher and the motion files carry the work of N real people per frame. Detection and
keypoints for N people are not exercised here (``run_stream.py bench`` covers them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamer.frames import Frame, Person
from streamer.graph import Stage


class CrowdStage(Stage):
    """Replaces each frame's persons by ``persons`` copies of a recorded person's keypoints
    (``keypoints`` (T, 33, 3) pixels of an image of ``image_size``), looping over the T
    frames, placed on a grid over the frame and scaled 0.5 to 1. Track ids are 1..N."""

    name = "keypoints"

    def __init__(self, keypoints: np.ndarray, image_size: tuple[int, int], persons: int = 16):
        if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
            raise ValueError(f"CrowdStage: keypoints must be (T, 33, 3), got {keypoints.shape}")
        self.keypoints = keypoints.astype(np.float32)
        self.image_size = image_size
        self.persons = persons
        cols = int(np.ceil(np.sqrt(persons)))
        rows = int(np.ceil(persons / cols))
        self._places = [((c + 0.5) / cols, (r + 0.5) / rows, 0.5 + 0.5 * ((r * cols + c) % 3) / 2)
                        for r in range(rows) for c in range(cols)][:persons]

    @classmethod
    def from_file(cls, path: str | Path, persons: int = 16) -> "CrowdStage":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["keypoints"], tuple(int(v) for v in data["image_size"]), persons)

    def process(self, frame: Frame) -> Frame:
        source = self.keypoints[frame.index % len(self.keypoints)]
        seen = source[:, 2] > 0
        centre = source[seen, :2].mean(axis=0) if seen.any() else np.zeros(2, np.float32)
        sx, sy = frame.width / self.image_size[0], frame.height / self.image_size[1]
        persons = []
        for track_id, (fx, fy, scale) in enumerate(self._places, start=1):
            k = source.copy()
            k[:, 0] = (k[:, 0] - centre[0]) * scale * sx + fx * frame.width
            k[:, 1] = (k[:, 1] - centre[1]) * scale * sy + fy * frame.height
            k[~seen] = 0
            box = np.array([*k[seen, :2].min(axis=0), *k[seen, :2].max(axis=0)], np.float32) if seen.any() \
                else np.zeros(4, np.float32)
            persons.append(Person(track_id=track_id, score=0.9,
                                  arrays={"box_xyxy": box, "keypoints_blazepose33": k}))
        frame.persons = persons
        return frame

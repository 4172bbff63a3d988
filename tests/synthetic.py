"""Test helpers: a stage that gives every frame a person with SMPL-shaped arrays, standing in
for the lifter so outputs and shutdown can be tested before (and independently of) models.

Run as a script it is a real pipeline process to signal: ``python tests/synthetic.py
SOURCE RECORD_DIR ENDPOINT [persons [fail_at_frame]]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.frames import Frame, Person  # noqa: E402
from streamer.graph import Stage  # noqa: E402


def synthetic_person(track_id: int, frame_index: int, rng: np.random.Generator | None = None) -> Person:
    rng = rng or np.random.default_rng(frame_index * 1000 + track_id)
    poses = (rng.standard_normal(72) * 0.1).astype(np.float32)
    return Person(track_id=track_id, score=0.9, arrays={
        "box_xyxy": np.array([100, 50, 300, 500], np.float32) + track_id,
        "keypoints_blazepose33": rng.uniform(0, 500, (33, 3)).astype(np.float32),
        "poses": poses,
        "betas": np.full(10, 0.1 * track_id, np.float32),
        "trans": np.array([0.1 * track_id, 0.0, 3.0 + frame_index * 0.01], np.float32),
        "joints": rng.standard_normal((24, 3)).astype(np.float32),
    })


class SyntheticPersons(Stage):
    """Adds ``persons`` synthetic people to every frame, optionally sleeping to be slow."""

    name = "lift"

    def __init__(self, persons: int = 2, delay: float = 0.0, fail_at: int | None = None):
        self.persons = persons
        self.delay = delay
        self.fail_at = fail_at

    def process(self, frame: Frame) -> Frame:
        if frame.index == self.fail_at:
            raise RuntimeError(f"synthetic failure at frame {frame.index}")
        if self.delay:
            time.sleep(self.delay)
        frame.persons = [synthetic_person(i + 1, frame.index) for i in range(self.persons)]
        return frame


if __name__ == "__main__":
    import logging

    from streamer.app import RunConfig, run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s [%(threadName)s] %(message)s")
    source, record, endpoint = sys.argv[1:4]
    persons = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    fail_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
    # Slow enough that the test can interrupt mid-run.
    outcome = run(RunConfig(source=source, record=record, publish=endpoint, mode="offline",
                            progress=False, perception=False),
                  extra_stages=[SyntheticPersons(persons, delay=0.02, fail_at=fail_at)])
    print(f"stopped_by={outcome.result.stopped_by} frames={outcome.result.frames_out}", flush=True)

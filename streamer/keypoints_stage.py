"""The keypoints stage: detect, track and keypoints of the data flow as one pipeline stage,
a thin adapter between :class:`~streamer.frames.Frame` and
:class:`engines.perception.person_keypoints.PersonKeypoints`."""

from __future__ import annotations

import numpy as np

from engines.perception.person_keypoints import PersonKeypoints
from streamer.frames import Frame, Person
from streamer.graph import Stage


class KeypointsStage(Stage):
    """The detect, track and keypoints steps of the data flow as one pipeline stage.

    They share one thread because they are coupled: each person's landmarks give the region
    the landmark model looks at in the next frame, and the detector runs only when people
    must be found. Adds a :class:`~streamer.frames.Person` per tracked person with the arrays
    ``box_xyxy``, ``keypoints_blazepose33``, ``keypoints_coco17`` and ``world_blazepose33``.
    ``keypoints``: the engine, built (:func:`engines.run_engines.build_keypoints`). ``nice``:
    how far below the later stages its thread runs (live mode: the plan's ``keypoints_nice``).
    """

    name = "keypoints"

    def __init__(self, keypoints: PersonKeypoints, nice: int = 0) -> None:
        self.keypoints = keypoints
        self.nice = nice

    def close(self) -> None:
        self.keypoints.close()

    def overload_report(self) -> dict:
        """What ``--max-persons`` left out (live mode's overload report, ``--stats-json``),
        and the landmark crops spent on regions not followed (``newcomer_crops``) with how
        many of them gave someone followed (``newcomer_crops_kept``)."""
        return {"max_persons": self.keypoints.max_persons, "choice": "largest",
                "persons_left_out": self.keypoints.persons_left_out,
                "frames_over_cap": self.keypoints.frames_over_cap,
                "newcomer_crops": self.keypoints.newcomer_crops,
                "newcomer_crops_kept": self.keypoints.newcomer_crops_kept}

    @property
    def background_cpu_seconds(self) -> float:
        """CPU time of the stage's helper thread (background detection), for benchmarks."""
        return self.keypoints.background_cpu_seconds

    def process(self, frame: Frame) -> Frame:
        tracked = self.keypoints.process(frame.image, frame.index)
        frame.persons = [
            Person(track_id=p.track_id, score=float(p.score), arrays={
                "box_xyxy": np.asarray(p.box, np.float32),
                "keypoints_blazepose33": np.asarray(p.keypoints33, np.float32),
                "keypoints_coco17": np.asarray(p.coco17, np.float32),
                "world_blazepose33": np.asarray(p.world33, np.float32),
            })
            for p in tracked
        ]
        return frame

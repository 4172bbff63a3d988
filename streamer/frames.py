"""The data that flows through the pipeline: one :class:`Frame` per captured image, holding
every :class:`Person` seen in it and the times each stage took and released it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Person:
    """One tracked person in one frame.

    ``arrays`` maps array names (see ``docs/wire-format.md`` for the registry, e.g.
    ``poses`` (72,) axis-angle, ``betas`` (10,), ``trans`` (3,), ``joints`` (24, 3),
    ``keypoints_blazepose33`` (33, 3)) to numpy arrays; everything published or recorded
    about the person lives there.
    """

    track_id: int
    score: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # What a stage computed for a later stage of the same run, never published or recorded
    # (the lift's denoiser condition and rotations, which the fit would compute again).
    handover: dict[str, object] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class StageStamp:
    """When a stage took a frame from its input and when it released it (monotonic s)."""

    stage: str
    taken: float
    released: float = math.nan


@dataclass
class Frame:
    """A captured image and everything computed about it.

    ``image`` is RGB ``uint8`` (H, W, 3). ``capture_time`` is ``time.monotonic()`` when the
    grabber got the frame (the "glass" time); ``stream_time`` is the source's own timestamp
    in seconds (presentation time of a file or stream) where it has one.
    """

    index: int
    image: np.ndarray | None
    capture_time: float
    source_size: tuple[int, int]
    stream_time: float | None = None
    persons: list[Person] = field(default_factory=list)
    stamps: list[StageStamp] = field(default_factory=list)
    publish_time: float | None = None
    # --output-frame head/world: the camera's pose in that frame (streamer.output_frame), for the wire header
    camera_pose: dict | None = None

    @property
    def width(self) -> int:
        return self.source_size[0]

    @property
    def height(self) -> int:
        return self.source_size[1]

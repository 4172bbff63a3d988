"""Names in a record directory: which per-person arrays the motion files keep, and the
``track_NNNN`` name of each track's files (and of its rows in a chunk while recording)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import RecordError

#: Every frame of a track's SMPL motion file has all of these.
SMPL_ARRAYS = ("poses", "trans", "betas", "joints")
#: Kept in the SMPL motion file when every one of its frames has them.
SMPL_EXTRAS = ("poses_std", "joints_std", "reprojection_px", "camera_rotation", "camera_position")
#: Keypoint arrays and their joint set, richest first: a track's keypoint file takes the first present.
KEYPOINT_ARRAYS = {"keypoints_blazepose33": "blazepose33", "keypoints_coco17": "coco17"}
#: The landmark network's metric 3D landmarks, kept beside BlazePose-33 keypoints.
WORLD_ARRAY = "world_blazepose33"
#: What the recorder keeps of a person; other arrays (boxes, ...) are in no motion file.
RECORDED_ARRAYS = (*SMPL_ARRAYS, *SMPL_EXTRAS, *KEYPOINT_ARRAYS, WORLD_ARRAY)


def track_file(directory: Path, track_id, suffix: str) -> Path:
    """``directory/track_NNNN<suffix>``. Track ids must be integers (never text, which could
    hold ``../`` or a NUL and name a file elsewhere); the name is built from the number only.
    Raises :class:`RecordError` otherwise."""
    if isinstance(track_id, bool) or not isinstance(track_id, (int, np.integer)):
        raise RecordError(f"track id {track_id!r} is not an integer; refusing to name a motion file after it")
    path = directory / f"track_{int(track_id):04d}{suffix}"
    if path.parent != directory:  # cannot happen with an integer id; kept as the invariant
        raise RecordError(f"motion file {path} would lie outside {directory}")
    return path


def track_id_of(name: str) -> int | None:
    """The id in a ``track_NNNN`` name (no suffix), or None if ``name`` is not one."""
    if not name.startswith("track_"):
        return None
    try:
        return int(name[len("track_"):])
    except ValueError:
        return None

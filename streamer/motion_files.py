"""Motion files: per track, an AMASS-style ``.npz`` of SMPL parameters and a keypoint
``.npz`` in the format ``run_stream.py lift`` reads.

Files are rewritten whole, to a temporary name then renamed over the old one, every few
seconds while running and once at the end, so whatever stops the run (Ctrl-C, SIGTERM, a
failing stage, even a hard kill between flushes) leaves complete, loadable files holding
everything up to the last flush. Formats: ``docs/motion-files.md``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import RecordError
from .frames import Frame

log = logging.getLogger("smplstream.record")

# mkstemp creates files readable by the owner only; motion files get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK

SMPL_ARRAYS = ("poses", "trans", "betas", "joints")
KEYPOINT_ARRAYS = {"keypoints_blazepose33": "blazepose33", "keypoints_coco17": "coco17"}


class _Column:
    """One array of a track, every frame in one growing numpy block (not a list of small
    arrays: a flush then copies blocks instead of looping over frames in Python, and memory
    per frame is the array's bytes, not an object per frame)."""

    def __init__(self, value: np.ndarray, capacity: int):
        self.shape, self.dtype = value.shape, value.dtype
        self.data = np.zeros((capacity, *value.shape), value.dtype)
        self.present = np.zeros(capacity, bool)  # rows (frames) in which the person had it

    def grow(self, capacity: int) -> None:
        data = np.zeros((capacity, *self.shape), self.dtype)
        data[: len(self.data)] = self.data
        present = np.zeros(capacity, bool)
        present[: len(self.present)] = self.present
        self.data, self.present = data, present


class _Track:
    def __init__(self, track_id: int):
        self.track_id = track_id
        self.n = 0  # rows (frames) held
        self.capacity = 64
        self.frame_index = np.zeros(self.capacity, np.int64)
        self.timestamp = np.zeros(self.capacity, np.float64)
        self.score = np.zeros(self.capacity, np.float32)
        self.columns: dict[str, _Column] = {}
        self.dirty = False
        self.shape_warned: set[str] = set()

    def add_row(self, frame_index: int, timestamp: float, score: float) -> int:
        if self.n == self.capacity:  # double: amortised O(1) per frame
            self.capacity *= 2
            for name in ("frame_index", "timestamp", "score"):
                old = getattr(self, name)
                new = np.zeros(self.capacity, old.dtype)
                new[: self.n] = old
                setattr(self, name, new)
            for column in self.columns.values():
                column.grow(self.capacity)
        row = self.n
        self.frame_index[row], self.timestamp[row], self.score[row] = frame_index, timestamp, score
        self.n += 1
        return row


class MotionRecorder:
    """Collects persons frame by frame and writes one set of files per track into ``directory``.

    ``fps`` is the source's frame rate (``mocap_framerate``), ``body_model`` names the body
    model the parameters belong to, ``image_size`` is (width, height) for keypoint files.
    """

    def __init__(self, directory: str | os.PathLike, *, fps: float, body_model: str = "unknown",
                 image_size: tuple[int, int] | None = None, flush_interval: float = 2.0):
        self.directory = Path(directory)
        self.fps = float(fps)
        self.body_model = body_model
        self.image_size = image_size
        self.flush_interval = flush_interval
        self.files_written: set[Path] = set()
        self._tracks: dict[int, _Track] = {}
        self._t0: float | None = None
        self._last_flush = time.monotonic()
        self._last_flush_cost = 0.0
        check_writable(self.directory)

    def write(self, frame: Frame) -> None:
        """Add every person of ``frame`` to its track; flush when the interval has passed."""
        if self._t0 is None:
            self._t0 = frame.capture_time
        stamp = frame.stream_time if frame.stream_time is not None else frame.capture_time - self._t0
        for person in frame.persons:
            track = self._tracks.get(person.track_id)
            if track is None:
                track_file(self.directory, person.track_id, ".npz")  # a usable id, before any data
                track = self._tracks[person.track_id] = _Track(person.track_id)
            row = track.add_row(frame.index, float(stamp), float(person.score))
            for name, value in person.arrays.items():
                value = np.asarray(value)
                column = track.columns.get(name)
                if column is None:
                    column = track.columns[name] = _Column(value, track.capacity)
                if value.shape != column.shape:
                    # Recorded as missing in this frame rather than failing the whole file.
                    if name not in track.shape_warned:
                        track.shape_warned.add(name)
                        log.warning("track %s: '%s' has shape %s in frame %d, not %s as before; "
                                    "left out of the motion file in such frames", track.track_id, name,
                                    value.shape, frame.index, column.shape)
                    continue
                column.data[row] = value
                column.present[row] = True
            track.dirty = True
        now = time.monotonic()
        # Rewriting whole files costs more as they grow: keep flushing below ~10% of the time.
        if now - self._last_flush >= max(self.flush_interval, 10 * self._last_flush_cost):
            self.flush()

    def flush(self) -> None:
        """Write every track that changed since the last flush."""
        started = time.monotonic()
        for track in self._tracks.values():
            if track.dirty:
                self._write_track(track)
                track.dirty = False
        self._last_flush = time.monotonic()
        self._last_flush_cost = self._last_flush - started

    def close(self) -> None:
        self.flush()
        if self.files_written:
            log.info("wrote %d motion file(s) to %s", len(self.files_written), self.directory)

    # -- formats ---------------------------------------------------------------

    def _write_track(self, track: _Track) -> None:
        n = track.n
        base = {
            "track_id": np.int64(track.track_id),
            "frame_index": track.frame_index[:n].copy(),
            "timestamp": track.timestamp[:n].copy(),
            "score": track.score[:n].copy(),
        }
        rows = _complete_rows(track, SMPL_ARRAYS)
        if rows is not None:
            column = lambda name: track.columns[name].data[rows]  # noqa: E731
            extras = {name: column(name) for name in ("poses_std", "joints_std", "reprojection_px")
                      if name in track.columns and track.columns[name].present[rows].all()}
            data = motion_arrays(poses=column("poses"), trans=column("trans"), betas=column("betas"),
                                 joints=column("joints"), fps=self.fps, body_model=self.body_model,
                                 **{k: v[rows] for k, v in base.items() if k != "track_id"}, **extras)
            data["track_id"] = base["track_id"]
            self._save(track_file(self.directory, track.track_id, ".npz"), data)
        for name, joint_set in KEYPOINT_ARRAYS.items():
            rows = _complete_rows(track, (name,))
            if rows is None:
                continue
            data = {
                "keypoints": track.columns[name].data[rows].astype(np.float32),
                "joint_set": np.str_(joint_set),
                "fps": np.float64(self.fps),
                "image_size": np.asarray(self.image_size or (0, 0), dtype=np.int64),
                **{k: v[rows] for k, v in base.items() if k != "track_id"},
                "track_id": base["track_id"],
            }
            world = track.columns.get("world_blazepose33")
            if joint_set == "blazepose33" and world is not None and world.present[rows].all():
                # The landmark network's metric 3D landmarks: `lift` fits them too.
                data["world_landmarks"] = world.data[rows].astype(np.float32)
            self._save(track_file(self.directory, track.track_id, f"_{joint_set}.npz"), data)
            break  # one keypoint file per track: the richest joint set present

    def _save(self, path: Path, data: dict) -> None:
        write_npz_atomic(path, data)
        self.files_written.add(path)


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


def motion_arrays(*, poses, trans, betas, joints, fps: float, body_model: str, frame_index, timestamp,
                  score=None, **extras) -> dict[str, np.ndarray]:
    """The AMASS-style motion file of ``docs/motion-files.md`` from per-frame arrays:
    ``poses`` (T, 72), ``trans`` (T, 3), ``betas`` (T, 10) per frame, ``joints`` (T, 24, 3)."""
    T = len(frame_index)
    data = {
        "poses": np.asarray(poses, np.float32).reshape(T, -1),
        "trans": np.asarray(trans, np.float32).reshape(T, 3),
        "betas": np.asarray(betas, np.float32).mean(axis=0),
        "betas_per_frame": np.asarray(betas, np.float32),
        "joints": np.asarray(joints, np.float32).reshape(T, -1, 3),
        "mocap_framerate": np.float64(fps),
        "gender": np.str_("neutral"),
        "body_model": np.str_(body_model),
        "frame_index": np.asarray(frame_index, np.int64),
        "timestamp": np.asarray(timestamp, np.float64),
    }
    if score is not None:
        data["score"] = np.asarray(score, np.float32)
    data.update({k: np.asarray(v, np.float32) for k, v in extras.items()})
    return data


def write_npz_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as ``.npz`` atomically (see :func:`write_file_atomic`)."""
    write_file_atomic(path, lambda f: np.savez(f, **data))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (see :func:`write_file_atomic`)."""
    write_file_atomic(path, lambda f: f.write(data))


def write_file_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it over
    ``path``: readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RecordError(f"cannot write {path}: {exc.strerror or exc}") from None


def _complete_rows(track: _Track, names) -> np.ndarray | None:
    """Indices of the frames in which the track has every array in ``names``."""
    if not all(n in track.columns for n in names):
        return None
    mask = np.ones(track.n, bool)
    for name in names:
        mask &= track.columns[name].present[: track.n]
    rows = np.flatnonzero(mask)
    return rows if len(rows) else None


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written there, or raise
    :class:`RecordError` before any frame is captured."""
    if "\0" in str(directory):
        raise RecordError(f"cannot record to {str(directory)!r}: the name contains a NUL byte")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RecordError(f"cannot record to {directory}: it exists and is not a directory") from None
    except OSError as exc:
        raise RecordError(f"cannot record to {directory}: {exc.strerror or exc} (choose a writable "
                          "directory with --record)") from None
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise RecordError(f"cannot record to {directory}: {exc.strerror or exc} (choose a writable "
                          "directory with --record)") from None

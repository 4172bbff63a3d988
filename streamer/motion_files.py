"""Motion files: per track, an AMASS-style ``.npz`` of SMPL parameters and a keypoint
``.npz`` in the format ``run_stream.py lift`` reads (``docs/motion-files.md``).

While a run goes on, :class:`MotionRecorder` appends each track's new frames as a small
chunk file every few seconds (``streamer.motion_chunks``), so memory and the cost of a
flush stay the same however long the run is. The final files are assembled from the
chunks (``streamer.motion_assembly``) when a track has not been seen for a while and when
the run stops, whatever stops it (Ctrl-C, SIGTERM, a failing stage); after a hard kill
or a power cut, ``smplstream recover DIR`` assembles them from the chunks left behind.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from .atomic_write import FILE_MODE, write_bytes_atomic, write_file_atomic, write_npz_atomic
from .errors import RecordError
from .frames import Frame
from .motion_assembly import Assembled, assemble_track
from .motion_chunks import ChunkJournal, RunSettings, chunk_paths, chunk_rows, find_runs, is_live, read_settings
from .motion_layout import KEYPOINT_ARRAYS, RECORDED_ARRAYS, SMPL_ARRAYS, track_file

# The file helpers and names live in smaller modules now; importers of this one still find them.
__all__ = ["MotionRecorder", "motion_arrays", "check_writable", "check_no_unfinished_run", "track_file",
           "write_file_atomic", "write_npz_atomic", "write_bytes_atomic", "FILE_MODE", "SMPL_ARRAYS",
           "KEYPOINT_ARRAYS"]

log = logging.getLogger("smplstream.record")


class _Column:
    """One array of a track's current chunk, every frame in one numpy block (not a list of
    small arrays: a chunk is then written without a loop over frames in Python)."""

    def __init__(self, shape: tuple, capacity: int):
        self.shape = shape
        self.data = np.zeros((capacity, *shape), np.float32)  # the motion files hold float32
        self.present = np.zeros(capacity, bool)  # rows (frames) in which the person had it

    def grow(self, capacity: int) -> None:
        data = np.zeros((capacity, *self.shape), np.float32)
        data[: len(self.data)] = self.data
        present = np.zeros(capacity, bool)
        present[: len(self.present)] = self.present
        self.data, self.present = data, present


class _Track:
    """A track's frames since its last chunk, and the little that is kept between chunks."""

    def __init__(self, track_id: int):
        self.track_id = track_id
        self.shapes: dict[str, tuple] = {}  # each array's per-frame shape: its first frame's, in every chunk
        self.shape_warned: set[str] = set()
        self.first: int | None = None  # number of the first chunk with the track's rows
        self.last = -1  # number of the last one
        self.assembled = 0  # the final files hold the chunks numbered below this
        self.last_seen = 0.0
        self._empty(16)

    def _empty(self, capacity: int) -> None:
        self.n = 0  # rows (frames) held
        self.capacity = capacity
        self.frame_index = np.zeros(capacity, np.int64)
        self.timestamp = np.zeros(capacity, np.float64)
        self.score = np.zeros(capacity, np.float32)
        self.columns: dict[str, _Column] = {}

    def add_row(self, frame_index: int, timestamp: float, score: float) -> int:
        if self.n == self.capacity:  # double: amortised O(1) per frame, up to the chunk's size
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

    def column(self, name: str, shape: tuple) -> _Column:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = _Column(shape, self.capacity)
        return column

    def rows(self) -> np.ndarray:
        """The rows held, as a chunk's structured array."""
        return chunk_rows(self.n, {"frame_index": self.frame_index, "timestamp": self.timestamp,
                                   "score": self.score},
                          {name: (c.data, c.present) for name, c in self.columns.items()})

    def clear(self) -> None:
        """Empty the buffers once their rows are on disk (same capacity: a steady run
        allocates nothing new)."""
        for column in self.columns.values():
            column.present[: self.n] = False
        self.n = 0

    def free(self) -> None:
        """Drop the buffers of a track that has ended (kept: ids, shapes, counts)."""
        self._empty(16)


class _Worker:
    """One daemon thread running jobs in order. Not a ThreadPoolExecutor: the interpreter
    waits for those at exit, and a second Ctrl-C must exit at once (the chunks stay on
    disk for ``smplstream recover``)."""

    def __init__(self, name: str):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        """Finish the jobs submitted, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 -- handed to whoever collects the result
                future.set_exception(exc)


class MotionRecorder:
    """Collects persons frame by frame and writes one set of files per track into ``directory``.

    ``fps`` is the source's frame rate (``mocap_framerate``), ``body_model`` names the body
    model the parameters belong to, ``image_size`` is (width, height) for keypoint files.
    Every ``flush_interval`` seconds the tracks' new frames go to disk as one chunk (a
    track's at ``chunk_frames`` frames at the latest); a track unseen for
    ``track_end_after`` seconds of the stream gets its final files then (assembled in a
    background thread), every other track at :meth:`close`.
    """

    formats: tuple[str, ...] = ("npz",)

    def __init__(self, directory: str | os.PathLike, *, fps: float, body_model: str = "unknown",
                 gender: str | None = None, image_size: tuple[int, int] | None = None, flush_interval: float = 2.0,
                 chunk_frames: int = 512, track_end_after: float | None = 10.0):
        self.directory = Path(directory)
        self.fps = float(fps)
        self.body_model = body_model
        self.gender = gender  # kept in the run's settings, so `recover` writes it too
        self.image_size = image_size
        self.flush_interval = flush_interval
        self.chunk_frames = max(1, int(chunk_frames))
        self.track_end_after = track_end_after
        self.files_written: set[Path] = set()
        self._tracks: dict[int, _Track] = {}
        self._open: dict[int, _Track] = {}  # tracks seen lately (the others have ended)
        self._journal: ChunkJournal | None = None
        self._background: _Worker | None = None
        self._pending: list[tuple[_Track, int, Future]] = []
        self._closed = False
        self._t0: float | None = None
        self._last_flush = time.monotonic()
        self._last_flush_cost = 0.0
        check_writable(self.directory)
        check_no_unfinished_run(self.directory)

    def write(self, frame: Frame) -> None:
        """Add every person of ``frame`` to its track; write chunks when the interval has
        passed, final files for tracks that have ended."""
        if self._t0 is None:
            self._t0 = frame.capture_time
        stamp = frame.stream_time if frame.stream_time is not None else frame.capture_time - self._t0
        for person in frame.persons:
            track = self._tracks.get(person.track_id)
            if track is None:
                track_file(self.directory, person.track_id, ".npz")  # a usable id, before any data
                track = self._tracks[person.track_id] = _Track(person.track_id)
            self._open.setdefault(person.track_id, track)  # back in view, if it had ended
            row = track.add_row(frame.index, float(stamp), float(person.score))
            for name, value in person.arrays.items():
                if name not in RECORDED_ARRAYS:
                    continue  # in no motion file
                value = np.asarray(value)
                shape = track.shapes.setdefault(name, value.shape)
                if value.shape != shape or value.dtype.kind not in "biuf":
                    # Recorded as missing in this frame rather than failing the whole file.
                    if name not in track.shape_warned:
                        track.shape_warned.add(name)
                        what = (f"shape {value.shape} in frame {frame.index}, not {shape} as before"
                                if value.shape != shape
                                else f"non-numeric values ({value.dtype}) in frame {frame.index}")
                        log.warning("track %s: '%s' has %s; left out of the motion file in such frames",
                                    track.track_id, name, what)
                    continue
                column = track.column(name, shape)
                column.data[row] = value
                column.present[row] = True
            track.last_seen = float(stamp)
            if track.n >= self.chunk_frames:  # memory stays bounded whatever the interval
                self._write_chunk([track])
        self._end_unseen(float(stamp))
        now = time.monotonic()
        # A slow disk should not take more than about 10% of the time.
        if now - self._last_flush >= max(self.flush_interval, 10 * self._last_flush_cost):
            self.flush()

    def flush(self) -> None:
        """Write every track's new frames as one chunk file (cost: those frames only)."""
        started = time.monotonic()
        self._write_chunk([t for t in self._open.values() if t.n])
        self._last_flush = time.monotonic()
        self._last_flush_cost = self._last_flush - started

    def close(self) -> None:
        """Write the last chunks, assemble every track's final files, remove the chunks.
        If a file cannot be written, the chunks stay for ``smplstream recover`` and the
        error is raised."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self.flush()
            finally:
                self._collect_background()
            for track in self._tracks.values():
                if track.last >= track.assembled:
                    self._finished(track, track.last + 1, self._assemble(track, track.last + 1))
            if self._journal is not None:
                self._journal.remove()
        finally:
            if self._journal is not None:
                self._journal.release()
        if self.files_written:
            log.info("wrote %d motion file(s) to %s", len(self.files_written), self.directory)

    # -- chunks and assembly ----------------------------------------------------------

    def _world_writer(self):
        """BVH/.smpl writer for the assembly (none here: see MultiFormatRecorder)."""
        return None

    def _settings(self) -> RunSettings:
        return RunSettings(fps=self.fps, body_model=self.body_model, gender=self.gender, image_size=self.image_size,
                           formats=tuple(self.formats), pid=os.getpid(), started=time.time())

    def _write_chunk(self, tracks: list[_Track]) -> None:
        """One chunk file with the rows of ``tracks`` (one fsync however many there are)."""
        if not tracks:
            return
        if self._journal is None:
            self._journal = ChunkJournal(self.directory, self._settings())
        # The rows leave memory only once they are on disk: a failed write loses nothing.
        seq = self._journal.write({t.track_id: t.rows() for t in tracks})
        for track in tracks:
            track.clear()
            track.first = seq if track.first is None else track.first
            track.last = seq

    def _end_unseen(self, stamp: float) -> None:
        if self.track_end_after is None:
            return
        for track in [t for t in self._open.values() if stamp - t.last_seen >= self.track_end_after]:
            if track.n:
                self._write_chunk([track])
            track.free()
            del self._open[track.track_id]
            self._assemble_later(track)

    def _assemble_later(self, track: _Track) -> None:
        """Assemble an ended track's files in a background thread: for a long track that
        takes seconds, which live mode would otherwise spend dropping frames."""
        if track.last < track.assembled:
            return
        if self._background is None:
            self._background = _Worker("record-assemble")
        upto = track.last + 1  # the chunks written from now on are not read
        self._pending.append((track, upto, self._background.submit(self._assemble, track, upto)))
        self._collect_background(wait=False)

    def _collect_background(self, wait: bool = True) -> None:
        """Take the results of finished background assemblies (all of them with ``wait``).
        A failure is logged only: :meth:`close` assembles that track again."""
        still = []
        for track, upto, future in self._pending:
            if not wait and not future.done():
                still.append((track, upto, future))
                continue
            try:
                self._finished(track, upto, future.result())
            except Exception as exc:  # noqa: BLE001 -- retried at close, where it raises
                log.warning("track %s: assembling its motion files failed (%s); retrying at the end",
                            track.track_id, exc)
        self._pending = still
        if wait and self._background is not None:
            self._background.stop()
            self._background = None

    def _assemble(self, track: _Track, upto: int) -> Assembled:
        return assemble_track(self._journal.folder, self.directory, track.track_id, self._journal.settings,
                              world_writer=self._world_writer(), first=track.first, upto=upto)

    def _finished(self, track: _Track, upto: int, done: Assembled) -> None:
        track.assembled = max(track.assembled, upto)
        self.files_written.update(done.files)
        if done.skipped:
            log.warning("track %s: %d unreadable chunk(s) left out", track.track_id, len(done.skipped))


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


def check_no_unfinished_run(directory: Path) -> None:
    """Refuse a record directory that holds the chunks of another run: still recording there
    (the two would overwrite each other's files), or killed before it could assemble them
    (recording now would first overwrite, then lose to ``recover``, the same track names)."""
    for run in find_runs(directory):
        if not chunk_paths(run) and not is_live(run):
            continue  # killed before its first chunk: nothing to lose (`recover` removes it)
        if is_live(run):
            try:
                pid = f" (process {read_settings(run).pid})"
            except RecordError:
                pid = ""
            raise RecordError(f"cannot record to {directory}: another run is recording there{pid}; "
                              "choose another directory with --record")
        raise RecordError(f"cannot record to {directory}: it holds the chunks of a recording that did not "
                          f"finish ({run.name}); run `smplstream recover {directory}` first, or record to "
                          "another directory")
from .motion_load import load_motion  # noqa: F401

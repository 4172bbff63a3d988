"""The chunk journal of a recording: what the recorder appends while it runs and the final
motion files are assembled from (``docs/motion-files.md``, "Long recordings").

One hidden folder per run inside the record directory::

    DIR/.smplstream-run-<date>-<time>-<random>/
        run.json      what the assembly needs (fps, body model, image size, formats)
        lock          locked (flock) by the recording process while it runs
        000000.npz    one chunk per flush: per track (member ``track_NNNN``), its frames
        000001.npz    since the previous flush, as one structured array (a row per frame)
        ...

One file per flush, not per track: a flush costs one write and one fsync however many
people are in view, and a long run leaves fewer files to remove. Each chunk is written
under a temporary name, fsync'd, then renamed (and the rename fsync'd): a chunk is whole or
absent, and a crash while one is written can only leave a hidden temporary file, never a
damaged earlier chunk. Zip's CRC-32 of each member catches damage done later (a disk
error): a chunk that cannot be read is skipped with a warning, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic_write import fsync_directory, write_bytes_atomic, write_file_atomic
from .errors import RecordError
from .motion_layout import track_file, track_id_of

try:
    import fcntl
except ImportError:  # not on Windows: a run's liveness is then not checked
    fcntl = None

log = logging.getLogger("smplstream.record")

RUN_PREFIX = ".smplstream-run-"
MANIFEST = "run.json"
LOCK = "lock"
PRESENT = "present_"  # field prefix of an array's per-frame mask in a chunk
ROW_KEYS = ("frame_index", "timestamp", "score")


@dataclass(frozen=True)
class RunSettings:
    """What a run's final files need beyond the chunks: written once as ``run.json``."""

    fps: float
    body_model: str = "unknown"
    gender: str | None = None  # a user's body model (--body-model): its gender; None: the bundled one
    image_size: tuple[int, int] | None = None
    formats: tuple[str, ...] = ("npz",)
    pid: int = 0
    started: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, text: bytes) -> "RunSettings":
        d = json.loads(text)
        size = d.get("image_size")
        return cls(fps=float(d["fps"]), body_model=str(d.get("body_model", "unknown")),
                   gender=None if d.get("gender") is None else str(d["gender"]),
                   image_size=None if size is None else (int(size[0]), int(size[1])),
                   formats=tuple(str(f) for f in d.get("formats", ("npz",))),
                   pid=int(d.get("pid", 0)), started=float(d.get("started", 0.0)))


class ChunkJournal:
    """Appends chunks for one run into ``directory``. The run folder is made at the first
    chunk, so a run that records nothing leaves nothing behind."""

    def __init__(self, directory: Path, settings: RunSettings):
        self.directory = Path(directory)
        self.settings = settings
        self.folder: Path | None = None
        self.chunks = 0  # chunks written; the next one's number
        self._lock_fd: int | None = None

    def write(self, tracks: dict[int, np.ndarray]) -> int:
        """Write one chunk holding each track's rows (structured arrays, see
        :func:`chunk_rows`) durably; returns its number."""
        seq = self.chunks
        members = {track_file(Path(), track_id, "").name: rows for track_id, rows in tracks.items()}
        write_file_atomic(self._run_folder() / chunk_name(seq), lambda f: np.savez(f, **members))
        self.chunks += 1
        return seq

    def remove(self) -> None:
        """Delete the run folder (the final files are written) and let go of its lock."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            fsync_directory(self.directory)
            self.folder = None
        self.release()

    def release(self) -> None:
        """Let go of the lock, leaving the chunks for ``smplstream recover``."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run_folder(self) -> Path:
        if self.folder is not None:
            return self.folder
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{stamp}-", dir=self.directory))
            # Locked before anything else is in it: `recover` leaves a locked folder alone.
            self._lock_fd = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise RecordError(f"cannot record to {self.directory}: {exc.strerror or exc}") from None
        self.folder = folder
        write_bytes_atomic(folder / MANIFEST, self.settings.to_json())
        fsync_directory(self.directory)
        return folder


def chunk_rows(n: int, row_keys: dict[str, np.ndarray],
               columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """A track's ``n`` rows as one structured array: ``frame_index``, ``timestamp``,
    ``score``, and per array its values (float32) and ``present_<name>`` mask."""
    fields = [("frame_index", np.int64), ("timestamp", np.float64), ("score", np.float32)]
    for name, (data, _) in columns.items():
        fields += [(name, np.float32, data.shape[1:]), (PRESENT + name, np.bool_)]
    rows = np.zeros(n, fields)
    for name, values in row_keys.items():
        rows[name] = values[:n]
    for name, (data, present) in columns.items():
        rows[name] = data[:n]
        rows[PRESENT + name] = present[:n]
    return rows


def chunk_name(seq: int) -> str:
    return f"{seq:06d}.npz"


def chunk_seq(path: Path) -> int | None:
    """The number of a chunk file, or None for anything else (temporary files)."""
    if path.name.startswith(".") or path.suffix != ".npz":
        return None
    try:
        return int(path.stem)
    except ValueError:
        return None


def chunk_paths(run: Path, first: int = 0, upto: int | None = None) -> list[Path]:
    """A run's chunks in order, those numbered from ``first`` to below ``upto`` if given."""
    chunks = []
    for p in run.iterdir():
        seq = chunk_seq(p)
        if seq is not None and seq >= first and (upto is None or seq < upto):
            chunks.append((seq, p))
    return [p for _, p in sorted(chunks)]


def find_runs(directory: Path) -> list[Path]:
    """The run folders in ``directory`` (runs that have not finished, or are still going)."""
    try:
        return sorted(p for p in Path(directory).iterdir() if p.name.startswith(RUN_PREFIX) and p.is_dir())
    except OSError:
        return []


def is_live(run: Path) -> bool:
    """True while the process that records into ``run`` holds its lock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(run / LOCK, os.O_RDWR)
    except OSError:
        return False  # no lock file: the run died before it locked anything
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's own lock too
    return False


def read_settings(run: Path) -> RunSettings:
    """The run's ``run.json``; raises :class:`RecordError` if it is missing or unreadable."""
    try:
        return RunSettings.from_json((run / MANIFEST).read_bytes())
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RecordError(f"{run / MANIFEST} is missing or unreadable ({exc}); cannot assemble {run}") from None


def chunk_tracks(path: Path) -> list[int] | None:
    """The ids of the tracks in a chunk, or None with a warning if it cannot be opened."""
    try:
        with _open_chunk(path) as npz:
            names = list(npz.files)
    except Exception as exc:  # noqa: BLE001 -- whatever is wrong with one chunk, the others still count
        log.warning("skipping unreadable chunk %s: %s", path, exc)
        return None
    return [t for t in map(track_id_of, names) if t is not None]


def _open_chunk(path: Path):
    # np.load would take other bytes for a pickle (and suggest unpickling them): check first.
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError("not a zip archive")
    return np.load(path, allow_pickle=False)


class Unreadable(Exception):
    """A chunk (or a track's rows in it) that cannot be used."""


def read_chunk(path: Path, track_id: int, shapes: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """A track's rows in a chunk as ``{field: array}``, None if the track is not in it.
    Raises :class:`Unreadable` (the reason logged as a warning) if the chunk cannot be
    read or does not fit the track's other chunks (an array of another shape). ``shapes``
    maps each array to its per-frame shape; arrays seen first here are added."""
    name = track_file(Path(), track_id, "").name
    try:
        with _open_chunk(path) as npz:
            if name not in npz.files:
                return None
            rows = npz[name]
    except Exception as exc:  # noqa: BLE001 -- whatever is wrong with one chunk, the others still count
        log.warning("skipping unreadable chunk %s: %s", path, exc)
        raise Unreadable(str(exc)) from None
    problem = _chunk_problem(rows, shapes)
    if problem:
        log.warning("skipping chunk %s for %s: %s", path, name, problem)
        raise Unreadable(problem)
    data = {k: rows[k] for k in rows.dtype.names}
    for key, value in data.items():
        if not key.startswith(PRESENT) and key not in ROW_KEYS:
            shapes.setdefault(key, value.shape[1:])
    return data


def _chunk_problem(rows: np.ndarray, shapes: dict[str, tuple]) -> str | None:
    names = rows.dtype.names or ()
    if rows.ndim != 1 or any(k not in names for k in ROW_KEYS):
        return "it is not a track's rows (frame_index, timestamp, score, arrays)"
    for key in names:
        field = rows.dtype[key]
        kind = (field.subdtype[0] if field.subdtype else field).kind
        if kind not in "biuf":
            return f"'{key}' is not numeric ({field})"
        if key.startswith(PRESENT):
            if key[len(PRESENT):] not in names or kind != "b":
                return f"'{key}' is not the mask of an array in the chunk"
        elif key not in ROW_KEYS:
            if PRESENT + key not in names:
                return f"'{key}' has no mask"
            shape = field.shape
            if key in shapes and shape != shapes[key]:
                return f"'{key}' has frames of shape {shape}, other chunks {shapes[key]}"
    return None


def remove_chunks(run: Path, used: list[Path]) -> list[Path]:
    """Delete the chunks in ``used`` and the run's temporary leftovers; the run folder goes
    too when no other chunk is left in it. Returns the chunks left."""
    for path in used:
        path.unlink(missing_ok=True)
    left = []
    for p in run.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)  # a chunk a crash interrupted: it was never complete
        elif chunk_seq(p) is not None:
            left.append(p)
    if not left:
        shutil.rmtree(run, ignore_errors=True)
        fsync_directory(run.parent)
    return sorted(left)

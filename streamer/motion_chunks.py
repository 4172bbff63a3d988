"""The chunk journal of a recording: what the recorder appends while it runs and the final
motion files are assembled from (``docs/motion-files.md``, "Long recordings").

One hidden folder per run inside the record directory::

    DIR/.smplstream-run-<date>-<time>-<random>/
        run.json              what the assembly needs (fps, body model, image size, formats)
        lock                  locked (flock) by the recording process while it runs
        track_0001/000000.npz one chunk per flush: the track's frames since the previous chunk
        track_0001/000001.npz ...

Each chunk is a plain ``.npz`` written under a temporary name, fsync'd, then renamed (and
the rename fsync'd): a chunk is whole or absent, and a crash while one is written can only
leave a hidden temporary file, never a damaged earlier chunk. A chunk that is unreadable all
the same (a disk error, a file truncated by hand) is skipped with a warning.
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
PRESENT = "present_"  # chunk key prefix of an array's per-frame mask
ROW_KEYS = ("frame_index", "timestamp", "score")


@dataclass(frozen=True)
class RunSettings:
    """What a run's final files need beyond the chunks: written once as ``run.json``."""

    fps: float
    body_model: str = "unknown"
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
        self._lock_fd: int | None = None
        self._track_folders: set[Path] = set()

    def write(self, track_id: int, seq: int, arrays: dict[str, np.ndarray]) -> Path:
        """Write chunk number ``seq`` of a track durably; returns its path."""
        folder = track_file(self._run_folder(), track_id, "")
        if folder not in self._track_folders:
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise RecordError(f"cannot write {folder}: {exc.strerror or exc}") from None
            fsync_directory(folder.parent)
            self._track_folders.add(folder)
        path = folder / chunk_name(seq)
        write_file_atomic(path, lambda f: np.savez(f, **arrays))
        return path

    def track_folder(self, track_id: int) -> Path:
        return track_file(self._run_folder(), track_id, "")

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


def chunk_name(seq: int) -> str:
    return f"{seq:06d}.npz"


def chunk_seq(path: Path) -> int | None:
    """The sequence number of a chunk file, or None for anything else (temporary files)."""
    if path.name.startswith(".") or path.suffix != ".npz":
        return None
    try:
        return int(path.stem)
    except ValueError:
        return None


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


def track_folders(run: Path) -> list[tuple[int, Path]]:
    """``(track_id, folder)`` of every track with chunks in ``run``, by id."""
    found = []
    for p in run.iterdir():
        track_id = track_id_of(p.name)
        if track_id is not None and p.is_dir():
            found.append((track_id, p))
    return sorted(found)


def chunk_paths(folder: Path, upto: int | None = None) -> list[Path]:
    """A track folder's chunks in order (those numbered below ``upto`` if given)."""
    chunks = []
    for p in folder.iterdir():
        seq = chunk_seq(p)
        if seq is not None and (upto is None or seq < upto):
            chunks.append((seq, p))
    return [p for _, p in sorted(chunks)]


def read_chunk(path: Path, shapes: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """A chunk's arrays, or None with a warning if it is unreadable or inconsistent (rows of
    different lengths, an array whose shape differs from the track's other chunks).
    ``shapes`` maps each array to its per-frame shape; arrays seen first here are added."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 -- whatever is wrong with one chunk, the others still count
        log.warning("skipping unreadable chunk %s: %s", path, exc)
        return None
    problem = _chunk_problem(data, shapes)
    if problem:
        log.warning("skipping chunk %s: %s", path, problem)
        return None
    for name, value in data.items():
        if not name.startswith(PRESENT) and name not in ROW_KEYS:
            shapes.setdefault(name, value.shape[1:])
    return data


def _chunk_problem(data: dict[str, np.ndarray], shapes: dict[str, tuple]) -> str | None:
    if any(k not in data for k in ROW_KEYS):
        return "it has no frame_index, timestamp or score"
    n = len(data["frame_index"])
    for name, value in data.items():
        if value.ndim == 0 or len(value) != n:
            return f"'{name}' holds {value.shape[:1]} rows, not {n}"
        if value.dtype.kind not in "biuf":
            return f"'{name}' is not numeric ({value.dtype})"
        if name.startswith(PRESENT):
            if name[len(PRESENT):] not in data or value.dtype != bool:
                return f"'{name}' is not the mask of an array in the chunk"
        elif name not in ROW_KEYS:
            if PRESENT + name not in data:
                return f"'{name}' has no mask"
            if name in shapes and value.shape[1:] != shapes[name]:
                return f"'{name}' has frames of shape {value.shape[1:]}, other chunks {shapes[name]}"
    return None


def remove_used(run: Path, used: list[Path]) -> list[Path]:
    """Delete the chunks that were assembled and the run's temporary leftovers; the run
    folder goes too when nothing else (a chunk that could not be read) is left in it.
    Returns what was left."""
    for path in used:
        path.unlink(missing_ok=True)
    left = []
    for folder in [p for p in run.iterdir() if p.is_dir()]:
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # a chunk a crash interrupted: never complete
            else:
                left.append(p)
        if not any(folder.iterdir()):
            folder.rmdir()
    if left:
        return left
    shutil.rmtree(run, ignore_errors=True)
    fsync_directory(run.parent)
    return []

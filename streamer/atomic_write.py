"""Files that are either whole or absent: written under a temporary name beside their final
one, flushed to the disk (fsync), then renamed over it, and the rename itself made durable
by an fsync of the directory. A crash or power cut at any moment leaves the old file or the
new one, never half of one, and a file that was renamed is on the disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import RecordError

# mkstemp creates files readable by the owner only; motion files get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write_file_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync it, then rename
    it over ``path``: readers see the old file or the new one, never half of one. Raises
    :class:`RecordError` (the temporary file removed) if anything cannot be written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on the disk before the name points at it
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RecordError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def write_npz_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as ``.npz`` atomically (see :func:`write_file_atomic`)."""
    write_file_atomic(path, lambda f: np.savez(f, **data))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (see :func:`write_file_atomic`)."""
    write_file_atomic(path, lambda f: f.write(data))


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make the names created, renamed or removed in ``directory`` durable. Filesystems that
    cannot fsync a directory (some network mounts) are left as they are."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""An ``.npz`` written from arrays that never sit whole in memory: each array's rows are
appended block by block to a spool (an unnamed temporary file), then copied into the
archive's member. ``np.load`` reads the result like any ``np.savez`` file."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .atomic_write import write_file_atomic


class Spool:
    """Rows of one array (``dtype``, every row the same shape) appended block by block to an
    unnamed temporary file in ``directory``; the file vanishes when closed or when the
    process ends, even by a kill."""

    def __init__(self, dtype, directory: str | Path | None = None):
        self.dtype = np.dtype(dtype)
        self.row_shape: tuple | None = None
        self.rows = 0
        self._file = tempfile.TemporaryFile(dir=directory)

    @property
    def shape(self) -> tuple:
        return (self.rows, *(self.row_shape or ()))

    def append(self, block: np.ndarray) -> None:
        """Append the rows of ``block`` (cast to the spool's dtype)."""
        block = np.ascontiguousarray(block, self.dtype)
        if self.row_shape is None:
            self.row_shape = block.shape[1:]
        elif block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} appended to rows of shape {self.row_shape}")
        self._file.write(block.data)
        self.rows += len(block)

    def copy_to(self, out) -> None:
        self._file.flush()
        self._file.seek(0)
        shutil.copyfileobj(self._file, out, 1 << 20)

    def close(self) -> None:
        self._file.close()


def write_npz(path: str | Path, members: dict[str, "np.ndarray | Spool"]) -> None:
    """Write ``members`` (whole arrays or spools) as an uncompressed ``.npz``, atomically."""
    def write(f) -> None:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in members.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    if isinstance(value, Spool):
                        header = {"descr": np.lib.format.dtype_to_descr(value.dtype),
                                  "fortran_order": False, "shape": value.shape}
                        np.lib.format.write_array_header_1_0(member, header)
                        value.copy_to(member)
                    else:
                        np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    write_file_atomic(path, write)

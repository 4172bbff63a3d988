"""A track's final motion files (``docs/motion-files.md``) assembled from its chunks, read
from disk one at a time: memory holds one chunk plus a few numbers per frame, however long
the track. Used when a track ends, when the run stops, and by ``smplstream recover``.

1. One pass over the chunks: each array's rows that may go into a file are appended to a
   spool file (SMPL frames; keypoint frames per joint set; optional arrays while every
   frame so far has them), and the shape is summed for the mean ``betas``. A chunk that
   cannot be read is skipped with a warning.
2. The ``.npz`` files are written from the spools; same keys, order and dtypes as
   :func:`streamer.motion_files.motion_arrays` and the keypoint files always had.
3. BVH and ``.smpl``: the writer that ``streamer.motion_formats`` provides reads the SMPL
   frames again, chunk by chunk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RecordError
from .motion_chunks import PRESENT, RunSettings, Unreadable, chunk_paths, read_chunk
from .motion_layout import KEYPOINT_ARRAYS, SMPL_ARRAYS, SMPL_EXTRAS, WORLD_ARRAY, track_file
from .npz_stream import Spool, write_npz

log = logging.getLogger("smplstream.record")


@dataclass
class Assembled:
    """What one assembly did: the files written, the frames in the track's SMPL and keypoint
    files, the chunks read and those skipped as unreadable."""

    track_id: int
    files: list[Path] = field(default_factory=list)
    smpl_frames: int = 0
    keypoint_frames: int = 0
    chunks: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


@dataclass
class _Scan:
    """What the pass over a track's chunks found, and the spools it filled."""

    track_id: int
    spools: "_Spools"
    chunks: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    shapes: dict[str, tuple] = field(default_factory=dict)
    smpl_frames: int = 0
    betas_sum: np.ndarray | None = None
    # Optional arrays (SMPL extras; world landmarks per keypoint set) that every frame so far has.
    complete: dict[str, bool] = field(default_factory=dict)
    keypoint_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYPOINT_ARRAYS, 0))


class _Spools(dict):
    """Spool files by name, made at their first rows; all closed together."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def append(self, name: str, block: np.ndarray, dtype=np.float32) -> None:
        if name not in self:
            self[name] = Spool(dtype, self.directory)
        self[name].append(block)

    def close(self) -> None:
        for spool in self.values():
            spool.close()


def _mask(chunk: dict[str, np.ndarray], names) -> np.ndarray:
    """Rows (frames) of ``chunk`` that have every array in ``names``."""
    mask = np.ones(len(chunk["frame_index"]), bool)
    for name in names:
        present = chunk.get(PRESENT + name)
        mask &= present if present is not None else False
    return mask


def _all_present(chunk: dict[str, np.ndarray], name: str, rows: np.ndarray) -> bool:
    present = chunk.get(PRESENT + name)
    return bool(present[rows].all()) if present is not None else not rows.any()


ROW_DTYPES = {"frame_index": np.int64, "timestamp": np.float64, "score": np.float32}


def _scan(run: Path, track_id: int, first: int, upto: int | None, spools: _Spools) -> _Scan:
    scan = _Scan(track_id, spools)
    for path in chunk_paths(run, first, upto):
        try:
            chunk = read_chunk(path, track_id, scan.shapes)
        except Unreadable:
            scan.skipped.append(path)
            continue
        if chunk is None:  # the track was not seen between these two flushes
            continue
        scan.chunks.append(path)
        _check_shapes(track_id, scan.shapes)
        _spool_smpl(scan, chunk)
        for name in KEYPOINT_ARRAYS:
            _spool_keypoints(scan, chunk, name)
    return scan


def _spool_smpl(scan: _Scan, chunk: dict[str, np.ndarray]) -> None:
    rows = _mask(chunk, SMPL_ARRAYS)
    for name in SMPL_EXTRAS:
        scan.complete[name] = scan.complete.get(name, True) and _all_present(chunk, name, rows)
    k = int(rows.sum())
    if not k:
        return
    scan.smpl_frames += k
    betas = chunk["betas"][rows]
    scan.betas_sum = betas.astype(np.float64).sum(axis=0) + (0 if scan.betas_sum is None else scan.betas_sum)
    sp = scan.spools
    sp.append("poses", chunk["poses"][rows].reshape(k, -1))
    sp.append("trans", chunk["trans"][rows].reshape(k, 3))
    sp.append("betas_per_frame", betas)
    sp.append("joints", chunk["joints"][rows].reshape(k, -1, 3))
    for key, dtype in ROW_DTYPES.items():
        sp.append(key, chunk[key][rows], dtype)
    for name in SMPL_EXTRAS:
        if scan.complete[name]:
            sp.append(name, chunk[name][rows])


def _spool_keypoints(scan: _Scan, chunk: dict[str, np.ndarray], name: str) -> None:
    rows = _mask(chunk, (name,))
    world = f"{name}/world"
    scan.complete[world] = scan.complete.get(world, True) and _all_present(chunk, WORLD_ARRAY, rows)
    if not rows.any():
        return
    scan.keypoint_frames[name] += int(rows.sum())
    sp = scan.spools
    sp.append(f"{name}/keypoints", chunk[name][rows])
    for key, dtype in ROW_DTYPES.items():
        sp.append(f"{name}/{key}", chunk[key][rows], dtype)
    if scan.complete[world]:
        sp.append(world, chunk[WORLD_ARRAY][rows])


def _check_shapes(track_id: int, shapes: dict[str, tuple]) -> None:
    """The SMPL arrays must fit the AMASS layout; a clear error instead of numpy's."""
    need = {"trans": lambda n: n == 3, "joints": lambda n: n % 3 == 0 and n > 0, "poses": lambda n: n > 0}
    for name, ok in need.items():
        if name in shapes and not ok(int(np.prod(shapes[name]))):
            raise RecordError(f"track {track_id}: '{name}' has frames of shape {shapes[name]}, "
                              "which fit no SMPL motion file")


class SmplRows:
    """A track's SMPL frames, read again chunk by chunk: what the BVH and ``.smpl`` writers
    take (``frames``, mean ``betas``, ``fps``, ``blocks()``)."""

    #: Frames converted at a time: the body model's cost per call is mostly fixed, so a few
    #: thousand frames (a few MB) amortise it where one chunk's 60 would not.
    BLOCK_FRAMES = 4096

    def __init__(self, scan: _Scan, fps: float):
        self._scan = scan
        self.frames = scan.smpl_frames
        self.betas = (scan.betas_sum / max(scan.smpl_frames, 1)).astype(np.float32)
        self.fps = fps

    def blocks(self, *extra: str):
        """(poses (n, 72) float32, trans (n, 3) float32) in order, up to BLOCK_FRAMES at a time,
        followed by the rows of each chunk array named in ``extra`` (``"betas"``: the
        frames' own shapes (n, S) float32; ``"frame_index"`` (n,) int64)."""
        names = ("poses", "trans", *extra)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        held = 0
        for chunk in _chunks(self._scan):
            rows = _mask(chunk, SMPL_ARRAYS)
            k = int(rows.sum())
            if k:
                for n in names:
                    a = chunk[n][rows]
                    parts[n].append(a if n in ROW_DTYPES else a.astype(np.float32).reshape(k, -1))
                held += k
            if held >= self.BLOCK_FRAMES:
                yield tuple(np.concatenate(parts[n]) for n in names)
                parts, held = {n: [] for n in names}, 0
        if held:
            yield tuple(np.concatenate(parts[n]) for n in names)


def _chunks(scan: _Scan):
    """The scan's readable chunks, read again."""
    for path in scan.chunks:
        try:
            chunk = read_chunk(path, scan.track_id, scan.shapes)
        except Unreadable:
            chunk = None
        if chunk is None:  # it was readable a moment ago: the disk is failing
            raise RecordError(f"chunk {path} became unreadable while the motion files were assembled")
        yield chunk


def assemble_track(run: Path, out_dir: Path, track_id: int, settings: RunSettings, *,
                   world_writer=None, first: int = 0, upto: int | None = None) -> Assembled:
    """Write a track's final files into ``out_dir`` from its rows in the chunks of the run
    folder ``run``, those numbered ``first`` to below ``upto`` if given (a background
    assembly reads those while more are written): the SMPL ``.npz`` when
    ``settings.formats`` has ``npz``, the keypoint ``.npz`` always, and through
    ``world_writer(rows, stem)`` (see :func:`streamer.motion_formats.world_formats_writer`)
    BVH and ``.smpl``. A track without frames of a kind gets no file of that kind. Raises
    :class:`RecordError` if a file cannot be written."""
    spools = _Spools(out_dir)
    try:
        scan = _scan(run, track_id, first, upto, spools)
        done = Assembled(track_id, chunks=scan.chunks, skipped=scan.skipped, smpl_frames=scan.smpl_frames)
        if scan.smpl_frames and "npz" in settings.formats:
            done.files.append(_write_smpl_npz(scan, out_dir, settings))
        keypoints = next((n for n, count in scan.keypoint_frames.items() if count), None)
        if keypoints:  # one keypoint file per track: the richest joint set present
            done.files.append(_write_keypoint_npz(scan, out_dir, settings, keypoints))
            done.keypoint_frames = scan.keypoint_frames[keypoints]
    finally:
        spools.close()
    if scan.smpl_frames and world_writer is not None:
        done.files += world_writer(SmplRows(scan, settings.fps), track_file(out_dir, track_id, ""))
    return done


def _write_smpl_npz(scan: _Scan, out_dir: Path, settings: RunSettings) -> Path:
    sp = scan.spools
    path = track_file(out_dir, scan.track_id, ".npz")
    members = {"poses": sp["poses"], "trans": sp["trans"],
               "betas": (scan.betas_sum / scan.smpl_frames).astype(np.float32),
               "betas_per_frame": sp["betas_per_frame"], "joints": sp["joints"],
               "mocap_framerate": np.float64(settings.fps), "gender": np.str_("neutral"),
               "body_model": np.str_(settings.body_model), "frame_index": sp["frame_index"],
               "timestamp": sp["timestamp"], "score": sp["score"],
               **{n: sp[n] for n in SMPL_EXTRAS if scan.complete[n] and n in sp},
               "track_id": np.int64(scan.track_id)}
    write_npz(path, members)
    return path


def _write_keypoint_npz(scan: _Scan, out_dir: Path, settings: RunSettings, name: str) -> Path:
    sp = scan.spools
    joint_set = KEYPOINT_ARRAYS[name]
    path = track_file(out_dir, scan.track_id, f"_{joint_set}.npz")
    members = {"keypoints": sp[f"{name}/keypoints"], "joint_set": np.str_(joint_set),
               "fps": np.float64(settings.fps),
               "image_size": np.asarray(settings.image_size or (0, 0), dtype=np.int64),
               **{key: sp[f"{name}/{key}"] for key in ROW_DTYPES}, "track_id": np.int64(scan.track_id)}
    world = f"{name}/world"
    if joint_set == "blazepose33" and scan.complete[world] and world in sp:
        members["world_landmarks"] = sp[world]  # the landmark network's metric 3D landmarks: `lift` fits them too
    write_npz(path, members)
    return path

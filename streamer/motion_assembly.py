"""A track's final motion files (``docs/motion-files.md``) assembled from its chunks, read
from disk one at a time: memory holds one chunk plus a few numbers per frame, however long
the track. Used when a track ends, when the run stops, and by ``smplstream recover``.

1. Scan: which frames have SMPL parameters, which keypoint set the keypoint file takes,
   which optional arrays every frame has, the sum of the shape (for the mean ``betas``).
   A chunk that cannot be read is skipped with a warning.
2. The ``.npz`` files: each array's rows appended to a spool file, then copied into the
   archive; same keys, order and dtypes as :func:`streamer.motion_files.motion_arrays`.
3. BVH and ``.smpl``: the writer that ``streamer.motion_formats`` provides reads the SMPL
   frames again, chunk by chunk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RecordError
from .motion_chunks import PRESENT, RunSettings, chunk_paths, read_chunk
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
    chunks: list[Path]
    skipped: list[Path]
    shapes: dict[str, tuple]
    smpl_frames: int = 0
    betas_sum: np.ndarray | None = None
    extras: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SMPL_EXTRAS, True))
    keypoint_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYPOINT_ARRAYS, 0))
    world: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(KEYPOINT_ARRAYS, True))


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


def _scan(folder: Path, upto: int | None) -> _Scan:
    paths = chunk_paths(folder, upto)
    scan = _Scan(chunks=[], skipped=[], shapes={})
    for path in paths:
        chunk = read_chunk(path, scan.shapes)
        if chunk is None:
            scan.skipped.append(path)
            continue
        scan.chunks.append(path)
        smpl = _mask(chunk, SMPL_ARRAYS)
        if smpl.any():
            scan.smpl_frames += int(smpl.sum())
            betas = chunk["betas"][smpl].astype(np.float64).sum(axis=0)
            scan.betas_sum = betas if scan.betas_sum is None else scan.betas_sum + betas
        for name in SMPL_EXTRAS:
            scan.extras[name] &= _all_present(chunk, name, smpl)
        for name in KEYPOINT_ARRAYS:
            rows = _mask(chunk, (name,))
            scan.keypoint_frames[name] += int(rows.sum())
            scan.world[name] &= _all_present(chunk, WORLD_ARRAY, rows)
    _check_shapes(folder, scan.shapes)
    return scan


def _check_shapes(folder: Path, shapes: dict[str, tuple]) -> None:
    """The SMPL arrays must fit the AMASS layout; a clear error instead of numpy's."""
    need = {"trans": lambda n: n == 3, "joints": lambda n: n % 3 == 0 and n > 0, "poses": lambda n: n > 0}
    for name, ok in need.items():
        if name in shapes and not ok(int(np.prod(shapes[name]))):
            raise RecordError(f"{folder.name}: '{name}' has frames of shape {shapes[name]}, "
                              "which fit no SMPL motion file")


class SmplRows:
    """A track's SMPL frames, read again chunk by chunk: what the BVH and ``.smpl`` writers
    take (``frames``, mean ``betas``, ``fps``, ``blocks()``)."""

    def __init__(self, scan: _Scan, fps: float):
        self._scan = scan
        self.frames = scan.smpl_frames
        self.betas = (scan.betas_sum / max(scan.smpl_frames, 1)).astype(np.float32)
        self.fps = fps

    def blocks(self):
        """(poses (n, 72) float32, trans (n, 3) float32) per chunk with SMPL frames."""
        for chunk in _chunks(self._scan):
            rows = _mask(chunk, SMPL_ARRAYS)
            if rows.any():
                k = int(rows.sum())
                yield (chunk["poses"][rows].astype(np.float32).reshape(k, -1),
                       chunk["trans"][rows].astype(np.float32).reshape(k, 3))


def _chunks(scan: _Scan):
    """The scan's readable chunks, read again."""
    for path in scan.chunks:
        chunk = read_chunk(path, scan.shapes)
        if chunk is None:  # it was readable a moment ago: the disk is failing
            raise RecordError(f"chunk {path} became unreadable while the motion files were assembled")
        yield chunk


def assemble_track(folder: Path, out_dir: Path, track_id: int, settings: RunSettings, *,
                   world_writer=None, upto: int | None = None) -> Assembled:
    """Write a track's final files into ``out_dir`` from the chunks in ``folder`` (those
    numbered below ``upto`` if given): the SMPL ``.npz`` when ``settings.formats`` has
    ``npz``, the keypoint ``.npz`` always, and through ``world_writer(rows, stem)`` (see
    :func:`streamer.motion_formats.world_formats_writer`) BVH and ``.smpl``. A track
    without frames of a kind gets no file of that kind. Raises :class:`RecordError` if a
    file cannot be written."""
    scan = _scan(folder, upto)
    done = Assembled(track_id, chunks=scan.chunks, skipped=scan.skipped, smpl_frames=scan.smpl_frames)
    keypoints = next((n for n, count in scan.keypoint_frames.items() if count), None)
    smpl_npz = scan.smpl_frames > 0 and "npz" in settings.formats
    if smpl_npz or keypoints:
        done.files += _write_npz_files(scan, out_dir, track_id, settings, smpl_npz, keypoints)
        done.keypoint_frames = scan.keypoint_frames[keypoints] if keypoints else 0
    if scan.smpl_frames and world_writer is not None:
        done.files += world_writer(SmplRows(scan, settings.fps), track_file(out_dir, track_id, ""))
    return done


def _write_npz_files(scan: _Scan, out_dir: Path, track_id: int, settings: RunSettings, smpl_npz: bool,
                     keypoints: str | None) -> list[Path]:
    extras = [n for n in SMPL_EXTRAS if scan.extras[n] and n in scan.shapes]
    world = keypoints == "keypoints_blazepose33" and scan.world[keypoints] and WORLD_ARRAY in scan.shapes
    smpl_keys = ("poses", "trans", "betas_per_frame", "joints", "frame_index", "timestamp", "score", *extras)
    kp_keys = ("keypoints", "frame_index", "timestamp", "score", *(("world_landmarks",) if world else ()))
    dtypes = {"frame_index": np.int64, "timestamp": np.float64}
    smpl = {k: Spool(dtypes.get(k, np.float32), out_dir) for k in smpl_keys} if smpl_npz else {}
    kp = {k: Spool(dtypes.get(k, np.float32), out_dir) for k in kp_keys} if keypoints else {}
    try:
        for chunk in _chunks(scan):
            if smpl:
                rows = _mask(chunk, SMPL_ARRAYS)
                k = int(rows.sum())
                if k:
                    source = {"betas_per_frame": "betas"}
                    shape = {"poses": (k, -1), "trans": (k, 3), "joints": (k, -1, 3)}
                    for key, spool in smpl.items():
                        block = chunk[source.get(key, key)][rows]
                        spool.append(block.reshape(shape[key]) if key in shape else block)
            if kp:
                rows = _mask(chunk, (keypoints,))
                if rows.any():
                    source = {"keypoints": keypoints, "world_landmarks": WORLD_ARRAY}
                    for key, spool in kp.items():
                        spool.append(chunk[source.get(key, key)][rows])
        written = []
        if smpl:
            path = track_file(out_dir, track_id, ".npz")
            mean = (scan.betas_sum / scan.smpl_frames).astype(np.float32)
            members = {"poses": smpl["poses"], "trans": smpl["trans"], "betas": mean,
                       "betas_per_frame": smpl["betas_per_frame"], "joints": smpl["joints"],
                       "mocap_framerate": np.float64(settings.fps), "gender": np.str_("neutral"),
                       "body_model": np.str_(settings.body_model), "frame_index": smpl["frame_index"],
                       "timestamp": smpl["timestamp"], "score": smpl["score"],
                       **{n: smpl[n] for n in extras}, "track_id": np.int64(track_id)}
            write_npz(path, members)
            written.append(path)
        if kp:
            joint_set = KEYPOINT_ARRAYS[keypoints]
            path = track_file(out_dir, track_id, f"_{joint_set}.npz")
            members = {"keypoints": kp["keypoints"], "joint_set": np.str_(joint_set),
                       "fps": np.float64(settings.fps),
                       "image_size": np.asarray(settings.image_size or (0, 0), dtype=np.int64),
                       "frame_index": kp["frame_index"], "timestamp": kp["timestamp"], "score": kp["score"],
                       "track_id": np.int64(track_id)}
            if world:  # the landmark network's metric 3D landmarks: `lift` fits them too
                members["world_landmarks"] = kp["world_landmarks"]
            write_npz(path, members)
            written.append(path)
        return written
    finally:
        for spool in (*smpl.values(), *kp.values()):
            spool.close()

"""``smplstream recover DIR``: the final motion files of a recording whose process was
killed (kill -9, a crash, a power cut) before it could assemble them, from the chunks it
left in ``DIR`` (``docs/motion-files.md``); the chunks used are removed afterwards.

Only for runs whose process has gone: a run that is still recording holds a lock on its
chunk folder, and such a folder is left alone.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RecordError, SmplstreamError
from .motion_assembly import Assembled, assemble_track
from .motion_chunks import chunk_paths, chunk_seq, chunk_tracks, find_runs, is_live, read_settings, remove_chunks

DESCRIPTION = ("Assemble the motion files (npz, BVH, .smpl, keypoints) of a recording into DIR whose "
               "process was killed (kill -9, crash, power cut) from the chunks it left there, then remove "
               "those chunks. Run it only after that process has gone: the chunks of a run that is still "
               "recording are left alone. A chunk that cannot be read is skipped with a warning.")


@dataclass
class RunRecovery:
    """What happened to one run's chunk folder: tracks assembled, errors, whether it was
    still recording (left alone), and what is left of it."""

    run: Path
    live: bool = False
    tracks: list[Assembled] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    left: list[Path] = field(default_factory=list)


def recover(directory: str | Path, *, body_loader=None) -> list[RunRecovery]:
    """Assemble the final files of every finished run's chunks in ``directory``, oldest run
    first (a later run's files win, as they would have), and remove the chunks used and
    the temporary files a kill left. A track that fails keeps its chunks.
    ``body_loader()`` gives the body model for BVH and ``.smpl``. Raises
    :class:`RecordError` if ``directory`` is not a directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordError(f"{directory} is not a directory")
    body_loader = body_loader or _default_body()
    results = []
    for run in find_runs(directory):
        result = RunRecovery(run)
        results.append(result)
        if is_live(run):
            result.live = True
            continue
        if not chunk_paths(run):  # killed before its first chunk: nothing to assemble
            remove_chunks(run, [])
            continue
        try:
            settings = read_settings(run)
        except RecordError as exc:
            result.errors.append(str(exc))
            continue
        if settings.gender is not None:
            from .output_body import add_body_model_members
        from .motion_formats import WORLD_FORMATS, world_formats_writer

        writer = None
        if set(WORLD_FORMATS) & set(settings.formats):
            writer = world_formats_writer(settings.formats, settings.body_model, body_loader)
        chunks = {path: chunk_tracks(path) for path in chunk_paths(run)}  # None: unreadable
        track_ids = sorted({t for ids in chunks.values() if ids for t in ids})
        unusable = {path for path, ids in chunks.items() if ids is None}
        for track_id in track_ids:
            seqs = [chunk_seq(p) for p, ids in chunks.items() if ids and track_id in ids]
            try:  # only the chunks from the track's first to its last are read
                done = assemble_track(run, directory, track_id, settings, world_writer=writer,
                                      first=min(seqs), upto=max(seqs) + 1)
            except SmplstreamError as exc:  # this track keeps its chunks; the others go on
                result.errors.append(f"track {track_id}: {exc}")
                unusable.update(p for p, ids in chunks.items() if ids and track_id in ids)
                continue
            if settings.gender is not None:  # a user's body model: as the live run completes its files
                for path in done.files:
                    if path.suffix == ".npz" and path.stem == f"track_{track_id:04d}":
                        add_body_model_members(path, settings.gender)
            result.tracks.append(done)
            unusable.update(done.skipped)
        result.unreadable = sorted({p for p, ids in chunks.items() if ids is None}.union(
            *(t.skipped for t in result.tracks)))
        # The run folder goes only when nothing is left in it: unreadable chunks and those
        # of a track that failed stay where a later `recover` (or a person) finds them.
        result.left = remove_chunks(run, [p for p in chunks if p not in unusable])
    if not any(r.live for r in results):
        # Final files a kill interrupted while they were written: never complete. (Not while
        # a run is live: the temporary file may be one it is writing now.)
        for leftover in directory.glob(".track_*.tmp"):
            leftover.unlink(missing_ok=True)
    return results


def _default_body():
    body = None

    def load():
        nonlocal body
        if body is None:
            from engines.body.body_model import BodyModel

            body = BodyModel.load().double()
        return body

    return load


def _recover_mcaps(directory) -> list:
    """The run's MCAP files (``--formats mcap``) a kill left without their summary."""
    if not any(Path(directory).glob("*.mcap")):
        return []
    try:
        from .mcap_output import recover_mcap_files
    except ImportError:
        return []
    try:
        return recover_mcap_files(directory)
    except ImportError:
        print("smplstream: .mcap files need the robots extra to be recovered: pip install 'smplstream[robots]'",
              file=sys.stderr)
        return []


def main(argv: list[str] | None = None) -> int:
    """``smplstream recover DIR``; exit status 0 when everything found was recovered, 1 when
    a run was still recording or a track could not be assembled."""
    parser = argparse.ArgumentParser(prog="smplstream recover", description=DESCRIPTION)
    parser.add_argument("directory", metavar="DIR", help="the directory given to run --record")
    args = parser.parse_args(argv)
    load_body = _default_body()

    def body_loader():
        import torch

        # BVH and .smpl assembly is many small tensor operations: one thread is fastest,
        # several on a busy machine much slower.
        torch.set_num_threads(1)
        return load_body()

    results = recover(args.directory, body_loader=body_loader)
    mcaps = [] if any(r.live for r in results) else _recover_mcaps(args.directory)
    if not any(r.live or r.tracks or r.errors for r in results) and not mcaps:
        print(f"nothing to recover in {args.directory}")
        return 0
    status = 0
    for path, kept in mcaps:
        print(f"{path.name}: {kept} messages kept, summary written")
    for result in results:
        if result.live:
            status = 1
            print(f"smplstream: {result.run.name} is still being recorded by a running process; left alone "
                  "(recover it after that process has ended)", file=sys.stderr)
            continue
        for track in result.tracks:
            names = ", ".join(p.name for p in track.files) or "no files (no frames)"
            line = (f"track {track.track_id}: {max(track.smpl_frames, track.keypoint_frames)} frames from "
                    f"{len(track.chunks)} chunk(s): {names}")
            print(line)
        if result.unreadable:
            print(f"{len(result.unreadable)} unreadable chunk(s) skipped (kept in {result.run})")
        for error in result.errors:
            status = 1
            print(f"smplstream: error: {error} (its chunks are kept)", file=sys.stderr)
    return status

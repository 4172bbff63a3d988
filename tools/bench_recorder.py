"""Flush cost and memory of the motion recorder over a long session, at the recorder level:
synthetic frames of ``--persons`` people, each with the full set of arrays a run records
(SMPL, uncertainty, BlazePose-33 and COCO-17 keypoints, world landmarks), ``--minutes`` of
stream at 30 fps, a flush every 2 s of stream (60 frames) as in a run. Prints, at minutes
1, 10, 30 and 60 (those within ``--minutes``), the flush's wall time (median and maximum
over the minute before; the disk's fsync latency is in it) and CPU time (median: the work
itself), and the process's RSS; then the time ``close()`` takes to assemble the final files
and their size.

    python tools/bench_recorder.py --minutes 60 --persons 2
    python tools/bench_recorder.py --minutes 10 --formats npz,bvh,smpl

``--sparse`` flushes only at those minutes: for the recorder before chunks (whose flush
rewrote whole files, so its cost depended on the track's length only), run from a
checkout of that commit, where a flush every 2 s would take hours::

    git worktree add /tmp/old 55fa5c6 && cp tools/bench_recorder.py /tmp/old/tools/
    (cd /tmp/old && python tools/bench_recorder.py --minutes 60 --sparse)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.frames import Frame, Person  # noqa: E402
from streamer.motion_formats import MultiFormatRecorder, parse_formats  # noqa: E402

SHAPES = {"box_xyxy": 4, "keypoints_blazepose33": (33, 3), "keypoints_coco17": (17, 3),
          "world_blazepose33": (33, 3), "poses": 72, "betas": 10, "trans": 3, "joints": (24, 3),
          "poses_std": 24, "joints_std": 24, "reprojection_px": ()}
FPS = 30
FLUSH_FRAMES = 60  # the recorder's default interval, 2 s, in frames of a 30 fps stream
CHECKPOINTS = (1, 10, 30, 60)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--persons", type=int, default=2)
    p.add_argument("--formats", default="npz", help="as run --formats (default npz)")
    p.add_argument("--dir", help="record directory (default: a temporary one, removed afterwards)")
    p.add_argument("--sparse", action="store_true", help="flush only at the reported minutes (see above)")
    args = p.parse_args(argv)
    # As in a run, where the stages set it: BVH/.smpl assembly is many small tensor operations,
    # which several threads on a shared machine only slow down.
    torch.set_num_threads(1)
    n = int(args.minutes * 60 * FPS)
    rng = np.random.default_rng(0)
    arrays = {k: (rng.random(v) * 0.3).astype(np.float32) for k, v in SHAPES.items()}
    checkpoints = {int(m * 60 * FPS): m for m in CHECKPOINTS if m <= args.minutes}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        rec = MultiFormatRecorder(d, formats=parse_formats(args.formats), fps=FPS, image_size=(640, 480),
                                  flush_interval=1e9)
        every = "a flush at those minutes only" if args.sparse else f"a flush every {FLUSH_FRAMES} frames"
        print(f"{args.persons} person(s), {args.minutes:g} min at {FPS} fps, {every}, formats {args.formats}, "
              f"record directory {d}\n")
        print("| minute | flush p50 (ms) | flush max (ms) | flush CPU p50 (ms) | RSS (MiB) |")
        print("|---|---|---|---|---|")
        flushes: list[tuple[float, float]] = []
        started = time.monotonic()
        for i in range(1, n + 1):
            f = Frame(index=i - 1, image=None, capture_time=(i - 1) / FPS, source_size=(640, 480),
                      stream_time=(i - 1) / FPS)
            f.persons = [Person(t + 1, 0.9, {k: v.copy() for k, v in arrays.items()}) for t in range(args.persons)]
            rec.write(f)
            if (i in checkpoints) if args.sparse else (i % FLUSH_FRAMES == 0):
                t0, c0 = time.perf_counter(), time.process_time()
                rec.flush()
                flushes.append((time.perf_counter() - t0, time.process_time() - c0))
            if i in checkpoints:
                last = np.array(flushes[-1:] if args.sparse else flushes[-(60 * FPS // FLUSH_FRAMES):]) * 1000
                print(f"| {checkpoints[i]:g} | {np.median(last[:, 0]):.1f} | {last[:, 0].max():.1f} | "
                      f"{np.median(last[:, 1]):.1f} | {rss_mb():.0f} |", flush=True)
        fed = time.monotonic() - started
        t0 = time.monotonic()
        rec.close()
        closing = time.monotonic() - t0
        size = sum(q.stat().st_size for q in Path(d).iterdir()) / 2**20
        files = len(list(Path(d).iterdir()))
    print(f"\n{n} frames fed in {fed:.1f} s ({len(flushes)} flushes); close() assembled {files} files "
          f"({size:.0f} MiB) in {closing:.1f} s; RSS after close {rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""CPU per frame of the live keypoints stage on the synthetic camera, by thread: the calling
thread (its landmark crops, tracking), the second landmark session's thread, and the
background detector's (its tiled looks for newcomers while everyone is followed).

    python tools/profile_keypoints.py [--people 4] [--frames 100] [--sweep-calls 1 4] [--rounds 2]

Runs :class:`engines.perception.person_keypoints.PersonKeypoints` as live mode builds it
(background detector, two landmark sessions, the synthetic source's detector tiles, room
for as many people as `smplstream bench --synthetic` leaves) on the
synthetic frame as fast as it goes, once per ``--sweep-calls`` value in turn for each round
(``detector_sweep_calls``: over how many background calls a look at every tile is spread),
and prints thread CPU ms per frame of each part, the process's CPU and the wall time. No
pipeline, no lift or fit: what the keypoints stage costs the two cores. Figures:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(people: int, frames: int, sweep_calls: int, warmup: int = 30) -> dict[str, float]:
    """Thread CPU ms per frame of the caller, the second landmark session and the detector,
    the process CPU and the wall ms per frame, over ``frames`` after ``warmup``."""
    import cv2

    from engines.perception.person_keypoints import PersonKeypoints
    from streamer.app import RunConfig
    from streamer.synthetic_source import SyntheticPeopleSource

    cv2.setNumThreads(1)  # as the pipeline sets it
    source = SyntheticPeopleSource(people, frames=warmup + frames, realtime=False)
    # As `smplstream bench --synthetic` follows them: room for the run's default number of
    # people or all of them, whichever is more (with no room left the detector rests).
    room = max(RunConfig(source="profile").max_persons, people)
    pk = PersonKeypoints(max_persons=room, detector_tile_size=source.detector_tile_size, background_detection=True,
                         landmark_sessions=2, detector_sweep_calls=sweep_calls)
    try:
        shots = list(source.frames())
        for f in shots[:warmup]:
            pk.process(f.image, f.index)
        pool0, helpers0 = pk.landmarker.pool_cpu_seconds, pk.background_cpu_seconds
        t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        for f in shots[warmup:]:
            pk.process(f.image, f.index)
        caller, process, wall = time.thread_time() - t0, time.process_time() - p0, time.perf_counter() - w0
        pool = pk.landmarker.pool_cpu_seconds - pool0
        detector = pk.background_cpu_seconds - helpers0 - pool
    finally:
        pk.close()
    per = 1000.0 / frames
    return {"caller": caller * per, "landmark pool": pool * per, "detector": detector * per,
            "process": process * per, "wall": wall * per}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=4)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--sweep-calls", type=int, nargs="+", default=[1, 4])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(f"{'round':>5} {'sweep':>5} {'caller':>7} {'pool':>7} {'detector':>8} {'process':>8} {'wall':>7}"
          "   (ms per frame; thread CPU, process CPU, wall)")
    for r in range(args.rounds):
        for calls in args.sweep_calls:
            m = measure(args.people, args.frames, calls)
            print(f"{r + 1:>5} {calls:>5} {m['caller']:7.1f} {m['landmark pool']:7.1f} {m['detector']:8.1f} "
                  f"{m['process']:8.1f} {m['wall']:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Landmark crops of several people: one batched ONNX Runtime call (what the keypoints stage
does) against the crops split over two sessions on two threads (1 intra-op thread each),
one session with 2 intra-op threads, and one call per crop, interleaved on the same frame.

    python tools/bench_landmark_threads.py [--people 2 4] [--repeats 40]

The frame is the synthetic camera's (``streamer.synthetic_source``: the clip's walker pasted
PEOPLE times); the ROIs are the ones the keypoints stage follows them with. Prints the
median wall time and process CPU time per call of each way. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rois_of(people: int):
    """The synthetic frame with ``people`` and the ROIs the keypoints stage follows them with."""
    from engines.perception.person_keypoints import PersonKeypoints
    from streamer.synthetic_source import SyntheticPeopleSource, compose

    image, _, _ = compose(people)
    pk = PersonKeypoints(max_persons=people, detector_tile_size=SyntheticPeopleSource(people).detector_tile_size)
    for i in range(3):
        pk.process(image, i)
    return image, list(pk._rois)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, nargs="+", default=[2, 4])
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    from engines.perception.pose_landmarks import PoseLandmarker

    one, other = PoseLandmarker(intra_op_threads=1), PoseLandmarker(intra_op_threads=1)
    two_threads = PoseLandmarker(intra_op_threads=2)
    pool = ThreadPoolExecutor(max_workers=2)

    def split(image, rois):
        a = pool.submit(one, image, rois[0::2])
        b = pool.submit(other, image, rois[1::2])
        return a.result() + b.result()

    print(f"{'people':>6s} {'way':34s} {'wall ms':>8s} {'CPU ms':>7s}   (medians of {args.repeats}, interleaved)")
    for people in args.people:
        image, rois = rois_of(people)
        if len(rois) != people:
            print(f"{people}: the keypoints stage follows {len(rois)} people here, not {people}", file=sys.stderr)
        ways = {"one batched call (1 thread)": lambda: one(image, rois),
                "one call per crop (1 thread)": lambda: [one(image, [r]) for r in rois],
                "two sessions on two threads": lambda: split(image, rois),
                "one batched call, 2 intra-op threads": lambda: two_threads(image, rois)}
        wall = {k: [] for k in ways}
        cpu = {k: [] for k in ways}
        for f in ways.values():
            f()  # warm up
        for _ in range(args.repeats):
            for name, f in ways.items():
                c0, w0 = time.process_time(), time.perf_counter()
                f()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        for name in ways:
            print(f"{len(rois):6d} {name:34s} {1000 * statistics.median(wall[name]):8.1f} "
                  f"{1000 * statistics.median(cpu[name]):7.1f}", flush=True)
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

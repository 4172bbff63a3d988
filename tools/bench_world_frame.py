#!/usr/bin/env python3
"""What ``--output-frame world`` adds to a live run: the one-person live bench (the bundled
clip paced at 30 fps, ``--max-persons 1``) with the camera frame and with the world frame,
interleaved (this machine is shared: compare within a run).

    python tools/bench_world_frame.py [--rounds 2] [--camera-pitch 20]

Prints per run the end-to-end latency (p50, p99), fps and drops, and for the world frame the
camera-rotation tracker's CPU time per frame on its worker thread (mean, p99) and the
two added stages' CPU per frame. Figures: docs/head-mounted.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamer.output_frame as output_frame  # noqa: E402
from streamer.app import RunConfig  # noqa: E402
from streamer.bench import bench_once, end_to_end  # noqa: E402
from streamer.machine import machine  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "sports2d_demo.mp4"

_motions: list = []
_init = output_frame.CameraMotion.__init__


def _register(self, *args, **kwargs):  # keep each run's CameraMotion to read its CPU figures
    _init(self, *args, **kwargs)
    _motions.append(self)


output_frame.CameraMotion.__init__ = _register


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--camera-pitch", type=float, default=None, help="gravity hint (default: from the people)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    conditions = machine()
    rows: dict[str, list] = {"camera": [], "world": []}
    tracker_cpu: list[float] = []
    for _ in range(args.rounds):
        for frame in ("camera", "world"):
            config = RunConfig(source=str(CLIP), mode="live", publish=None, progress=False, max_persons=1,
                               output_frame=frame, camera_pitch=args.camera_pitch if frame == "world" else None)
            summary = bench_once(config, warmup=10)
            _, g = end_to_end(summary)
            extra = ""
            if frame == "world":
                cpu = list(_motions[-1].cpu_ms)[10:]
                tracker_cpu += cpu
                added = sum(summary["stages"][n]["cpu_ms_per_frame"] or 0 for n in ("camera-motion", "output-frame"))
                extra = (f"  tracker CPU mean {np.mean(cpu):.2f} p99 {np.percentile(cpu, 99):.2f} ms/frame; "
                         f"stages +{added:.2f} ms/frame")
            rows[frame].append((summary["fps"] or 0.0, g["p50"], g["p99"], summary["drops_total"]))
            print(f"{frame:6s} fps {summary['fps'] or 0:5.1f}  p50 {g['p50']:6.1f}  p99 {g['p99']:6.1f} ms  "
                  f"dropped {summary['drops_total']}{extra}", flush=True)
    print(f"\n{conditions['cpu']}, {conditions['cores']} cores, load {conditions['load_avg_1min']} at start; "
          f"medians over {args.rounds} round(s)")
    for frame, rs in rows.items():
        fps, p50, p99, drops = (statistics.median(x) for x in zip(*rs))
        print(f"{frame:6s} fps {fps:5.1f}  glass-to-output p50 {p50:6.1f}  p99 {p99:6.1f} ms  dropped {drops:g}")
    print(f"camera-rotation tracker (worker thread): {np.mean(tracker_cpu):.2f} ms CPU a frame, "
          f"p99 {np.percentile(tracker_cpu, 99):.2f} ms, over {len(tracker_cpu)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())

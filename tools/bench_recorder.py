"""Memory and flush cost of the motion recorder over a long session: one person's full set of
arrays (SMPL, keypoints, uncertainty) per frame for N minutes at 30 fps.

    python tools/bench_recorder.py --minutes 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.frames import Frame, Person  # noqa: E402
from streamer.motion_files import MotionRecorder  # noqa: E402

SHAPES = {"box_xyxy": 4, "keypoints_blazepose33": (33, 3), "keypoints_coco17": (17, 3),
          "world_blazepose33": (33, 3), "poses": 72, "betas": 10, "trans": 3, "joints": (24, 3),
          "poses_std": 24, "joints_std": 24}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    args = p.parse_args(argv)
    n = int(args.minutes * 60 * 30)
    rng = np.random.default_rng(0)
    arrays = {k: rng.random(v).astype(np.float32) for k, v in SHAPES.items()}
    with tempfile.TemporaryDirectory() as d:
        rec = MotionRecorder(d, fps=30.0, image_size=(640, 480), flush_interval=1e9)
        base = rss_mb()
        for i in range(n):
            f = Frame(index=i, image=None, capture_time=i / 30, source_size=(640, 480), stream_time=i / 30)
            f.persons = [Person(1, 0.9, {k: v.copy() for k, v in arrays.items()})]
            rec.write(f)
        grown = rss_mb() - base
        start = time.monotonic()
        rec.flush()
        cost = time.monotonic() - start
        size = sum(p.stat().st_size for p in Path(d).iterdir()) / 2**20
    print(f"{n} person-frames ({args.minutes:g} min at 30 fps): held in memory +{grown:.0f} MiB "
          f"({grown * 1024 / n:.2f} KiB per person-frame, {grown / n * 30 * 3600 / 1024:.2f} GiB per "
          f"person-hour); one flush writes {size:.0f} MiB in {cost:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

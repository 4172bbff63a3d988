"""Throughput of ``smplstream batch`` on this machine (docs/batch.md).

Copies the bundled clip N times (8 by default) and processes them with ``batch`` as
1 worker x 2 threads and as 2 workers x 1 thread, and runs ``run --mode offline --record``
on the clip once, against ``batch`` on one copy, for the overhead of Ray, hashing and
publishing. Each is a fresh command (local Ray started and stopped, models loaded), timed
wall clock from start to exit; ``--rounds`` repeats the set, interleaved, so that other load
on a shared machine falls on every configuration alike (``--reverse``: the configurations
in the opposite order, for a second invocation). Prints frames/s and videos/hour.

    python tools/bench_batch.py [--copies 8] [--rounds 1] [--reverse]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "sports2d_demo.mp4"
CLIP_FRAMES = 230
SMPLSTREAM = str(Path(sys.executable).with_name("smplstream"))


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reverse", action="store_true", help="run the configurations in the opposite order")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        videos = work / "videos"
        videos.mkdir()
        for i in range(args.copies):
            shutil.copy(CLIP, videos / f"copy{i:02d}.mp4")
        single = work / "single"
        single.mkdir()
        shutil.copy(CLIP, single / "clip.mp4")
        configs = {
            "batch 1 worker x 2 threads": (["--workers", "1", "--threads-per-worker", "2"], videos, args.copies),
            "batch 2 workers x 1 thread": (["--workers", "2", "--threads-per-worker", "1"], videos, args.copies),
            "batch 1 worker x 1 thread, 1 video": (["--workers", "1"], single, 1),
        }
        plain = "run --mode offline, 1 video"
        walls: dict[str, list[float]] = {name: [] for name in [*configs, plain]}
        order = list(walls)[::-1] if args.reverse else list(walls)
        for r in range(args.rounds):
            for name in order:
                out = work / f"out-{r}-{order.index(name)}"
                if name == plain:
                    walls[name].append(timed([SMPLSTREAM, "-q", "run", "--source", str(single / "clip.mp4"),
                                              "--mode", "offline", "--publish", "none", "--record", str(out)]))
                else:
                    options, inputs, _ = configs[name]
                    walls[name].append(timed([SMPLSTREAM, "-q", "batch", str(inputs), "--out", str(out), *options]))
                    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
                    assert all(x["status"] == "done" and not x["skipped"] for x in lines), lines
                print(f"round {r + 1}: {name}: {walls[name][-1]:.1f} s", file=sys.stderr, flush=True)
        print(f"{'configuration':<38}{'videos':>7}{'frames':>8}{'wall s':>9}{'frames/s':>10}{'videos/h':>10}")
        for name, values in walls.items():
            count = configs[name][2] if name in configs else 1
            wall = statistics.median(values)
            frames = count * CLIP_FRAMES
            print(f"{name:<38}{count:>7}{frames:>8}{wall:>9.1f}{frames / wall:>10.2f}{3600 * count / wall:>10.1f}")
        plain, one = (statistics.median(walls[n]) for n in ("run --mode offline, 1 video",
                                                              "batch 1 worker x 1 thread, 1 video"))
        print(f"batch overhead on one video: {one - plain:+.1f} s ({100 * (one / plain - 1):+.0f} %) against a plain run")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

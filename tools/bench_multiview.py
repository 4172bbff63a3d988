#!/usr/bin/env python3
"""Live multi-camera runs: fps and glass-to-output latency of ``run --source A --source B
--rig rig.yaml --mode live`` on the test clip played twice at its 30 fps (two cameras), beside
the same clip through one camera, interleaved in one process (this machine is shared: compare
within a run).

    python tools/bench_multiview.py [--rounds 2] [--max-persons 6] [--json out.json]

The two-camera rig is virtual and known by construction: both cameras see the clip, the
second 0.3 m to the right of the first, looking the same way (every point then lies on its
own epipolar line, so association has one answer). The pictures are not a real stereo pair
(they have no disparity), so this measures what a second camera costs (its keypoints, the
association, the triangulation and its terms in the fit), not accuracy: that is
``python -m engines.refinement.evaluate_multiview``. Figures: docs/multi-camera.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from calibration.camera import assumed_camera  # noqa: E402
from calibration.rig_calibration import RigCamera, write_multi_camera_rig  # noqa: E402
from streamer.app import RunConfig  # noqa: E402
from streamer.bench import bench_once, end_to_end  # noqa: E402
from streamer.machine import machine  # noqa: E402
from streamer.sources import VideoFileSource  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "sports2d_demo.mp4"


def virtual_rig(path: Path, baseline: float = 0.3) -> str:
    """The clip's camera twice, the second ``baseline`` metres to the right of the first."""
    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    write_multi_camera_rig([RigCamera("left", camera, np.eye(3), np.zeros(3)),
                            RigCamera("right", camera, np.eye(3), np.array([baseline, 0.0, 0.0]))], path, board="virtual")
    return str(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-persons", type=int, default=6)
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3])
    p.add_argument("--json", help="write every run's summary here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    conditions = machine()
    runs: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rigs = {2: virtual_rig(Path(tmp) / "rig2.yaml")}
        if 3 in args.cameras:
            source = VideoFileSource(CLIP)
            camera = assumed_camera(*source.size)
            source.close()
            rigs[3] = str(Path(tmp) / "rig3.yaml")
            write_multi_camera_rig([RigCamera(f"cam{i}", camera, np.eye(3), np.array([0.3 * i, 0.0, 0.0]))
                                    for i in range(3)], rigs[3], board="virtual")
        for _ in range(args.rounds):
            for n in args.cameras:
                config = RunConfig(source=str(CLIP), more_sources=[str(CLIP)] * (n - 1), rig=rigs.get(n), mode="live",
                                   publish=None, progress=False, max_persons=args.max_persons)
                summary = bench_once(config, warmup=10)
                runs.setdefault(n, []).append(summary)
                _, g = end_to_end(summary)
                print(f"{n} camera(s): fps {summary['fps'] or 0:5.1f}  p50 {g['p50']:6.1f}  p99 {g['p99']:6.1f} ms  "
                      f"dropped {summary['drops_total']}", flush=True)
    print(f"\n{conditions['cpu']}, {conditions['cores']} cores, load {conditions['load_avg_1min']} at start; "
          f"medians over {args.rounds} round(s); the clip at 30 fps, live mode, up to {args.max_persons} people")
    print(f"{'cameras':>7s} {'fps':>6s} {'p50 ms':>7s} {'p99 ms':>7s}  stage busy p50 ms (cpu ms/frame)")
    for n, summaries in runs.items():
        med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else 0.0  # noqa: E731
        fps = med([s["fps"] for s in summaries])
        p50 = med([end_to_end(s)[1]["p50"] for s in summaries])
        p99 = med([end_to_end(s)[1]["p99"] for s in summaries])
        stages = ", ".join(
            f"{name} {med([s['stages'][name]['busy_ms']['p50'] for s in summaries]):.1f} "
            f"({med([s['stages'][name]['cpu_ms_per_frame'] for s in summaries]):.1f})"
            for name in summaries[0]["stages"] if name != "grab")
        print(f"{n:7d} {fps:6.1f} {p50:7.1f} {p99:7.1f}  {stages}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": conditions, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak test: the live pipeline on a clip that loops at 30 fps for N minutes, resident memory
(RSS) sampled every 10 s and printed, with a stated bound on its growth after warm-up.

    python tools/soak.py                      # 10 minutes, keypoints + lift + refine + publish
    python tools/soak.py --minutes 2 --stages keypoints
    python tools/soak.py --max-growth-mb 50 --warmup 60

Exit status 1 when RSS grew by more than ``--max-growth-mb`` between the end of the warm-up
and the end of the run (measured as the median of the last three samples minus the median of
the first three after warm-up, so one sample's allocator noise does not decide it), or when the
pipeline failed. A subscriber reads every message during the run, so the publisher's socket
is exercised too. Nothing is recorded to disk (the motion recorder keeps every frame of every
track by design, so its memory grows with the session; see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP = ROOT / "tests" / "data" / "sports2d_demo.mp4"


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--source", default=str(CLIP), help="video file to loop (default: the test clip)")
    p.add_argument("--stages", choices=("none", "keypoints", "lift", "refine"), default="refine",
                   help="how far the processing goes (default: all of keypoints, lift, refine)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the growth bound")
    p.add_argument("--max-growth-mb", type=float, default=50.0)
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5599")
    args = p.parse_args(argv)

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from engines.run_plan import plan_run
    from streamer.app import RunConfig, processing_stages, run_camera
    from streamer.graph import Pipeline
    from streamer.latency import LatencyStats
    from streamer.outputs import OutputStage
    from streamer.publisher import ZmqPublisher
    from streamer.sources import LoopingVideoSource
    from streamer.subscriber import Subscriber

    duration = args.minutes * 60
    source = LoopingVideoSource(args.source, max_seconds=duration)
    config = RunConfig(source=args.source, perception=args.stages != "none",
                       lift=args.stages in ("lift", "refine"), refine=args.stages == "refine")
    camera = run_camera(None, source)
    publisher = ZmqPublisher(args.endpoint)
    stats = LatencyStats()
    stages = processing_stages(plan_run(config, "live"), camera) + [OutputStage(publisher)]
    pipeline = Pipeline(source, stages, queue_size=1, policy="drop_oldest", observer=stats)

    received = [0, 0]  # messages, gaps
    done = threading.Event()

    def subscribe():
        with Subscriber(args.endpoint) as sub:
            while not done.is_set():
                msg = sub.receive(timeout=1.0)
                if msg is not None:
                    received[0] += 1
                    received[1] += msg.missed

    errors: list[BaseException] = []

    def drive():
        try:
            pipeline.run(handle_signals=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sub_thread = threading.Thread(target=subscribe, daemon=True)
    sub_thread.start()
    run_thread = threading.Thread(target=drive, daemon=True)
    started = time.monotonic()
    run_thread.start()
    samples: list[tuple[float, float, int]] = []
    print(f"soak: {args.source} looping at {source.fps:g} fps for {args.minutes:g} min, stages up to "
          f"'{args.stages}', RSS every {args.interval:g} s", flush=True)
    print(f"{'t_s':>6} {'rss_mb':>8} {'frames_out':>10}", flush=True)
    while run_thread.is_alive():
        run_thread.join(max(0.0, started + (len(samples)) * args.interval - time.monotonic()))
        if not run_thread.is_alive():
            break
        t = time.monotonic() - started
        samples.append((t, rss_mb(), pipeline._frames_out))
        print(f"{t:6.0f} {samples[-1][1]:8.1f} {samples[-1][2]:10d}", flush=True)
    done.set()
    sub_thread.join(3)
    if errors:
        print(f"soak: pipeline failed: {errors[0]}", flush=True)
        return 1
    result = pipeline.result
    summary = stats.summary(result)
    after = [s for s in samples if s[0] >= args.warmup]
    if len(after) < 6:
        print("soak: too few samples after warm-up to judge growth (run longer)")
        return 1
    base = statistics.median(s[1] for s in after[:3])
    end = statistics.median(s[1] for s in after[-3:])
    growth = end - base
    g2p = summary["glass_to_publish_ms"]
    print(f"frames in {result.frames_in}, out {result.frames_out} ({result.frames_out / result.wall_time:.1f} fps), "
          f"dropped {summary['drops_total']}, loops {source.loops}, subscriber got {received[0]} "
          f"({received[1]} missed)")
    print(f"glass-to-publish ms: p50 {g2p['p50']:.0f}, p99 {g2p['p99']:.0f}")
    import numpy as np

    slope = np.polyfit([s[0] / 60 for s in after], [s[1] for s in after], 1)[0]
    print(f"RSS trend after warm-up (least squares): {slope:+.2f} MiB/min")
    print(f"RSS: first {samples[0][1]:.1f} MiB, after warm-up {base:.1f} MiB, end {end:.1f} MiB, "
          f"max {max(s[1] for s in samples):.1f} MiB; growth after warm-up {growth:+.1f} MiB "
          f"(bound {args.max_growth_mb:g} MiB): {'OK' if growth <= args.max_growth_mb else 'EXCEEDED'}")
    return 0 if growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())

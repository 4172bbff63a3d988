"""Load test: 16 people per frame through lift, refine and the publisher, while subscribers
connect and vanish at random and one subscriber never reads. Prints the pipeline's fps and
latency per condition; they should agree within the noise of the repeated baseline.

    python tools/load_test.py                 # 30 s per condition, 16 people
    python tools/load_test.py --seconds 60 --persons 16

Conditions, in this order: baseline (one reading subscriber), churn (plus CHURN subscribers
that connect, read for a random while and disconnect, again and again), stalled (plus one
subscriber that subscribes and never reads), both, and the baseline again (its difference
from the first baseline is the noise). The extra subscribers run in a separate process, as
real clients would. The people are 16 copies of the walking woman's recorded keypoints
(tools/crowd.py) laid over the looping test clip played at 30 fps in live mode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

CLIP = ROOT / "tests" / "data" / "sports2d_demo.mp4"
KEYPOINTS = ROOT / "tests" / "data" / "keypoints" / "sports2d_walker_blazepose33.npz"


def misbehaving_subscribers(endpoint: str, churners: int, stalled: bool, stop) -> None:
    """Child process: ``churners`` threads that connect, read a random while, vanish, repeat;
    and optionally one socket that subscribes and never reads."""
    import zmq

    from streamer.subscriber import Subscriber
    from streamer.wire import TOPIC

    ctx = zmq.Context()
    sockets = []
    if stalled:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.connect(endpoint)
        sockets.append(sock)  # never read

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            with Subscriber(endpoint, context=ctx) as sub:
                until = time.monotonic() + rng.uniform(0.05, 1.0)
                while time.monotonic() < until and not stop.is_set():
                    sub.receive(timeout=0.05)
            time.sleep(rng.uniform(0.0, 0.3))

    threads = [threading.Thread(target=churn, args=(i,), daemon=True) for i in range(churners)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(2)
    for sock in sockets:
        sock.close(0)
    ctx.term()


def run_condition(name: str, args, churners: int, stalled: bool) -> dict:
    import torch

    from crowd import CrowdStage
    from engines.run_plan import plan_run
    from streamer.app import RunConfig, processing_stages, run_camera
    from streamer.graph import Pipeline
    from streamer.latency import LatencyStats
    from streamer.outputs import OutputStage
    from streamer.publisher import ZmqPublisher
    from streamer.sources import LoopingVideoSource
    from streamer.subscriber import Subscriber

    torch.set_num_threads(1)
    source = LoopingVideoSource(args.source, max_seconds=args.seconds)
    camera = run_camera(None, source)
    publisher = ZmqPublisher(args.endpoint)
    stats = LatencyStats()
    # The offline lift and fit with a causal window (as this test has always run them).
    plan = plan_run(RunConfig(source=args.source, refine_lag=0), "offline")
    _, lift, refine = processing_stages(plan, camera)
    stages = [CrowdStage.from_file(KEYPOINTS, args.persons), lift, refine, OutputStage(publisher, wait_subscribers=1)]
    pipeline = Pipeline(source, stages, queue_size=1, policy="drop_oldest", observer=stats)
    spawn = mp.get_context("spawn")
    stop = spawn.Event()
    child = None
    if churners or stalled:
        child = spawn.Process(target=misbehaving_subscribers,
                                                args=(args.endpoint, churners, stalled, stop))
        child.start()
    got = {"frames": 0, "missed": 0, "persons": set()}
    done = threading.Event()

    def read():
        with Subscriber(args.endpoint) as sub:
            while not done.is_set():
                msg = sub.receive(timeout=0.5)
                if msg is not None:
                    got["frames"] += 1
                    got["missed"] += msg.missed
                    got["persons"].add(len(msg.frame.persons))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    result = pipeline.run(handle_signals=False)
    done.set()
    reader.join(2)
    stop.set()
    if child is not None:
        child.join(10)
    summary = stats.summary(result)
    publish = summary["stages"]["publish"]["busy_ms"]
    return {"condition": name, "fps": summary["fps"], "g2p_p50": summary["glass_to_publish_ms"]["p50"],
            "g2p_p99": summary["glass_to_publish_ms"]["p99"], "publish_p50": publish["p50"],
            "publish_p99": publish["p99"],
            "frames": result.frames_out, "dropped": summary["drops_total"],
            "reader_got": got["frames"], "reader_missed": got["missed"],
            "persons": sorted(got["persons"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per condition")
    p.add_argument("--persons", type=int, default=16)
    p.add_argument("--churn", type=int, default=4, help="subscribers connecting and vanishing")
    p.add_argument("--source", default=str(CLIP))
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5598")
    args = p.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    conditions = [("baseline", 0, False), ("churn", args.churn, False), ("stalled", 0, True),
                  ("churn+stalled", args.churn, True), ("baseline again", 0, False)]
    rows = []
    print(f"load test: {args.persons} people per frame, lift + refine (lag 0) + publish, live mode, "
          f"{args.seconds:g} s per condition", flush=True)
    header = (f"{'condition':<15} {'fps':>5} {'g2p p50':>8} {'g2p p99':>8} {'pub p50':>8} {'pub p99':>8} "
              f"{'frames':>6} {'dropped':>7} {'reader':>6} {'missed':>6}")
    print(header, flush=True)
    for name, churners, stalled in conditions:
        r = run_condition(name, args, churners, stalled)
        rows.append(r)
        print(f"{r['condition']:<15} {r['fps']:5.1f} {r['g2p_p50']:8.0f} {r['g2p_p99']:8.0f} "
              f"{r['publish_p50']:8.2f} {r['publish_p99']:8.2f} {r['frames']:6d} {r['dropped']:7d} "
              f"{r['reader_got']:6d} {r['reader_missed']:6d}", flush=True)
    base = [rows[0], rows[-1]]
    noise_fps = abs(base[0]["fps"] - base[1]["fps"])
    noise_p50 = abs(base[0]["g2p_p50"] - base[1]["g2p_p50"])
    mean_fps = statistics.mean(r["fps"] for r in base)
    mean_p50 = statistics.mean(r["g2p_p50"] for r in base)
    print(f"baseline noise: fps +-{noise_fps:.1f}, glass-to-publish p50 +-{noise_p50:.0f} ms")
    for r in rows[1:-1]:
        d_fps = r["fps"] - mean_fps
        d_p50 = r["g2p_p50"] - mean_p50
        print(f"{r['condition']:<15} fps {d_fps:+.1f} ({100 * d_fps / mean_fps:+.0f}%), "
              f"glass-to-publish p50 {d_p50:+.0f} ms ({100 * d_p50 / mean_p50:+.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

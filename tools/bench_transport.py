#!/usr/bin/env python3
"""Benchmarks of the streaming core, independent of any model:

1. publish-to-receive latency over loopback ZeroMQ, with a subscriber in another process,
   for frames of 1 and 8 persons carrying the full set of arrays (p50/p99, message size);
2. the stage graph's own overhead per frame with trivial stages (offline throughput and
   live glass-to-output latency).

    python tools/bench_transport.py [--frames 1500] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.frames import Frame, Person  # noqa: E402
from streamer.graph import Pipeline, Stage  # noqa: E402
from streamer.latency import LatencyStats  # noqa: E402
from streamer.publisher import ZmqPublisher  # noqa: E402

SUBSCRIBER = """
import json, sys, time
sys.path.insert(0, {root!r})
from streamer.subscriber import Subscriber
sub = Subscriber({endpoint!r})
print("ready", flush=True)
lat, dec = [], []
while True:
    msg = sub.receive(timeout=5)
    if msg is None:
        break
    lat.append(msg.latency)
    dec.append(time.monotonic() - msg.receive_time)
print(json.dumps({{"lat": lat, "decode": dec, "missed": sub.missed}}), flush=True)
"""


def person(track_id: int) -> Person:
    rng = np.random.default_rng(track_id)
    f32 = np.float32
    return Person(track_id, 0.9, {
        "box_xyxy": rng.random(4).astype(f32), "keypoints_blazepose33": rng.random((33, 3)).astype(f32),
        "keypoints_coco17": rng.random((17, 3)).astype(f32), "world_blazepose33": rng.random((33, 3)).astype(f32),
        "poses": rng.random(72).astype(f32), "poses_std": rng.random(24).astype(f32),
        "betas": rng.random(10).astype(f32), "trans": rng.random(3).astype(f32),
        "joints": rng.random((24, 3)).astype(f32)})


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def bench_publish(persons: int, frames: int, rate: float) -> dict:
    endpoint = free_endpoint()
    pub = ZmqPublisher(endpoint)
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER.format(root=root, endpoint=endpoint)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    pub.wait_for_subscribers(1, timeout=10)
    people = [person(i + 1) for i in range(persons)]
    from streamer.wire import encode_frame
    size = sum(len(p) for p in encode_frame(Frame(0, None, 0.0, (1920, 1080), persons=people), 0, 0.0,
                                            wall_time=0.0))
    publish_cost = []
    next_t = time.monotonic()
    for i in range(frames):
        next_t += 1.0 / rate
        frame = Frame(index=i, image=None, capture_time=time.monotonic(), source_size=(1920, 1080),
                      persons=people)
        t0 = time.perf_counter()
        pub.publish(frame)
        publish_cost.append(time.perf_counter() - t0)
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out = json.loads(proc.stdout.readline())
    proc.wait()
    pub.close()
    lat = np.array(out["lat"][50:]) * 1000  # skip warm-up
    dec = np.array(out["decode"][50:]) * 1000
    return {"persons": persons, "message_bytes": size, "received": len(out["lat"]), "missed": out["missed"],
            "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
            "decode_p50_ms": float(np.percentile(dec, 50)),
            "publish_call_p50_ms": float(np.percentile(np.array(publish_cost) * 1000, 50))}


class Pass(Stage):
    def __init__(self, name: str):
        self.name = name


class TinySource:
    name = "tiny"
    is_live = False

    def __init__(self, n: int, interval: float = 0.0):
        self.n, self.interval = n, interval

    def frames(self):
        image = np.zeros((4, 4, 3), np.uint8)
        next_t = time.monotonic()
        for i in range(self.n):
            if self.interval:
                next_t += self.interval
                time.sleep(max(0.0, next_t - time.monotonic()))
            yield Frame(index=i, image=image, capture_time=time.monotonic(), source_size=(4, 4))

    def close(self):
        pass


def bench_graph(stages: int, frames: int) -> dict:
    names = ["detect", "track", "keypoints", "lift", "refine", "publish"][:stages]
    stats = LatencyStats()
    t0 = time.perf_counter()
    Pipeline(TinySource(frames), [Pass(n) for n in names], queue_size=4, policy="block",
             observer=stats).run(handle_signals=False)
    offline = (time.perf_counter() - t0) / frames
    stats = LatencyStats()
    live_frames = min(frames, 300)
    result = Pipeline(TinySource(live_frames, interval=1 / 30), [Pass(n) for n in names], queue_size=1,
                      policy="drop_oldest", observer=stats).run(handle_signals=False)
    s = stats.summary(result)
    return {"stages": stages, "offline_us_per_frame": offline * 1e6,
            "offline_us_per_frame_per_stage": offline * 1e6 / (stages + 1),
            "live_glass_to_output_p50_ms": s["glass_to_output_ms"]["p50"],
            "live_glass_to_output_p99_ms": s["glass_to_output_ms"]["p99"], "live_drops": s["drops_total"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"publish": [bench_publish(p, args.frames, args.rate) for p in (1, 8)],
               "graph": [bench_graph(s, args.frames * 4) for s in (1, 6)]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"publish-to-receive over loopback, subscriber in another process, {args.rate:.0f} msg/s")
    print(f"{'persons':>8} {'bytes':>7} {'p50 ms':>8} {'p99 ms':>8} {'decode ms':>10} {'publish ms':>11} {'missed':>7}")
    for r in results["publish"]:
        print(f"{r['persons']:>8} {r['message_bytes']:>7} {r['latency_p50_ms']:>8.3f} {r['latency_p99_ms']:>8.3f} "
              f"{r['decode_p50_ms']:>10.3f} {r['publish_call_p50_ms']:>11.3f} {r['missed']:>7}")
    print("\nstage-graph overhead with pass-through stages")
    print(f"{'stages':>7} {'offline us/frame':>17} {'us/hop':>7} {'live g2o p50 ms':>16} {'p99 ms':>7}")
    for r in results["graph"]:
        print(f"{r['stages']:>7} {r['offline_us_per_frame']:>17.1f} {r['offline_us_per_frame_per_stage']:>7.1f} "
              f"{r['live_glass_to_output_p50_ms']:>16.3f} {r['live_glass_to_output_p99_ms']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

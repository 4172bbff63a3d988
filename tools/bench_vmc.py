"""What ``--vmc`` costs per frame at 2 people, on one thread (docs/animation.md).

Usage: python tools/bench_vmc.py [--frames N]

Two people with random poses and joints (the cost does not depend on the values); the
sender chooses one (the tallest box) as in a run and sends to a loopback UDP port that a
socket holds open unread. Prints milliseconds per frame, p50 and mean, for: the
retargeting alone (SMPL pose -> 22 bone quaternions and positions), building the OSC
bundle (track choice, retargeting, 25 messages), and ``VmcSender.write`` (build + send).
"""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np

from streamer.frames import Frame, Person
from streamer.vmc_output import VmcSender, retarget


def _frames(count: int, rng) -> list[Frame]:
    frames = []
    for index in range(count):
        persons = [Person(track_id, 1.0, {"poses": rng.normal(scale=0.3, size=72).astype(np.float32),
                                          "joints": rng.normal(size=(24, 3)).astype(np.float32),
                                          "box_xyxy": np.array([0, 0, 100, 200 + 100 * track_id], np.float32)})
                   for track_id in (1, 2)]
        frames.append(Frame(index, None, time.monotonic(), (1280, 720), persons=persons))
    return frames


def _time(call, frames) -> np.ndarray:
    times = []
    for frame in frames:
        start = time.perf_counter()
        call(frame)
        times.append(time.perf_counter() - start)
    return np.array(times[len(times) // 10:]) * 1e3  # the first tenth warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    args = parser.parse_args()
    frames = _frames(args.frames, np.random.default_rng(0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # held open so sends are not refused
    sink.bind(("127.0.0.1", 0))
    sender = VmcSender(f"127.0.0.1:{sink.getsockname()[1]}")
    rows = {
        "retarget (1 person)": lambda f: retarget(f.persons[1].arrays["poses"], f.persons[1].arrays["joints"]),
        "build bundle": sender.bundle,
        "write (build + send)": sender.write,
    }
    print(f"{'ms per frame, 2 people':24s} {'p50':>7s} {'mean':>7s}")
    for name, call in rows.items():
        ms = _time(call, frames)
        print(f"{name:24s} {np.median(ms):7.3f} {ms.mean():7.3f}")
    print(f"bundle size: {len(sender.bundle(frames[0])[0].dgram)} bytes")
    sender.close()
    sink.close()


if __name__ == "__main__":
    main()

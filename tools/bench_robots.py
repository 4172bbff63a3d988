"""What the ROS 2 outputs cost per frame at 2 people, on one thread (docs/robots.md).

Usage: python tools/bench_robots.py CLIP RECORD_DIR [--frames N] [--repeat R]

RECORD_DIR is a ``run --record`` directory of the same clip (its ``track_NNNN.npz`` give each
frame's bodies); the frames where two people are in view are used, with their images.
Prints milliseconds per frame for: building the /tf and marker messages, encoding them to
CDR, ``--formats mcap`` (McapRecorder.write: build, encode, chunk, compress and the
2-second flushes), ``--formats mcap --mcap-video`` (plus the JPEG at 1280 px), and
``--foxglove`` with no client, with a client subscribed to /tf and the markers, and with
one subscribed to every channel (image included). The client runs in another process.

Columns: wall p50 of the call (what it adds to a frame's latency); the calling thread's CPU
time, mean (steadier than wall time on a shared machine); the process's CPU time per
frame, which also counts the Foxglove SDK's sending threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preview import persons_by_frame  # noqa: E402

from streamer import ros2_messages as rm  # noqa: E402
from streamer.frames import Frame  # noqa: E402


def two_person_frames(clip: str, record_dir: Path, count: int) -> list[Frame]:
    """The first ``count`` frames of ``clip`` with two people in ``record_dir``."""
    persons = persons_by_frame(record_dir)
    frames = []
    with av.open(clip) as container:
        for i, vf in enumerate(container.decode(video=0)):
            people = persons.get(i, [])
            if len(people) >= 2:
                frames.append(Frame(index=i, image=vf.to_ndarray(format="rgb24"), capture_time=time.monotonic(),
                                    source_size=(vf.width, vf.height), persons=people[:2]))
            if len(frames) >= count:
                break
    if not frames:
        raise SystemExit(f"{record_dir}: no frame with two people")
    return frames


def timed(frames: list[Frame], repeat: int, fn) -> tuple[float, float, float]:
    """Wall p50, thread CPU mean and process CPU per call of ``fn(frame)``, milliseconds,
    over ``repeat`` passes of ``frames``."""
    wall, cpu = [], []
    process0 = time.process_time()
    for r in range(repeat):
        for k, frame in enumerate(frames):
            frame.capture_time = 1000.0 + (r * len(frames) + k) / 30  # stamps move on as in a run
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(frame)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    calls = len(wall)
    return (float(np.median(wall)) * 1e3, float(np.mean(cpu)) * 1e3,
            (time.process_time() - process0) / calls * 1e3)


def foxglove_client(port: int, topics: list[str]) -> None:
    """Subscribe to ``topics`` and drain the messages until the server goes."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"], max_size=None) as ws:
        channels = {}
        while len(channels) < len(rm.TOPICS):
            msg = json.loads(ws.recv(timeout=10))
            if msg["op"] == "advertise":
                channels.update({c["id"]: c for c in msg["channels"]})
        wanted = [c for c, ch in channels.items() if ch["topic"] in topics]
        ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": i, "channelId": c}
                                                                  for i, c in enumerate(wanted)]}))
        try:
            while True:
                ws.recv()
        except Exception:  # the server stopped
            return


def with_client(server, topics: list[str], frames, repeat: int):
    """:func:`timed` of ``server.write`` while a client in another process watches ``topics``."""
    client = subprocess.Popen([sys.executable, __file__, "--client", str(server.port), ",".join(topics)])
    deadline = time.monotonic() + 20
    while not all(server._watched(t) for t in topics):
        if time.monotonic() > deadline or client.poll() is not None:
            raise SystemExit("the Foxglove client did not subscribe")
        time.sleep(0.05)
    try:
        return timed(frames, repeat, server.write)
    finally:
        client.kill()
        client.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:  # the Foxglove client process of with_client
        foxglove_client(int(argv[1]), argv[2].split(","))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip")
    parser.add_argument("record_dir")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from calibration.camera import assumed_camera
    from streamer.foxglove_output import FoxgloveServer
    from streamer.mcap_output import McapRecorder

    frames = two_person_frames(args.clip, Path(args.record_dir), args.frames)
    camera = assumed_camera(*frames[0].source_size)
    rows = []
    tracks, encoder = rm.TrackSet(), rm.CdrEncoder()
    rows.append(("build /tf + markers", timed(frames, args.repeat, lambda f: rm.frame_messages(f.persons, 0, tracks))))
    built = [rm.frame_messages(f.persons, 0, rm.TrackSet()) for f in frames]
    by_index = {f.index: b for f, b in zip(frames, built)}
    rows.append(("encode /tf + markers (CDR)", timed(frames, args.repeat, lambda f: [
        encoder.encode(rm.TOPICS[t], m) for t, m in by_index[f.index]])))
    with tempfile.TemporaryDirectory() as tmp:
        for video in (False, True):
            recorder = McapRecorder(Path(tmp) / ("video" if video else "plain"), camera=camera, video=video)
            rows.append((f"--formats mcap{' --mcap-video' if video else ''}", timed(frames, args.repeat, recorder.write)))
            recorder.close()
            rows[-1] = (rows[-1][0] + f" ({recorder.path.stat().st_size / recorder.frames / 1024:.1f} kB/frame)",
                        rows[-1][1])
    server = FoxgloveServer("127.0.0.1:0", camera=camera)
    rows.append(("--foxglove, no client", timed(frames, args.repeat, server.write)))
    rows.append(("--foxglove, a client of /tf and the markers",
                 with_client(server, [rm.TOPIC_TF, rm.TOPIC_SKELETON], frames, args.repeat)))
    rows.append(("--foxglove, a client of every channel (image too)",
                 with_client(server, list(rm.TOPICS), frames, args.repeat)))
    server.close()
    people = {len(f.persons) for f in frames}
    print(f"{len(frames)} frames x {args.repeat}, {'/'.join(map(str, people))} people, "
          f"{frames[0].width}x{frames[0].height}, one thread")
    print(f"{'output':52s} {'wall p50':>8s} {'thread CPU':>10s} {'process CPU':>11s}  (ms per frame)")
    for name, (p50, cpu, process) in rows:
        print(f"{name:52s} {p50:8.2f} {cpu:10.2f} {process:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

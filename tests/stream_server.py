"""Live MPEG-TS streams over TCP for tests, served on 127.0.0.1:PORT.

Grey frames: sends FRAMES frames at 30 fps to the client that connects, closes (the "cut"),
waits GAP seconds, and does it again SEGMENTS times. Frame k of segment s is a flat grey of
level (s * 100 + k * 3) % 256.

    python tests/stream_server.py PORT SEGMENTS FRAMES GAP

The real clip, cut once: frames START to CUT of CLIP (scaled to WIDTH pixels wide) at FPS
frames a second (a camera of that rate; the clip's frames are not resampled), then the
connection is closed for GAP seconds; when the client is back the stream goes on where a
camera would be by then (frames kept coming while nobody was connected) until END. Prints
the first frame of each segment ("segment START") as it begins.

    python tests/stream_server.py clip PORT CLIP WIDTH FPS START CUT GAP END
"""

import socket
import sys
import time

import av
import numpy as np


def serve(port: int, segments: int, frames: int, gap: float) -> None:
    for s in range(segments):
        out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
        stream = out.add_stream("mpeg2video", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for k in range(frames):
            image = np.full((240, 320, 3), (s * 100 + k * 3) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
            time.sleep(1 / 30)
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        time.sleep(gap)


def serve_clip(port: int, clip: str, width: int, fps: int, start: int, cut: int, gap: float, end: int) -> None:
    with av.open(clip) as src:
        images = []
        for i, frame in enumerate(src.decode(video=0)):
            if i >= end:
                break
            if i >= start:
                height = round(frame.height * width / frame.width / 2) * 2
                images.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
    segment = (start, cut)
    cut_time = None
    while True:
        # Our own socket, so the time the client connects is known (FFmpeg's listening
        # output may return before a client is there and buffer the first frames).
        with socket.create_server(("127.0.0.1", port)) as server:
            conn, _ = server.accept()
        sink = conn.makefile("wb")
        out = av.open(sink, "w", format="mpegts")
        if cut_time is not None:  # the "camera" kept running while the client was away
            resumed = cut + round((time.monotonic() - cut_time) * fps)
            segment = (min(resumed, end), end)
        print(f"segment {segment[0]}", flush=True)
        stream = out.add_stream("mpeg2video", rate=fps)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.bit_rate = 4_000_000
        began = time.monotonic()
        for n, k in enumerate(range(*segment)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(images[k - start], format="rgb24")):
                out.mux(packet)
            time.sleep(max(0.0, began + (n + 1) / fps - time.monotonic()))
        cut_time = time.monotonic()  # the camera's clock: closing may wait for a slow client
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        sink.close()
        conn.close()
        if segment[1] >= end:
            return
        time.sleep(max(0.0, cut_time + gap - time.monotonic()))


if __name__ == "__main__":
    if sys.argv[1] == "clip":
        port, clip, width, fps, start, cut, gap, end = sys.argv[2:10]
        serve_clip(int(port), clip, int(width), int(fps), int(start), int(cut), float(gap), int(end))
    else:
        serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))

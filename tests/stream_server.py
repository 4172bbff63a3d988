"""A live MPEG-TS stream over TCP for tests: listens on 127.0.0.1:PORT, sends FRAMES frames
at 30 fps to the client that connects, closes (the "cut"), waits GAP seconds, and does it
again SEGMENTS times. Frame k of segment s is a flat grey of level (s * 100 + k * 3) % 256.

    python tests/stream_server.py PORT SEGMENTS FRAMES GAP
"""

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


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))

"""What the preview video costs per frame, part by part, on one thread.

Usage: python tools/bench_preview.py CLIP RECORD_DIR [--frames N]

RECORD_DIR is a ``run --record`` directory of the same clip (its ``track_NNNN.npz`` give each
frame's bodies). Prints milliseconds per frame, at the preview's size (at most 1280 px wide),
for the resize, colour conversion, the body mesh, the projected skeleton, boxes and
keypoints, H.264 encoding, and the whole of a frame on the preview's thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.frames import Frame, Person  # noqa: E402
from streamer.preview import BodyMeshDrawer, PreviewWriter, SkeletonDrawer, draw_persons, preview_size  # noqa: E402


def persons_by_frame(record_dir: Path) -> dict[int, list[Person]]:
    out: dict[int, list[Person]] = {}
    for path in sorted(record_dir.glob("track_[0-9][0-9][0-9][0-9].npz")):
        d = np.load(path)
        kp_path = path.with_name(path.stem + "_blazepose33.npz")
        kp = dict(zip(np.load(kp_path)["frame_index"].tolist(), np.load(kp_path)["keypoints"])) if kp_path.exists() else {}
        for i, f in enumerate(d["frame_index"].tolist()):
            arrays = {"poses": d["poses"][i], "betas": d["betas_per_frame"][i], "trans": d["trans"][i],
                      "joints": d["joints"][i]}
            if f in kp:
                arrays["keypoints_blazepose33"] = kp[f]
            out.setdefault(f, []).append(Person(int(d["track_id"]), float(d["score"][i]), arrays))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip")
    parser.add_argument("record_dir")
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from calibration.camera_file import camera_or_assumed

    persons = persons_by_frame(Path(args.record_dir))
    frames = []
    with av.open(args.clip) as container:
        for i, vf in enumerate(container.decode(video=0)):
            if i >= args.frames:
                break
            frames.append(Frame(index=i, image=vf.to_ndarray(format="rgb24"), capture_time=0.0,
                                source_size=(vf.width, vf.height), persons=persons.get(i, [])))
    w, h = frames[0].source_size
    camera, _ = camera_or_assumed(None, w, h)
    pw, ph = preview_size((w, h))  # the preview draws and encodes at this size
    small_camera, scale = camera.scaled(pw, ph), pw / w
    mesh, skel = BodyMeshDrawer(small_camera), SkeletonDrawer(small_camera)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        times.setdefault(name, []).append(1000 * (time.perf_counter() - t))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        writer = PreviewWriter(Path(tmp) / "bench.mp4", fps=30, size=(w, h), camera=camera)
        for frame in frames:
            small = timed("resize", cv2.resize, frame.image, (pw, ph), interpolation=cv2.INTER_LINEAR)
            bgr = timed("rgb->bgr", cv2.cvtColor, small, cv2.COLOR_RGB2BGR)
            timed("mesh", mesh.draw, bgr.copy(), frame.persons)
            timed("skeleton", skel.draw, bgr.copy(), frame.persons)
            timed("boxes+keypoints", draw_persons, bgr, frame.persons, pixel_scale=scale)
            # What the preview's own thread does per frame (called here directly, not queued).
            timed("whole frame (mesh)", writer._draw_and_encode, frame.index, frame.image, frame.persons, 30.0)
        writer.close()
        with av.open(str(Path(tmp) / "encode.mp4"), "w") as out:  # the encoder alone, same settings
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            stream.options = {"crf": "23", "preset": "ultrafast", "threads": "1"}
            for frame in frames:
                yuv = cv2.cvtColor(cv2.resize(frame.image, (pw, ph)), cv2.COLOR_RGB2YUV_I420)
                vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                t = time.perf_counter()
                for packet in stream.encode(vf):
                    out.mux(packet)
                times.setdefault("h264 encode", []).append(1000 * (time.perf_counter() - t))
            for packet in stream.encode():
                out.mux(packet)
    n_persons = np.mean([len(f.persons) for f in frames])
    print(f"{len(frames)} frames of {w}x{h}, {n_persons:.2f} persons per frame; ms per frame (mean, p95):")
    for name, values in times.items():
        print(f"  {name:20s} {np.mean(values):7.1f} {np.percentile(values, 95):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

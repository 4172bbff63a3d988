"""CPU timings of the perception stages on a real clip; prints a table.

    python -m engines.perception.benchmark [--video tests/data/sports2d_demo.mp4] [--threads 1]

Measures, on frames of the clip at native size: the detector (letterbox,
network, decoding), the landmark model per call with 1 and 2 persons (crops,
network, heatmap refinement, mapping back), the tracker update per frame, and
`streamer.keypoints_stage.PersonKeypoints.process` end to end over the whole
clip, split by the number of people in the frame. Decoding the video is timed
separately. Medians, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "tests" / "data" / "sports2d_demo.mp4"


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time the BlazePose detector, landmarks, tracker and the keypoints stage.")
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (and OpenCV threads)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--detect-every", type=int, default=10)
    args = ap.parse_args(argv)

    import av
    import cv2

    from engines.perception.pose_detector import PoseDetector
    from engines.perception.pose_landmarks import PoseLandmarker, Roi
    from engines.perception.person_keypoints import PersonKeypoints
    from engines.perception.tracking import Tracker

    if not args.video.is_file():
        raise SystemExit(f"{args.video}: no such video file")
    cv2.setNumThreads(args.threads)

    t0 = time.perf_counter()
    frames = []
    with av.open(str(args.video)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
    decode_ms = 1000 * (time.perf_counter() - t0) / len(frames)
    h, w = frames[0].shape[:2]
    print(f"video {args.video.name}: {len(frames)} frames {w}x{h}; decode {decode_ms:.1f} ms/frame; threads {args.threads}")

    det = PoseDetector(intra_op_threads=args.threads)
    lmk = PoseLandmarker(intra_op_threads=args.threads)
    # A frame with a confidently detected person for the per-model timings.
    frame = max(frames[:: max(1, len(frames) // 20)], key=lambda f: max([d.score for d in det(f)] or [0]))
    d = det(frame)[0]
    roi = Roi.from_alignment(d.keypoints[0], d.keypoints[1])
    roi2 = Roi(roi.center + [roi.size * 0.6, 0], roi.size, 0.0)

    rows = [
        ("detector (224x224, letterbox+net+decode)", _median_ms(lambda: det(frame), args.repeat), 1),
        ("landmarks, batch 1", _median_ms(lambda: lmk(frame, [roi]), args.repeat), 1),
        ("landmarks, batch 2", _median_ms(lambda: lmk(frame, [roi, roi2]), args.repeat), 2),
    ]
    x = lmk.crops(frame, [roi])
    rows.append(("  of which network only, batch 1", _median_ms(lambda: lmk.engine.run({lmk.input_name: x}), args.repeat), 1))

    class _D:
        def __init__(self, box, score):
            self.box, self.score = box, score

    tr = Tracker()
    step = [0]

    def track_once():
        k = step[0] = step[0] + 1
        tr.update([_D(np.array([100 + k, 100, 200 + k, 400.0]), 0.9), _D(np.array([600 - k, 120, 680 - k, 380.0]), 0.9)])

    rows.append(("tracker update, 2 people", _median_ms(track_once, max(args.repeat, 200)), 2))
    print(f"{'stage':45s} {'ms/call':>8s} {'ms/person':>10s}")
    for name, ms, n in rows:
        print(f"{name:45s} {ms:8.2f} {ms / n:10.2f}")

    pk = PersonKeypoints(detect_every=args.detect_every, intra_op_threads=args.threads)
    by_count: dict[int, list[float]] = {}
    t_all = time.perf_counter()
    for i, f in enumerate(frames):
        t = time.perf_counter()
        persons = pk.process(f, i)
        by_count.setdefault(len(persons), []).append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    print(
        f"keypoints stage over the clip: {len(frames) / total:.1f} fps "
        f"({1000 * total / len(frames):.1f} ms/frame, detector ran on {pk.detector_runs} frames; "
        f"with decoding {1000 / (1000 * total / len(frames) + decode_ms):.1f} fps)"
    )
    for n in sorted(by_count):
        ts = by_count[n]
        print(
            f"  frames with {n} person(s): {len(ts):4d}, median {1000 * statistics.median(ts):6.1f} ms "
            f"= {1 / statistics.median(ts):5.1f} fps, mean {1000 * statistics.mean(ts):6.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

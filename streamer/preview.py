"""Preview overlay: boxes, track ids and skeletons drawn on a frame (OpenCV)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from engines.perception.pose_landmarks import BLAZEPOSE33_EDGES

# Distinct BGR colours, picked by track id.
_PALETTE = (
    (255, 128, 0), (0, 200, 255), (80, 220, 80), (255, 0, 255), (0, 128, 255),
    (255, 255, 0), (128, 0, 255), (0, 255, 128), (200, 200, 200), (60, 60, 255),
)  # fmt: skip


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track id."""
    return _PALETTE[track_id % len(_PALETTE)]


def draw_persons(
    frame_bgr: np.ndarray,
    persons: Sequence,
    min_confidence: float = 0.3,
    draw_roi: bool = False,
) -> np.ndarray:
    """Draw tracked persons on a copy of a BGR frame.

    Args:
        frame_bgr: (H, W, 3) uint8 BGR image.
        persons: objects with `track_id`, `score`, `box` (x1, y1, x2, y2) and
            `keypoints33` ((33, 3) x, y, confidence), e.g.
            `streamer.keypoints_stage.TrackedPerson`.
        min_confidence: landmarks below this are not drawn.
        draw_roi: also outline each person's landmark ROI (needs `.roi`).

    Returns:
        The annotated copy.
    """
    out = frame_bgr.copy()
    scale = max(out.shape[:2]) / 1000.0
    thick = max(1, int(round(2 * scale)))
    for p in persons:
        colour = track_colour(int(p.track_id))
        x1, y1, x2, y2 = (int(round(v)) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = f"id {p.track_id} {p.score:.2f}"
        cv2.putText(out, label, (x1, max(0, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour, thick, cv2.LINE_AA)
        kp = np.asarray(p.keypoints33)
        ok = kp[:, 2] >= min_confidence
        for a, b in BLAZEPOSE33_EDGES:
            if ok[a] and ok[b]:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), colour, thick, cv2.LINE_AA)
        for (x, y, _), good in zip(kp, ok):
            if good:
                cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        if draw_roi and getattr(p, "roi", None) is not None:
            cv2.polylines(out, [p.roi.corners().astype(np.int32)], True, colour, 1, cv2.LINE_AA)
    return out


def write_preview(
    video: str,
    out_path: str,
    max_frames: int | None = None,
    detector_tile_size: int | None = None,
    threads: int = 1,
) -> dict:
    """Run the keypoints stage over a video file and write the overlay as an H.264 .mp4.

    Returns a summary: frames, seconds, distinct track ids, mean persons per frame.
    """
    import time
    from fractions import Fraction
    from pathlib import Path

    import av

    from streamer.keypoints_stage import PersonKeypoints

    if not Path(video).is_file():
        raise FileNotFoundError(f"{video}: no such video file")
    cv2.setNumThreads(threads)
    pk = PersonKeypoints(detector_tile_size=detector_tile_size, intra_op_threads=threads)
    ids: set[int] = set()
    counts = []
    t0 = time.perf_counter()
    with av.open(video) as src, av.open(out_path, "w") as dst:
        vin = src.streams.video[0]
        rate = vin.average_rate or Fraction(30)
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.width - vin.width % 2, vin.height - vin.height % 2, "yuv420p"
        vout.options = {"crf": "23", "preset": "veryfast"}
        for i, frame in enumerate(src.decode(vin)):
            if max_frames is not None and i >= max_frames:
                break
            rgb = frame.to_ndarray(format="rgb24")
            persons = pk.process(rgb, i)
            ids.update(p.track_id for p in persons)
            counts.append(len(persons))
            bgr = draw_persons(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), persons)
            bgr = np.ascontiguousarray(bgr[: vout.height, : vout.width])
            for packet in vout.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")):
                dst.mux(packet)
        for packet in vout.encode():
            dst.mux(packet)
    return {
        "frames": len(counts),
        "seconds": time.perf_counter() - t0,
        "track_ids": sorted(ids),
        "mean_persons": float(np.mean(counts)) if counts else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """`preview VIDEO OUT.mp4`: tracked people (boxes, ids, skeletons) drawn over a video."""
    import argparse

    ap = argparse.ArgumentParser(description="Write a video with tracked people, ids and skeletons drawn over it.")
    ap.add_argument("video")
    ap.add_argument("out", help="output .mp4")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--tiles", type=int, metavar="PX", help="also detect on PX-pixel tiles (small/far people)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    s = write_preview(args.video, args.out, args.max_frames, args.tiles, args.threads)
    print(
        f"{args.out}: {s['frames']} frames in {s['seconds']:.1f} s ({s['frames'] / max(s['seconds'], 1e-9):.1f} fps), "
        f"{len(s['track_ids'])} track ids, {s['mean_persons']:.2f} persons per frame"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

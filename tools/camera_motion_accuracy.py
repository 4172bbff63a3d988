"""Accuracy and cost of the visual camera-rotation estimate on the bundled clip turned by a
known head motion (``engines.camera_motion.synthetic``): a +-30 degree head turn and a +-15
degree nod, through a pinhole and through a fisheye camera.

    python tools/camera_motion_accuracy.py [--frames N] [--video tests/data/sports2d_demo.mp4]

Prints, per camera model, the median and largest error of the estimated rotation against
the known one over the clip, the keyframes and re-anchorings, and the tracker's CPU time per
frame (one thread). The static clip (no motion) is the control.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from engines.camera_motion.rotations import angle_between_deg
from engines.camera_motion.synthetic import (HeadMotion, RotationWarp, read_frames, source_camera, virtual_fisheye,
                                             virtual_pinhole)
from engines.camera_motion.visual import VisualRotationTracker

ROOT = Path(__file__).resolve().parents[1]


def measure(frames, fps, target, motion: HeadMotion | None):
    src = source_camera(frames[0].shape[1], frames[0].shape[0])
    warp = RotationWarp(src, target)
    t = np.arange(len(frames)) / fps
    truth = motion.rotations(t) if motion is not None else np.repeat(np.eye(3)[None], len(frames), 0)
    warped = [warp(f, R) for f, R in zip(frames, truth)]
    tracker = VisualRotationTracker(target)
    est, cpu, keyframes, reanchors = [], [], 0, 0
    for image in warped:
        c0 = time.thread_time()
        e = tracker.update(image)
        cpu.append(time.thread_time() - c0)
        est.append(e.rotation)
        keyframes += e.keyframe
        reanchors += e.reanchored
    err = angle_between_deg(np.array(est), truth[0].T @ truth)
    return err, np.array(cpu) * 1e3, keyframes, reanchors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(ROOT / "tests/data/sports2d_demo.mp4"))
    ap.add_argument("--frames", type=int, default=None, help="first N frames (default: all)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    frames, fps = read_frames(args.video, args.frames)
    print(f"{args.video}: {len(frames)} frames at {fps:g} fps; head turn +-30 deg / 4 s, nod +-15 deg / 3 s")
    print(f"{'camera':8s} {'motion':7s} {'median deg':>10s} {'max deg':>8s} {'keyframes':>9s} {'re-anchored':>11s} "
          f"{'CPU ms/frame mean':>17s} {'p99':>6s}")
    for target in (virtual_pinhole(), virtual_fisheye()):
        for name, motion in (("static", None), ("head", HeadMotion())):
            err, cpu, kf, re = measure(frames, fps, target, motion)
            print(f"{target.model:8s} {name:7s} {np.median(err):10.3f} {err.max():8.3f} {kf:9d} {re:11d} "
                  f"{cpu.mean():17.2f} {np.percentile(cpu, 99):6.2f}")


if __name__ == "__main__":
    main()

"""Write the bundled clip as seen by a turning camera (a known head motion) and by the same
camera held still, with the camera file and the true rotations, for `run --output-frame world`
comparisons (docs/head-mounted.md).

    python tools/warped_clip.py OUT_DIR [--width 960 --height 720 --focal 520 --base-pitch 20]

Writes OUT_DIR/static.mp4, OUT_DIR/head.mp4 (+-30 deg turn every 4 s, +-15 deg nod every 3 s
on top of the base pitch), OUT_DIR/camera.yaml and OUT_DIR/truth.npz (``rotations`` (T, 3, 3)
source-camera-from-camera of head.mp4, ``static_rotation`` (3, 3), ``fps``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from calibration.camera import Camera
from calibration.camera_file import save_camera
from engines.camera_motion.rotations import yaw_pitch_roll
from engines.camera_motion.synthetic import HeadMotion, RotationWarp, read_frames, source_camera

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--video", default=str(ROOT / "tests/data/sports2d_demo.mp4"))
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--focal", type=float, default=520.0)
    ap.add_argument("--base-pitch", type=float, default=20.0, help="degrees down of the camera at rest")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, fps = read_frames(args.video)
    K = np.array([[args.focal, 0, (args.width - 1) / 2], [0, args.focal, (args.height - 1) / 2], [0, 0, 1.0]])
    target = Camera("pinhole", args.width, args.height, K, np.zeros(0))
    save_camera(target, out / "camera.yaml")
    warp = RotationWarp(source_camera(frames[0].shape[1], frames[0].shape[0]), target)
    yaw, pitch = HeadMotion().angles(np.arange(len(frames)) / fps)
    head = yaw_pitch_roll(yaw, args.base_pitch + pitch)
    still = yaw_pitch_roll(0.0, args.base_pitch)
    for name, rotations in (("static", [still] * len(frames)), ("head", head)):
        writer = cv2.VideoWriter(str(out / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (args.width, args.height))
        for f, R in zip(frames, rotations):
            writer.write(cv2.cvtColor(warp(f, R), cv2.COLOR_RGB2BGR))
        writer.release()
    np.savez(out / "truth.npz", rotations=head, static_rotation=still, fps=fps)
    print(f"wrote {out}/static.mp4, head.mp4, camera.yaml, truth.npz ({len(frames)} frames)")


if __name__ == "__main__":
    main()

"""Gravity from the people of a camera-frame recording, as `run --output-frame world` would
take it without an IMU or --camera-pitch: the camera's pitch and roll it implies.

    python tools/people_gravity.py REC_DIR [--frames 60 110]

REC_DIR: a `run --record` folder written in the camera frame (a still camera).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from engines.camera_motion.world import PeopleGravity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record")
    ap.add_argument("--frames", type=int, nargs="+", default=[60])
    args = ap.parse_args()
    tracks = [np.load(p) for p in sorted(Path(args.record).glob("track_*.npz")) if "_" not in p.stem[6:]]
    tracks = [t for t in tracks if "joints" in t.files]
    last = max(int(t["frame_index"].max()) for t in tracks)
    for frames in args.frames:
        gravity = PeopleGravity(frames=frames)
        for index in range(last + 1):
            people = [t["joints"][int(np.flatnonzero(t["frame_index"] == index)[0])].astype(np.float64)
                      for t in tracks if index in t["frame_index"]]
            if people:
                gravity.add(people)
        down = gravity.down()
        print(f"{frames} frames with people: {gravity.method if gravity.settled else 'not settled'}; camera pitched "
              f"{math.degrees(math.atan2(down[2], down[1])):.1f} deg down, rolled {math.degrees(math.atan2(-down[0], down[1])):.1f} deg")


if __name__ == "__main__":
    main()

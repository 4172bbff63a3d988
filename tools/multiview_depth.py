#!/usr/bin/env python3
"""Does a second camera put people at the right depth? The test clip and its copy shifted by
the disparity of a scene at a chosen depth (streamer.virtual_rig: an exact stereo pair of a
world of cut-outs at that depth), through ``run``'s multi-camera path, offline; per frame the
pelvis depth of the lift placed on the triangulated hips and of the published (fitted) body,
against the scene's depth; the single camera's own depth beside it.

    python tools/multiview_depth.py [--depths 3.5 8] [--baseline 0.3] [--frames 20] [--warm-start both]

``--warm-start``: the online fit starts each new frame from the previous frame's estimate
moved by the lift's own change (on: as the single-camera run does) or from the frame's own
placed lift (off: what the multi-camera run does); both: one run each.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from calibration.camera import assumed_camera  # noqa: E402
from streamer.app import RunConfig, build_pipeline  # noqa: E402
from streamer.graph import Stage  # noqa: E402
from streamer.multi_source import SynchronisedSources  # noqa: E402
from streamer.sources import VideoFileSource  # noqa: E402
from streamer.virtual_rig import ShiftedSource, write_stereo_rig  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "sports2d_demo.mp4"


class Depths(Stage):
    name = "depths"

    def __init__(self):
        self.rows: list[dict[int, tuple[float, float]]] = []

    def process(self, frame):
        self.rows.append({p.track_id: (float(p.arrays["joints"][0, 2]), float(p.arrays.get("reprojection_px", np.nan)))
                          for p in frame.persons if "joints" in p.arrays})
        return frame


def one_run(rig: str | None, dx: int, frames: int, warm: bool) -> list[dict]:
    depths = Depths()
    if rig is None:
        config = RunConfig(source=str(CLIP), publish=None, progress=False, max_frames=frames)
        pipeline, _, _ = build_pipeline(config, extra_stages=[depths])
    else:
        config = RunConfig(source=str(CLIP), more_sources=[str(CLIP)], rig=rig, publish=None, progress=False,
                           max_frames=frames)
        sources = SynchronisedSources([VideoFileSource(CLIP), ShiftedSource(VideoFileSource(CLIP), dx)])
        pipeline, _, _ = build_pipeline(config, source=sources, extra_stages=[depths])
    for stage in pipeline.stages:
        if stage.name == "refine":
            stage.online.warm_start = warm
    pipeline.run(handle_signals=False)
    return depths.rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=float, nargs="+", default=[3.5, 8.0])
    p.add_argument("--baseline", type=float, default=0.3)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--skip", type=int, default=8, help="frames left out of the summary at the start (default 8)")
    p.add_argument("--warm-start", choices=("on", "off", "both"), default="both")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    warm = {"on": [True], "off": [False], "both": [True, False]}[args.warm_start]
    single = one_run(None, 0, args.frames, True)
    track = min({t for row in single for t in row}, default=None)
    one = [row[track][0] for row in single[args.skip:] if track in row]
    print(f"one camera: pelvis depth {min(one):.2f}-{max(one):.2f} m over frames {args.skip}-{args.frames - 1}")
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            rig = str(Path(tmp) / "rig.yaml")
            dx = write_stereo_rig(rig, camera, args.baseline, depth)
            scene = camera.fx * args.baseline / dx
            for w in warm:
                rows = one_run(rig, dx, args.frames, w)
                tid = min({t for row in rows for t in row}, default=None)
                got = [row[tid] for row in rows[args.skip:] if tid in row]
                err = [abs(z - scene) for z, _ in got]
                print(f"scene at {scene:.2f} m (shift {dx} px), warm start {'on ' if w else 'off'}: fitted pelvis depth "
                      f"{min(z for z, _ in got):.2f}-{max(z for z, _ in got):.2f} m, mean |error| {statistics.mean(err):.2f} m, "
                      f"last frame {got[-1][0]:.2f} m; re-projection median {statistics.median(r for _, r in got):.1f} px "
                      f"(camera 0, {len(got)} frames)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare the people recorded from the clip seen by a still camera and by a turning one
(``tools/warped_clip.py``), matched track to track: root (pelvis) position and heading,
median and largest difference over the frames both followed.

    python tools/world_frame_compare.py STATIC_DIR HEAD_DIR [CAMERA_STATIC_DIR CAMERA_HEAD_DIR]

STATIC_DIR/HEAD_DIR: ``run --record`` folders of static.mp4 and head.mp4, both in the same
``--output-frame``. In ``world`` the two should agree up to the estimate's errors; in
``camera`` the difference is the head's motion itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation


def load_tracks(folder: Path) -> dict[int, dict]:
    out = {}
    for path in sorted(folder.glob("track_*.npz")):
        if path.name.endswith("_keypoints.npz"):
            continue
        z = np.load(path)
        if "joints" not in z.files:
            continue
        out[int(path.stem.split("_")[1])] = {k: z[k] for k in ("frame_index", "joints", "poses")}
    return out


def heading_deg(poses: np.ndarray) -> np.ndarray:
    """The body's facing direction about the vertical (y down) axis, degrees."""
    forward = Rotation.from_rotvec(poses[:, :3].astype(np.float64)).as_matrix()[:, :, 2]
    return np.degrees(np.arctan2(forward[:, 0], forward[:, 2]))


def compare(a: dict, b: dict):
    common, ia, ib = np.intersect1d(a["frame_index"], b["frame_index"], return_indices=True)
    root = np.linalg.norm(a["joints"][ia, 0] - b["joints"][ib, 0], axis=1)
    dh = np.abs((heading_deg(a["poses"][ia]) - heading_deg(b["poses"][ib]) + 180) % 360 - 180)
    return common, root, dh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("static")
    ap.add_argument("head")
    ap.add_argument("camera_dirs", nargs="*", metavar="CAMERA_STATIC CAMERA_HEAD",
                    help="the same two videos run in the camera frame: compared on the same tracks and frames")
    ap.add_argument("--min-frames", type=int, default=10)
    ap.add_argument("--switch-over", type=float, default=1.0, metavar="M",
                    help="frames whose roots differ by more than M metres in the world frame are another person "
                         "under the same track id (a tracker id switch in one run): counted, left out")
    args = ap.parse_args()
    static, head = load_tracks(Path(args.static)), load_tracks(Path(args.head))
    cam = [load_tracks(Path(d)) for d in args.camera_dirs] if len(args.camera_dirs) == 2 else None
    print(f"{'frame':6s} {'static':>6s} {'head':>5s} {'frames':>6s} {'switch':>6s} {'path m':>6s} "
          f"{'root cm median':>14s} {'p90':>6s} {'heading deg median':>18s} {'p90':>6s}")
    for sid, s in static.items():
        best = None
        for hid, h in head.items():
            common, root, dh = compare(s, h)
            if len(common) >= args.min_frames and (best is None or len(common) > len(best[1])):
                best = (hid, common, root, dh)
        if best is None:
            continue
        hid, common, root, dh = best
        same = root <= args.switch_over
        kept = common[same]
        path = float(np.linalg.norm(np.diff(s["joints"][:, 0, [0, 2]], axis=0), axis=1).sum())

        def row(name, root, dh):
            print(f"{name:6s} {sid:6d} {hid:5d} {len(kept):6d} {int((~same).sum()):6d} {path:6.2f} "
                  f"{100 * np.median(root):14.1f} {100 * np.percentile(root, 90):6.1f} "
                  f"{np.median(dh):18.1f} {np.percentile(dh, 90):6.1f}")

        row("world", root[same], dh[same])
        if cam is not None and sid in cam[0] and hid in cam[1]:
            a, b = cam[0][sid], cam[1][hid]
            keep = lambda t: {k: v[np.isin(t["frame_index"], kept)] for k, v in t.items()}  # noqa: E731
            _, croot, cdh = compare(keep(a), keep(b))
            row("camera", croot, cdh)


if __name__ == "__main__":
    main()

"""Compare a multi-camera rig with another tool's calibration of the same cameras, after a
similarity alignment (the common frame of two calibrations is arbitrary): per camera, the
distance between the camera centres (cm) and the angle between the orientations (degrees).

    python tools/compare_rig.py OUR_RIG.yaml caliscope/camera_array.toml

The second file is caliscope's ``camera_array.toml`` (``rotation``, ``translation``:
world -> camera, OpenCV's extrinsic convention). Cameras are paired in order.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.rig_calibration import load_multi_camera_rig  # noqa: E402


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: s, R, t with dst ~ s R src + t."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return s, R, mu_d - s * R @ mu_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rig")
    p.add_argument("caliscope")
    args = p.parse_args(argv)
    ours = load_multi_camera_rig(args.rig)
    theirs = tomllib.loads(Path(args.caliscope).read_text())["cameras"]
    keys = sorted(theirs, key=int)[: len(ours)]
    R_w = [np.array(theirs[k]["rotation"]).T for k in keys]  # camera -> their world
    C_w = [-np.array(theirs[k]["rotation"]).T @ np.array(theirs[k]["translation"]) for k in keys]
    s, R, t = similarity(np.stack([c.translation for c in ours]), np.stack(C_w))
    print(f"similarity: scale {s:.4f} (1 = the same metric scale)")
    print(f"{'camera':10} {'centre diff cm':>15} {'orientation diff deg':>21}")
    for c, Rw, Cw in zip(ours, R_w, C_w):
        centre = s * R @ c.translation + t
        dR = (R @ c.rotation).T @ Rw
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(dR) - 1) / 2))))
        print(f"{c.name:10} {100 * np.linalg.norm(centre - Cw):15.1f} {angle:21.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

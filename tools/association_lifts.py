#!/usr/bin/env python3
"""How often are two people swapped across views where epipolar geometry cannot tell them
apart, with and without the agreement of their per-view lifts?

The scene of ``tests/test_cross_view.py::test_the_lifts_tell_apart_two_people_on_one_epipolar_line``:
a level rig (camera 1 4 m to camera 0's right, looking at the point 4 m in front of camera 0),
two people of one height standing where Z - X = 5 m (their rays share the epipolar planes,
which hold the baseline), A with the left arm out at camera 0 and the right arm back, B with
both arms out to the sides. Each frame: keypoints with pixel noise and 10 % of points
missing, world landmarks (hip-centred, each camera's axes) with Gaussian noise per
coordinate; a fresh matcher (no earlier match to keep) pairs them.

    python tools/association_lifts.py [--frames 100] [--noise 0.03 0.05 0.08 0.12]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engines.body.body_model import BodyModel  # noqa: E402
from engines.body.rotations import axis_angle_to_matrix  # noqa: E402
from calibration.rig import look_from  # noqa: E402
from engines.perception.cross_view import CrossViewMatcher  # noqa: E402

F, C = 1000.0, np.array([640.0, 360.0])


def observe(points, pose, rng, noise_px=3.0) -> np.ndarray:
    """Normalised keypoints (33, 3) of camera-0-frame ``points`` seen from ``pose`` (None: camera 0)."""
    p = points if pose is None else points @ pose[0].T + pose[1]
    px = p[:, :2] / p[:, 2:] * F + C + rng.normal(0, noise_px, (len(p), 2))
    conf = rng.uniform(0.5, 1.0, len(p))
    conf[rng.random(len(p)) < 0.1] = 0.0
    return np.concatenate([(px - C) / F, conf[:, None]], 1)


def landmarks(points, pose, rng, noise_m) -> np.ndarray:
    """Hip-centred metric landmarks (33, 3) in the axes of the camera at ``pose``, noisy."""
    centred = points - points[[23, 24]].mean(0)
    return (centred if pose is None else centred @ pose[0].T) + rng.normal(0, noise_m, points.shape)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A's and B's BlazePose-33 points (33, 3) in camera 0's frame."""
    aa = torch.zeros(2, 24, 3)
    aa[:, 0] = torch.tensor([math.pi, 0.0, 0.0])
    aa[0, 16] = torch.tensor([0.0, -math.pi / 2, 0.0])  # A: left arm at camera 0
    aa[0, 17] = torch.tensor([0.0, -math.pi / 2, 0.0])  # and the right arm back
    trans = torch.tensor([[-1.0, 0.0, 4.0], [1.0, 0.0, 6.0]])
    with torch.no_grad():
        out = BodyModel.load()(axis_angle_to_matrix(aa), torch.zeros(2, 10), trans, keypoints="blazepose33")
    a, b = out.keypoints["blazepose33"].numpy()
    return a, b


def swaps(frames: int, noise_m: float | None, seed: int = 4) -> int:
    """Frames of ``frames`` whose pairing is wrong; ``noise_m`` None: by geometry alone."""
    a, b = scene()
    pose = look_from([4.0, 0.0, 4.0])
    rng = np.random.default_rng(seed)
    wrong = 0
    for _ in range(frames):
        ref = {3: observe(a, None, rng), 9: observe(b, None, rng)}
        view = {21: observe(b, pose, rng), 20: observe(a, pose, rng)}
        extra = {}
        if noise_m is not None:
            extra = dict(reference_landmarks={3: landmarks(a, None, rng, noise_m), 9: landmarks(b, None, rng, noise_m)},
                         view_landmarks=[{21: landmarks(b, pose, rng, noise_m), 20: landmarks(a, pose, rng, noise_m)}])
        (found,) = CrossViewMatcher([pose]).match(ref, [view], **extra)
        wrong += found != {20: 3, 21: 9}
    return wrong


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--noise", type=float, nargs="+", default=[0.03, 0.05, 0.08, 0.12],
                   help="landmark noise, metres per coordinate")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"epipolar geometry alone: {swaps(args.frames, None)} of {args.frames} frames swapped")
    for noise in args.noise:
        print(f"with the lifts, landmark noise {noise * 100:.0f} cm: {swaps(args.frames, noise)} of {args.frames} swapped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

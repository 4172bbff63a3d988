"""BVH round trip: read each ``track_NNNN.bvh`` of a ``run --record DIR --formats npz,bvh``
directory with the independent ``bvh`` package, run forward kinematics on what it read, and
compare with the body model's joints for the same track's ``.npz``.

Usage: python tools/bvh_roundtrip.py RECORD_DIR

Prints, per track, the error in millimetres (mean and max over frames and joints) against
(a) the body model with the track's mean shape, in the BVH's Y-up world: the round-trip
error of the file itself, and (b) the ``.npz`` ``joints`` (per-frame shape) in the same
world: what averaging the shape into one skeleton costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.body.body_model import BodyModel  # noqa: E402
from engines.body.joint_sets import SMPL24_NAMES  # noqa: E402
from streamer.motion_formats import CAMERA_TO_WORLD, world_motion  # noqa: E402


def fk_from_bvh(mocap) -> np.ndarray:
    """(T, 24, 3) joint positions, SMPL order, from a parsed BVH (the ``bvh`` package)."""
    pos, rot = {}, {}
    for name in mocap.get_joints_names():
        offset = np.asarray(mocap.joint_offset(name), float)
        channels = mocap.joint_channels(name)
        values = np.asarray(mocap.frames_joint_channels(name, channels), float)
        rot_channels = [c for c in channels if c.endswith("rotation")]
        local = Rotation.from_euler("".join(c[0] for c in rot_channels).upper(),
                                    values[:, [channels.index(c) for c in rot_channels]], degrees=True)
        parent = mocap.joint_parent(name)
        if parent is None:
            pos[name] = offset + values[:, [channels.index(c) for c in ("Xposition", "Yposition", "Zposition")]]
            rot[name] = local
        else:
            pos[name] = pos[parent.name] + rot[parent.name].apply(offset)
            rot[name] = rot[parent.name] * local
    return np.stack([pos[n] for n in SMPL24_NAMES], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BVH round trip against the body model")
    parser.add_argument("record_dir")
    args = parser.parse_args(argv)
    import bvh

    torch.set_num_threads(1)
    body = BodyModel.load().double()
    paths = sorted(Path(args.record_dir).glob("track_[0-9][0-9][0-9][0-9].bvh"))
    if not paths:
        print(f"no track_NNNN.bvh in {args.record_dir} (record with --formats npz,bvh)", file=sys.stderr)
        return 1
    print("track  frames  file vs body model (mean shape) mm: mean   max  |  vs npz joints (per-frame shape) mm: mean   max")
    for path in paths:
        data = np.load(path.with_suffix(".npz"))
        got = fk_from_bvh(bvh.Bvh(path.read_text()))
        motion = world_motion(data["poses"], data["trans"], data["betas"], body)
        err = 1000 * np.linalg.norm(got - motion.joints, axis=-1)
        npz_world = data["joints"].astype(np.float64) @ CAMERA_TO_WORLD.T - [0.0, motion.floor, 0.0]
        err_npz = 1000 * np.linalg.norm(got - npz_world, axis=-1)
        print(f"{path.stem[6:]:>5}  {len(got):6d}  {err.mean():40.4f} {err.max():7.4f}  |  "
              f"{err_npz.mean():36.2f} {err_npz.max():6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-bone check of a retargeting: angle between each source bone and its SMPL counterpart.

``python -m engines.mocap.check_retarget ROOT [ROOT ...] [--stride 4] [--json out.json]``

For every archive (HDM05, CMU Daz BVH, CMU iClone BVH) prints, per SMPL bone (parent ->
joint), the mean and the worst angle over all frames, and the same angle in the source's own
T-pose ("rest"): bones rigid with the pelvis or chest (pelvis -> hips/spine1, spine3 ->
neck/collars) cannot match every source because the skeletons' rest shapes differ; for them the
rest column is the expected constant offset and mean - rest is what the motion adds.

Articulated bones match by construction (a check of the solver); what can go wrong there is
twist, which bone directions cannot show. So it also prints, for knees and elbows, how far
the SMPL bend axis is from SMPL's hinge axis (median and 90th percentile over bent frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from engines.mocap import retarget as rt
from engines.mocap.dataset import _open_root, find_clips, read_clip


def check(roots: list[str], target: rt.TargetSkeleton, stride: int = 1, log=print) -> dict:
    """Per-archive bone statistics: {dataset: {"frames", "mean", "max", "rest"} (23 each)}."""
    stats: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mocap-check-") as tmp:
        clips = [c for r in roots for c in find_clips(_open_root(r, Path(tmp)))]
        t0 = time.time()
        for i, c in enumerate(clips):
            motion = read_clip(c.path, c.kind, asf=c.asf, fps=c.fps)
            motion = motion.frames(slice(None, None, stride))
            smap = rt.SKELETON_MAPS[c.kind]
            res = rt.retarget(motion, smap, target)
            err = rt.bone_direction_errors(res, target)
            rest = rt.calibration_offsets(motion, smap, target)
            s = stats.setdefault(c.dataset, {"frames": 0, "sum": np.zeros(23),
                                             "max": np.zeros(23), "rest": [], "clips": 0,
                                             "hinge": {}})
            for name, off in hinge_axis_errors(res.poses, target).items():
                s["hinge"].setdefault(name, []).append(off)
            s["frames"] += len(err)
            s["clips"] += 1
            s["sum"] += err.sum(0)
            s["max"] = np.maximum(s["max"], err.max(0))
            s["rest"].append(rest)
            if (i + 1) % 25 == 0 or i + 1 == len(clips):
                log(f"  {i + 1}/{len(clips)} clips ({time.time() - t0:.0f} s)")
    out = {}
    for k, v in stats.items():
        hinge = {n: np.concatenate(a) for n, a in v["hinge"].items()}
        out[k] = {"clips": v["clips"], "frames": v["frames"],
                  "mean": (v["sum"] / v["frames"]).tolist(), "max": v["max"].tolist(),
                  "rest": np.mean(v["rest"], 0).tolist(),
                  "hinge": {n: {"frames": int(len(a)), "median": float(np.median(a)) if len(a) else None,
                                "p90": float(np.percentile(a, 90)) if len(a) else None}
                            for n, a in hinge.items()}}
    return out


def hinge_axis_errors(poses: np.ndarray, target: rt.TargetSkeleton, min_bend_deg: float = 30.0
                      ) -> dict[str, np.ndarray]:
    """Per hinge (knees, elbows): for frames bent more than ``min_bend_deg``, the angle (deg)
    between the SMPL bend axis (the plane of the rest and the posed lower bone, in the upper
    segment's frame) and SMPL's hinge axis. Small when twist was transferred right: a limb
    twisted by x degrees bends about an axis x degrees off."""
    P = poses.reshape(len(poses), 24, 3)
    J = target.rest_joints
    out = {}
    for upper, joint, axis in rt.HINGES:
        child = [c for c in range(24) if target.parents[c] == joint][0]
        d = rt._normalize(J[child] - J[joint])
        low = Rotation.from_rotvec(P[:, joint]).apply(d)
        n = np.cross(d, low)
        s = np.linalg.norm(n, axis=-1)
        bent = (s > np.sin(np.radians(min_bend_deg))) | (low @ d < 0)
        bent &= low @ d < np.cos(np.radians(min_bend_deg))
        cos = np.abs(n[bent] / s[bent, None] @ np.asarray(axis))
        out[rt.SMPL_JOINT_NAMES[joint]] = np.degrees(np.arccos(np.clip(cos, 0, 1)))
    return out


def format_table(stats: dict) -> str:
    """A text table: one row per SMPL bone, mean / worst / rest per archive (degrees)."""
    names = list(stats)
    head = f"{'bone (parent -> joint)':<30}" + "".join(f"{n + ' mean/worst/rest':>30}" for n in names)
    lines = [head, "-" * len(head)]
    for k in range(23):
        j = k + 1
        bone = f"{rt.SMPL_JOINT_NAMES[rt.SMPL_PARENTS[j]]} -> {rt.SMPL_JOINT_NAMES[j]}"
        cells = "".join(f"{stats[n]['mean'][k]:>14.1f}/{stats[n]['max'][k]:>6.1f}/{stats[n]['rest'][k]:>6.1f}"
                        for n in names)
        lines.append(f"{bone:<30}{cells}")
    arts = [k for k in range(23) if max(stats[n]["rest"][k] for n in names) < 0.5]
    lines.append("-" * len(head))
    lines.append(f"{'articulated bones, mean':<30}" + "".join(
        f"{np.mean([stats[n]['mean'][k] for k in arts]):>14.2f}/{max(stats[n]['max'][k] for k in arts):>6.1f}/{'':>6}"
        for n in names))
    for h in ("left_knee", "right_knee", "left_elbow", "right_elbow"):
        lines.append(f"{h + ' axis off hinge':<30}" + "".join(
            f"{'median %.1f / p90 %.1f' % (stats[n]['hinge'][h]['median'], stats[n]['hinge'][h]['p90']) if stats[n]['hinge'][h]['frames'] else 'n/a':>30}"
            for n in names))
    lines.append(f"{'frames (clips)':<30}" + "".join(
        f"{str(stats[n]['frames']) + ' (' + str(stats[n]['clips']) + ')':>30}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the per-bone direction error table for the given archives."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", help="archive folders or .tar.xz files")
    ap.add_argument("--stride", type=int, default=1, help="use every n-th source frame")
    ap.add_argument("--target", help="SMPL-format .npz (default: bundled model, else fallback)")
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)
    target = rt.load_target_skeleton(a.target)
    print(f"target skeleton: {target.name}", flush=True)
    try:
        stats = check(a.roots, target, a.stride, log=lambda s: print(s, flush=True))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(stats))
    if a.json:
        Path(a.json).write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

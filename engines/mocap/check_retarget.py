"""Per-bone check of a retargeting: angle between each source bone and its SMPL counterpart.

``python -m engines.mocap.check_retarget ROOT [ROOT ...] [--stride 4] [--json out.json]``

For every archive (HDM05, CMU Daz BVH, CMU iClone BVH) prints, per SMPL bone (parent ->
joint), the mean and the worst angle over all frames, and the same angle in the source's own
T-pose ("rest"): bones rigid with the pelvis or chest (pelvis -> hips/spine1, spine3 ->
neck/collars) cannot match every source because the skeletons' rest shapes differ; for them the
rest column is the expected constant offset and mean - rest is what the motion adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
            err = rt.bone_direction_errors(rt.retarget(motion, smap, target), target)
            rest = rt.calibration_offsets(motion, smap, target)
            s = stats.setdefault(c.dataset, {"frames": 0, "sum": np.zeros(23),
                                             "max": np.zeros(23), "rest": [], "clips": 0})
            s["frames"] += len(err)
            s["clips"] += 1
            s["sum"] += err.sum(0)
            s["max"] = np.maximum(s["max"], err.max(0))
            s["rest"].append(rest)
            if (i + 1) % 25 == 0 or i + 1 == len(clips):
                log(f"  {i + 1}/{len(clips)} clips ({time.time() - t0:.0f} s)")
    return {k: {"clips": v["clips"], "frames": v["frames"], "mean": (v["sum"] / v["frames"]).tolist(),
                "max": v["max"].tolist(), "rest": np.mean(v["rest"], 0).tolist()}
            for k, v in stats.items()}


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

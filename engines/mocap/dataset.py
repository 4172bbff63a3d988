"""Training arrays for the pose prior from the raw motion-capture archives.

``python -m engines.mocap.dataset HDM05_DIR_OR_TAR CMU_DAZ_DIR_OR_TAR CMU_ICLONE_DIR_OR_TAR
--out mocap_smpl30.npz`` reads every clip, retargets it onto the SMPL-24 tree, resamples it to
30 fps, adds its left/right mirror image and writes one ``.npz`` (format in ``docs/mocap.md``).

Archive layouts (recognised by their files, not by the names given on the command line):

* HDM05 cut clips: ``**/HDM_<actor>_<motion>_<nnn>_<fps>.amc`` beside ``HDM_<actor>.asf``.
* CMU "Daz-friendly" BVH: ``**/{salsa,martial,indian}/NN.bvh`` (43-joint ``hip``-rooted rig).
  Salsa headers say 120 fps but the clips are 60 fps (the archive's ``readme.txt``): overridden.
* CMU iClone BVH: ``**/subjects/NNN/NNN_MM.bvh`` (``CC_Base_*`` rig).

BVH clips that start with an added T-pose frame (all Daz clips, iClone 007_03-12) lose it, and
so do the few glitching frames after it in the Daz clips (joints jumping at tens of m/s).
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.mocap import retarget as rt
from engines.mocap.asf_amc import read_asf_amc
from engines.mocap.bvh import read_bvh
from engines.mocap.motion import SourceMotion

TARGET_FPS = 30.0
DEFAULT_HOLDOUT = ("hdm05:dg", "cmu-iclone:007")
DAZ_FPS = {"salsa": 60.0, "martial": 120.0, "indian": 120.0}


@dataclass
class Clip:
    """One motion file and what is known about it."""

    path: Path
    kind: str  # a key of retarget.SKELETON_MAPS
    dataset: str  # hdm05, cmu-daz, cmu-iclone
    actor: str  # "<dataset>:<actor>", the unit to hold out
    name: str
    asf: Path | None = None
    fps: float | None = None


def find_clips(root: str | Path) -> list[Clip]:
    """All clips of the three known archive layouts under ``root`` (sorted)."""
    root = Path(root)
    clips: list[Clip] = []
    for amc in sorted(root.rglob("*.amc")):
        m = re.match(r"HDM_([a-z]+)_(.+)_(\d+)\.amc$", amc.name)
        if not m:
            continue
        asf = amc.with_name(f"HDM_{m.group(1)}.asf")
        if not asf.exists():
            raise FileNotFoundError(f"{amc}: its skeleton {asf.name} is not beside it")
        clips.append(Clip(amc, "asf-cmu", "hdm05", f"hdm05:{m.group(1)}", amc.stem, asf,
                          float(m.group(3))))
    for bvh in sorted(root.rglob("*.bvh")):
        parts = bvh.parts
        if len(parts) >= 2 and parts[-2] in DAZ_FPS:
            group = parts[-2]
            if group == "salsa":  # 01-15 and 16-30 are the two partners of the same dances
                group = "salsa-a" if int(re.sub(r"\D", "", bvh.stem) or 0) <= 15 else "salsa-b"
            clips.append(Clip(bvh, "bvh-daz", "cmu-daz", f"cmu-daz:{group}",
                              f"{parts[-2]}_{bvh.stem}", fps=DAZ_FPS[parts[-2]]))
        elif re.match(r"\d{3}_\d+$", bvh.stem) and len(parts) >= 3 and parts[-3] == "subjects":
            clips.append(Clip(bvh, "bvh-iclone", "cmu-iclone", f"cmu-iclone:{parts[-2]}",
                              bvh.stem))
    return clips


_ARM_JOINTS = {"bvh-iclone": ("CC_Base_L_Upperarm", "CC_Base_R_Upperarm", "CC_Base_L_Hand",
                              "CC_Base_R_Hand"),
               "bvh-daz": ("lShldr", "rShldr", "lHand", "rHand")}


def starts_with_tpose(motion: SourceMotion, kind: str) -> bool:
    """Whether frame 0 is an added T-pose: arms out level, then a jump to frame 1."""
    if kind not in _ARM_JOINTS or motion.num_frames < 2:
        return False
    idx = [motion.index(n) for n in _ARM_JOINTS[kind]]
    arms = motion.positions[0, idx[2:]] - motion.positions[0, idx[:2]]
    level = np.all(np.abs(arms[:, 1]) < 0.1 * np.linalg.norm(arms, axis=-1))
    rel = motion.positions[:2] - motion.positions[:2, :1]
    return bool(level and np.abs(rel[1] - rel[0]).max() > 0.2)


def settled_start(motion: SourceMotion, max_speed: float = 8.0, window: int = 15) -> int:
    """First frame after the glitches some converted clips start with (joints jumping at more
    than ``max_speed`` m/s, relative to the root, within the first ``window`` frames)."""
    rel = motion.positions[:window + 1] - motion.positions[:window + 1, :1]
    speed = np.abs(np.diff(rel, axis=0)).max(axis=(1, 2)) * motion.fps
    fast = np.nonzero(speed > max_speed)[0]
    return int(fast[-1] + 1) if fast.size else 0


def read_clip(path: str | Path, kind: str, asf: str | Path | None = None,
              fps: float | None = None) -> SourceMotion:
    """Read one clip with its archive's conventions (units, frame rate, added T-pose)."""
    path = Path(path)
    if kind == "asf-cmu":
        if asf is None:
            m = re.match(r"HDM_([a-z]+)_", path.name)
            asf = path.with_name(f"HDM_{m.group(1)}.asf") if m else None
        if asf is None or not Path(asf).exists():
            raise FileNotFoundError(f"{path}: give its .asf skeleton (--asf)")
        return read_asf_amc(asf, path, fps=fps)
    if kind in ("bvh-daz", "bvh-iclone"):
        if kind == "bvh-daz" and fps is None and path.parent.name in DAZ_FPS:
            fps = DAZ_FPS[path.parent.name]
        motion = read_bvh(path, unit_m=0.01, fps=fps)
        start = 1 if starts_with_tpose(motion, kind) else 0
        start += settled_start(motion.frames(slice(start, None)))
        if start:
            motion = motion.frames(slice(start, None))
            motion.meta["dropped_leading_frames"] = start
        return motion
    raise ValueError(f"unknown skeleton kind {kind!r}; one of {sorted(rt.SKELETON_MAPS)}")


def _open_root(arg: str, tmp: Path) -> Path:
    p = Path(arg)
    if p.is_dir():
        return p
    if p.is_file() and p.name.endswith((".tar.xz", ".tar.gz", ".tar", ".tgz")):
        dest = tmp / p.name.split(".")[0]
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(p) as tf:
            tf.extractall(dest, filter="data")
        return dest
    raise FileNotFoundError(f"{arg}: neither a folder nor a .tar.xz archive")


def build(roots: list[str], out: str | Path, target: rt.TargetSkeleton,
          holdout: tuple[str, ...] = DEFAULT_HOLDOUT, mirror: bool = True,
          log=print) -> dict:
    """Read, retarget, resample and mirror every clip under ``roots``; write ``out`` (.npz)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="mocap-") as tmp:
        clips: list[Clip] = []
        for r in roots:
            found = find_clips(_open_root(r, Path(tmp)))
            log(f"{r}: {len(found)} clips")
            clips += found
        if not clips:
            raise FileNotFoundError(f"no HDM05 .amc or CMU .bvh clips under {roots}")
        poses, trans, clip_rows = [], [], []
        n_src = 0
        for i, c in enumerate(clips):
            motion = read_clip(c.path, c.kind, asf=c.asf, fps=c.fps)
            n_src += motion.num_frames
            res = rt.retarget(motion, rt.SKELETON_MAPS[c.kind], target)
            p30, t30 = rt.resample(res.poses, res.trans, motion.fps, TARGET_FPS)
            variants = [(p30, t30, False)]
            if mirror:
                variants.append((*rt.mirror_poses(p30, t30), True))
            for p, t, mir in variants:
                clip_rows.append((c, mir, len(p), res.scale, motion.fps))
                poses.append(p.astype(np.float32))
                trans.append(t.astype(np.float32))
            log(f"[{i + 1}/{len(clips)}] {c.actor} {c.name}: {motion.num_frames} frames at "
                f"{motion.fps:g} fps -> {len(p30)} at 30 fps ({time.time() - t0:.0f} s)")
    lengths = np.array([r[2] for r in clip_rows])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    actors = sorted({r[0].actor for r in clip_rows})
    clip_actor = np.array([actors.index(r[0].actor) for r in clip_rows], np.int32)
    arrays = {
        "poses": np.concatenate(poses),
        "trans": np.concatenate(trans),
        "clip_id": np.repeat(np.arange(len(clip_rows), dtype=np.int32), lengths),
        "actor_id": np.repeat(clip_actor, lengths),
        "mirrored": np.repeat(np.array([r[1] for r in clip_rows]), lengths),
        "clip_names": np.array([r[0].name for r in clip_rows]),
        "clip_dataset": np.array([r[0].dataset for r in clip_rows]),
        "clip_actor": clip_actor,
        "clip_mirrored": np.array([r[1] for r in clip_rows]),
        "clip_start": starts.astype(np.int64),
        "clip_length": lengths.astype(np.int64),
        "clip_scale": np.array([r[3] for r in clip_rows], np.float32),
        "clip_source_fps": np.array([r[4] for r in clip_rows], np.float32),
        "clip_heldout": np.array([r[0].actor in holdout for r in clip_rows]),
        "actors": np.array(actors),
        "heldout_actors": np.array(sorted(holdout)),
        "fps": np.float32(TARGET_FPS),
        "target_name": np.array(target.name),
        "target_rest_joints": target.rest_joints.astype(np.float32),
        "target_parents": target.parents.astype(np.int32),
        "joint_names": np.array(rt.SMPL_JOINT_NAMES),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    held = arrays["clip_heldout"][arrays["clip_id"]]
    summary = {"clips": len(clips), "source_frames": n_src, "frames_30fps": int(len(held)),
               "heldout_frames": int(held.sum()), "seconds": time.time() - t0,
               "bytes": out.stat().st_size, "actors": actors}
    log(f"wrote {out}: {summary['frames_30fps']} frames at 30 fps ({summary['frames_30fps'] / 30 / 60:.1f} "
        f"min, mirrors included; {summary['heldout_frames']} held out) from {len(clips)} clips, "
        f"{n_src} source frames; {summary['bytes'] / 1e6:.1f} MB; {summary['seconds']:.0f} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: build the retargeted training arrays from the raw archives."""
    ap = argparse.ArgumentParser(prog="mocap-dataset", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", help="archive folders or .tar.xz files")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--target", help="SMPL-format .npz for the target skeleton (default: the "
                    "bundled body model, else the module's fallback T-pose)")
    ap.add_argument("--holdout", default=",".join(DEFAULT_HOLDOUT),
                    help="comma-separated actors flagged as held out (default: %(default)s)")
    ap.add_argument("--no-mirror", action="store_true", help="do not add mirrored copies")
    a = ap.parse_args(argv)
    target = rt.load_target_skeleton(a.target)
    print(f"target skeleton: {target.name}", flush=True)
    try:
        build(a.roots, a.out, target, tuple(s for s in a.holdout.split(",") if s),
              mirror=not a.no_mirror, log=lambda s: print(s, flush=True))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

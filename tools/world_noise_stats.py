"""How large and how structured the simulated world landmarks' errors are, per error model
(``engines.training.synthetic_views.WORLD_NOISE``), on held-out mocap frames:

* PA-MPJPE (mm) of the landmarks on the 12 limb points (shoulders to ankles) after a
  similarity alignment onto the true points: the overall size of the error;
* the spread of the limb bones' lengths (upper arms, forearms, thighs, shins) over repeated
  draws for the same bodies, in % of the length: how independent the points' errors are.
  docs/lifter.md gives 7 % for the real landmarks of both people of the bundled clip;
  ``--clip`` below, their length's standard deviation over the frames, gives a median of
  4.7 % for the walker and 12.6 % for the man on the roof (eleventh session).

``--clip`` measures real landmarks instead (the landmark network's): how much their limb
bones' lengths, which are constant in truth, vary over the frames, and how that error
correlates from one frame to the next (lags 1, 2, 5 and 10): the ``frame_correlation`` of
the error model. Without a file it reads the bundled track of the clip's walking person
(tests/data/keypoints, 139 consecutive frames); any track ``run --record`` writes can be
given (``track_NNNN_blazepose33.npz``): where the person was lost for a while, the
correlations pool the runs of consecutive frames (of at least 12).

    python tools/world_noise_stats.py --data data/mocap.npz [--frames 1000] [--draws 16]
    python tools/world_noise_stats.py --clip
    smplstream run --source tests/data/sports2d_demo.mp4 --publish none --record rec/
    python tools/world_noise_stats.py --clip rec/track_0001_blazepose33.npz   # the man
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.body.body_model import BodyModel  # noqa: E402
from engines.diffusion.features import viewing_ray_rotation  # noqa: E402
from engines.refinement.losses import similarity_align  # noqa: E402
from engines.training.synthetic_views import WORLD_NOISE, ViewConfig, make_views, simulate_world_landmarks  # noqa: E402
from engines.training.train import MocapPoses  # noqa: E402

CLIP_TRACK = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"
LIMB_POINTS = [11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
BONES = [(11, 13), (12, 14), (13, 15), (14, 16), (23, 25), (24, 26), (25, 27), (26, 28)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="mocap dataset .npz (for the simulated models)")
    p.add_argument("--clip", nargs="*", metavar="TRACK.npz",
                   help="real landmarks instead: these recorded tracks (default: the bundled walker's)")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--draws", type=int, default=16, help="landmark draws per body for the bone-length spread")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.clip is not None:
        for track in args.clip or [CLIP_TRACK]:
            clip_stats(Path(track))
        return 0
    if not args.data:
        p.error("--data is needed for the simulated error models (or --clip for the real landmarks)")
    body = BodyModel.load()
    g = torch.Generator().manual_seed(args.seed)
    views = make_views(body, MocapPoses(args.data, heldout=True).batch(args.frames, g), ViewConfig(), g)
    true = views.keypoints_cam
    seen = true[:, [23, 24]]
    ray = (seen[..., :2] / seen[..., 2:]).mean(1)
    # The truth in the landmarks' frame (the ray through the hips, origin between them).
    truth = (true - true[:, [23, 24]].mean(1, keepdim=True)) @ viewing_ray_rotation(ray)
    print(f"{'model':8} {'PA-MPJPE 12 limb points mm':>27} {'bone length spread % (median)':>30}")
    for name, noise in WORLD_NOISE.items():
        gen = torch.Generator().manual_seed(args.seed + 100)
        wl = simulate_world_landmarks(true, gen, noise)
        ok = wl.abs().sum((1, 2)) > 0  # dropouts are zeros
        a, t = wl[ok][:, LIMB_POINTS], truth[ok][:, LIMB_POINTS]
        aligned = similarity_align(a, t, torch.ones(a.shape[:2]))
        pa = 1000 * (aligned - t).norm(dim=-1).mean().item()
        sub = true[: min(200, len(true))]
        draws = torch.stack([simulate_world_landmarks(sub, gen, noise) for _ in range(args.draws)])  # (D, B, 33, 3)
        keep = draws.abs().sum((2, 3)) > 0
        spreads = []
        for i, j in BONES:
            length = (draws[..., i, :] - draws[..., j, :]).norm(dim=-1)  # (D, B)
            for b in range(length.shape[1]):
                lb = length[keep[:, b], b]
                spreads.append((lb.std() / lb.mean()).item())
        print(f"{name:8} {pa:27.1f} {100 * torch.tensor(spreads).median().item():30.1f}")
    return 0


def autocorrelation(runs: list[np.ndarray], lag: int) -> float:
    """The lag-``lag`` autocorrelation of a series given as runs of consecutive frames, each
    about its own mean, pooled (one run: the plain autocorrelation)."""
    num = den = 0.0
    for x in runs:
        x = x - x.mean()
        num += float((x[:-lag] * x[lag:]).sum())
        den += float((x * x).sum())
    return num / den


def clip_stats(track: Path) -> None:
    """Bone-length error of the real world landmarks of ``track``, and its correlation over frames."""
    data = np.load(track)
    world, frames = data["world_landmarks"], data["frame_index"]
    runs = [r for r in np.split(np.arange(len(frames)), np.nonzero(np.diff(frames) != 1)[0] + 1) if len(r) >= 12]
    if not runs:
        raise SystemExit(f"{track}: no run of 12 consecutive frames; the correlations need one")
    lags = (1, 2, 5, 10)
    print(f"{track.name}: {len(frames)} frames, runs of consecutive frames used: {[len(r) for r in runs]}")
    print(f"{'bone':>8} {'length spread %':>16} " + " ".join(f"{'lag ' + str(k):>7}" for k in lags))
    rows = []
    for i, j in BONES:
        length = np.linalg.norm(world[:, i] - world[:, j], axis=-1)
        error = length / np.median(length) - 1  # the truth is constant: all of it is error
        rows.append([100 * error.std()] + [autocorrelation([error[r] for r in runs], k) for k in lags])
        print(f"{i:>3}-{j:<4} {rows[-1][0]:16.1f} " + " ".join(f"{v:7.2f}" for v in rows[-1][1:]))
    med = np.median(np.array(rows), axis=0)
    print(f"{'median':>8} {med[0]:16.1f} " + " ".join(f"{v:7.2f}" for v in med[1:]))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Accuracy of live mode as it runs: the real lift and refine stages, frame by frame.

`python -m engines.refinement.evaluate` lifts a clip first and then fits it, which is the
method's accuracy; a live run passes each frame through `streamer.lift_stage.LiftStage` and
`streamer.refine_stage.RefineStage`, with what one hands the other (the lift's rotations and
condition, and the fit's first prior prediction made in the lift's network call). This
feeds the same held-out clips (`engines.refinement.evaluate.heldout_clips`: one random
virtual camera each, detector-like damage, simulated world landmarks by limbs) through those
stages built with the live defaults, one person per clip, and prints MPJPE, PA-MPJPE (mm) and
the acceleration error (mm/frame^2) of the published bodies.

    python tools/eval_live_stages.py [--seed 0] [--clips 8] [--max-frames 600] [--variants linked separate]

``linked``: as `smplstream run --mode live` builds the stages (`streamer.app.link_prior_calls`);
``separate``: the fit makes its own denoiser call. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def evaluate(variant: str, args) -> dict:
    """MPJPE, PA-MPJPE and acceleration error of ``variant``'s published bodies, frame-weighted."""
    from calibration.camera import Camera
    from engines.body.body_model import BodyModel
    from engines.refinement.evaluate import accel_error, heldout_clips
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import plan_run
    from engines.training.metrics import joint_errors
    from engines.training.synthetic_views import WORLD_NOISE, ViewConfig, make_sequence_views, simulate_world_landmarks
    from streamer.app import RunConfig, link_prior_calls
    from streamer.frames import Frame, Person
    from streamer.lift_stage import LiftStage
    from streamer.refine_stage import RefineStage

    body = BodyModel.load()
    plan = plan_run(RunConfig(source="eval"), "live")
    g, g_world = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)
    rows = []
    for name, poses, trans_w in heldout_clips(args.data, args.clips, args.max_frames):
        views = make_sequence_views(body, torch.from_numpy(poses), ViewConfig(), g, torch.from_numpy(trans_w))
        world = simulate_world_landmarks(views.keypoints_cam, g_world, WORLD_NOISE["limbs"])
        K = views.K[0].numpy().astype(np.float64)
        camera = Camera("pinhole", int(round(2 * K[0, 2])), int(round(2 * K[1, 2])), K, np.zeros(5))
        lift = LiftStage(camera, build_lifter(plan, body, seed=args.seed))
        refine = RefineStage(camera, build_refiner(plan, body), body)
        if variant == "linked":
            link_prior_calls(lift, refine)
        lift.start()
        refine.start()
        published = []
        for i in range(views.keypoints_px.shape[0]):
            person = Person(track_id=0, score=1.0, arrays={
                "keypoints_blazepose33": views.keypoints_px[i].numpy().astype(np.float32),
                "world_blazepose33": world[i].numpy().astype(np.float32)})
            out = refine.process(lift.process(Frame(i, None, 0.0, (camera.width, camera.height), persons=[person])))
            published += [] if out is None else [out.persons[0].arrays.get("joints")]
        published += [f.persons[0].arrays.get("joints") for f in refine.finish()]
        pred = [None] * len(published)
        for i, joints in enumerate(published):  # a frame too damaged to lift holds the last body
            pred[i] = joints if joints is not None else (pred[i - 1] if i else np.zeros((24, 3), np.float32))
        pred = torch.from_numpy(np.stack(pred))
        metrics = joint_errors(pred, views.joints_cam)
        metrics["accel_mm"] = accel_error(pred, views.joints_cam)
        rows.append((len(pred), metrics))
        print(f"{variant}: {name}: {len(pred)} frames", flush=True)
    n = sum(T for T, _ in rows)
    return {"frames": n, **{k: sum(T * m[k] for T, m in rows) / n for k in rows[0][1]}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "mocap.npz"), help="mocap dataset .npz (smplstream mocap-dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=600, help="frames in all, split over the clips")
    p.add_argument("--variants", nargs="+", choices=("linked", "separate"), default=["linked", "separate"])
    args = p.parse_args()
    if not Path(args.data).is_file():
        p.error(f"{args.data}: no mocap dataset; make it with `smplstream mocap-dataset ... --out {args.data}`")
    torch.set_num_threads(1)
    with torch.inference_mode():
        results = {v: evaluate(v, args) for v in args.variants}
    print(f"\n{'variant':<10}{'MPJPE':>8}{'PA-MPJPE':>10}{'accel':>8}{'frames':>8}")
    for v, r in results.items():
        print(f"{v:<10}{r['mpjpe_mm']:8.1f}{r['pa_mpjpe_mm']:10.1f}{r['accel_mm']:8.2f}{r['frames']:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

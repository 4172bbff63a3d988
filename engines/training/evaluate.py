"""Held-out evaluation of the lifter on motion it never trained on.

    python -m engines.training.evaluate --data mocap.npz [--weights W] [--frames 1000] [--json OUT]

Poses of the held-out actors (flagged in the dataset, e.g. HDM05 ``dg`` and CMU subject
007) are seen by the same random cameras and detector-like noise as in training, with a
fixed seed. For K = 1, 2, 4, 10, 50 denoising steps it reports, in mm on the 24 SMPL joints:
MPJPE (pelvis-aligned) and PA-MPJPE (after a similarity Procrustes fit), the 2D
reprojection error of the BlazePose keypoints (median over persons, pixels, 1280-pixel-wide images), and how the
spread of the N samples compares with the actual error (is the uncertainty calibrated?).
``--precision int8`` measures the int8 denoiser (ONNX Runtime) instead of the float32 reference.
``--keypoints clean`` gives the lifter noise-free keypoints (no jitter, outliers or drops),
``--keypoints coco17`` only the 17 COCO points of the detector-like ones.
``--world-landmarks`` also gives a network trained with them BlazePose-like world landmarks,
simulated from the true points by the training error model (``WorldLandmarkNoise``).
``--calibrate`` fits the spread temperature per K (error / raw spread, medians) on these
frames and writes it into the weights' JSON (with ``--precision int8``, the int8 denoiser's
own; a network that takes the world landmarks, run without ``--world-landmarks``, gets the
table of rows lifted from the 2D alone): run it on another ``--seed`` than the report.
The baseline is the training set's mean pose given the true global orientation and shape
(a generous baseline: it is told the heading).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix
from engines.lifting.lifter import Lifter, rotation_mean
from engines.run_engines import build_lifter
from engines.run_plan import PlanError, PlanOptions, RunPlan, plan_run
from engines.training.synthetic_views import WORLD_NOISE, ViewConfig, make_views, simulate_world_landmarks
from engines.training.metrics import joint_errors
from engines.training.train import MocapPoses


def reprojection_px(body: BodyModel, result, views) -> float:
    """Distance (px) between the lifted body's BlazePose keypoints and the noiseless
    projections of the true ones: per person the mean over points inside the image, then
    the median over persons (a few people filling the frame at under a metre dominate a mean)."""
    kp = body(result.poses.view(-1, 24, 3), result.betas, result.trans, keypoints="blazepose33").keypoints["blazepose33"]
    f = views.K[:, 0, 0][:, None, None]
    c = views.K[:, :2, 2][:, None]
    px = kp[..., :2] / kp[..., 2:].clamp(min=1e-3) * f + c
    W, H = views.image_size[:, 0:1], views.image_size[:, 1:2]
    clean = views.clean_px
    inside = (clean[..., 0] >= 0) & (clean[..., 0] < W) & (clean[..., 1] >= 0) & (clean[..., 1] < H)
    err = torch.where(inside, (px - clean).norm(dim=-1), torch.zeros_like(inside, dtype=px.dtype))
    per_person = err.sum(1) / inside.sum(1).clamp(min=1)
    return per_person[inside.any(1)].median().item()


def uncertainty_calibration(result, true_joints: torch.Tensor) -> dict[str, float]:
    """Compare each joint's predicted spread (root-relative) with its actual error."""
    err = ((result.joints - result.joints[:, :1]) - (true_joints - true_joints[:, :1])).norm(dim=-1)[:, 1:]
    std = result.joints_std[:, 1:]
    e, s = err.flatten().numpy(), std.flatten().numpy()
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    spearman = float(np.corrcoef(rank(e), rank(s))[0, 1])
    # If calibrated, the truth is "one more sample": its distance from the mean is distributed
    # like the samples' own distances, so the ratio of medians is near 1.
    return {"error_over_spread": float(np.median(e) / max(np.median(s), 1e-9)), "spearman": spearman,
            "within_1_spread": float((e <= s).mean()), "within_2_spread": float((e <= 2 * s).mean())}


def mean_pose_baseline(body: BodyModel, data: MocapPoses, views, count: int = 20000) -> dict[str, float]:
    g = torch.Generator().manual_seed(7)
    poses = data.batch(count, g)
    R = axis_angle_to_matrix(poses.view(-1, 24, 3))
    mean = rotation_mean(R.transpose(0, 1))  # (24, 3, 3)
    B = views.poses_cam.shape[0]
    pose = mean[None].expand(B, -1, -1, -1).clone()
    pose[:, 0] = views.poses_cam[:, 0]  # the true global orientation
    joints = body(pose, views.betas).joints
    return joint_errors(joints, views.joints_cam - views.trans_cam[:, None])


def lift_in_batches(lifter: Lifter, keypoints: torch.Tensor, batch: int, world_landmarks: torch.Tensor | None = None):
    """``lifter.lift`` over ``batch`` persons at a time, results concatenated. A live frame
    holds a few persons; int8's dynamic quantisation scales activations per call, so one
    call over a thousand persons would let the most extreme of them set everyone's scale."""
    from engines.lifting.lifter import LiftResult

    parts = [lifter.lift(keypoints[i:i + batch], None if world_landmarks is None else world_landmarks[i:i + batch])
             for i in range(0, keypoints.shape[0], batch)]
    def joined(values):
        if all(isinstance(v, torch.Tensor) for v in values):
            return torch.cat(values)
        return values[0]  # None or a flag, the same for every call

    return LiftResult(**{f.name: joined([getattr(r, f.name) for r in parts]) for f in dataclasses.fields(LiftResult)})


#: The keypoints the lifter is given (``--keypoints``): the detector-like damage of training,
#: none at all, or the detector-like ones reduced to the 17 COCO points.
KEYPOINT_CONDITIONS = {
    "detector": ViewConfig(),
    "clean": ViewConfig(jitter_frac=(0.0, 0.0), outlier_prob=0.0, drop_prob_max=0.0, limb_drop_prob=0.0,
                        coco_only_prob=0.0),
    "coco17": ViewConfig(coco_only_prob=1.0),
}


def write_spread_temperature(weights: str | None, temperature: dict[int, float], precision: str = "fp32",
                             landmarks: bool = True) -> None:
    """Store the per-K spread temperature in the weights' JSON under the key of ``precision``
    and of rows lifted with or without the world ``landmarks``
    (:func:`engines.diffusion.weights.temperature_key`: ``spread_temperature``,
    ``spread_temperature_2d``, ``spread_temperature_int8``, ``spread_temperature_int8_2d``)."""
    from engines.diffusion.weights import DEFAULT_WEIGHTS, temperature_key

    path = Path(weights or DEFAULT_WEIGHTS).with_suffix(".json")
    info = json.loads(path.read_text())
    key = temperature_key(precision, landmarks)
    info[key] = {str(k): round(float(v), 3) for k, v in sorted(temperature.items())}
    path.write_text(json.dumps(info, indent=2))
    print(f"wrote {key} {info[key]} to {path}")


def lift_plan(args: argparse.Namespace, steps: int) -> RunPlan:
    """The run plan of the lift evaluated at ``steps`` K: fp32 on eager torch (the
    reference), or ``--precision int8`` on ONNX Runtime as live runs take it."""
    backend = "onnxruntime" if args.precision == "int8" else "torch"
    return plan_run(PlanOptions(refine=False, lift_steps=steps, lift_samples=args.samples, backend=backend,
                                denoiser_precision=args.precision, weights=args.weights, threads=args.threads,
                                world_landmarks=args.world_landmarks), "offline")


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    body = BodyModel.load()
    heldout = MocapPoses(args.data, heldout=True)
    train = MocapPoses(args.data)
    g = torch.Generator().manual_seed(args.seed)
    views = make_views(body, heldout.batch(args.frames, g), KEYPOINT_CONDITIONS[args.keypoints], g)
    # Drawn from their own generator, so the views are the same with and without them.
    world = simulate_world_landmarks(views.keypoints_cam, torch.Generator().manual_seed(args.seed + 100),
                                     WORLD_NOISE[args.world_noise]) \
        if args.world_landmarks else None
    plans = {K: lift_plan(args, K) for K in args.steps}
    report = {"frames": args.frames, "samples": plans[args.steps[0]].lift_samples, "heldout_pool": len(heldout),
              "keypoints": args.keypoints, "world_landmarks": args.world_landmarks,
              "baseline_mean_pose": mean_pose_baseline(body, train, views), "steps": {}}
    for K, plan in plans.items():
        lifter = build_lifter(plan, body, seed=args.seed, mirror_half=not args.no_mirror,
                              spread_scale=1.0 if args.calibrate else None, antithetic=not args.independent_noise)
        if args.world_landmarks and not lifter.uses_world_landmarks:
            raise SystemExit("evaluate-lifter: --world-landmarks, but these weights were trained without them")
        t0 = time.perf_counter()
        result = lift_in_batches(lifter, views.keypoints, args.batch, world)
        elapsed = time.perf_counter() - t0
        valid = result.valid
        row = joint_errors(result.joints[valid], views.joints_cam[valid])
        row["reprojection_px"] = reprojection_px(body, result, views)
        row.update(uncertainty_calibration(result, views.joints_cam))
        row["translation_err_m"] = (result.trans - views.trans_cam).norm(dim=-1).median().item()
        row["valid"] = valid.float().mean().item()
        row["ms_per_person"] = elapsed / args.frames * 1000
        report["steps"][K] = row
        print(f"K={K:>2}  MPJPE {row['mpjpe_mm']:6.1f}  PA-MPJPE {row['pa_mpjpe_mm']:6.1f} mm  "
              f"reproj {row['reprojection_px']:5.1f} px  trans {row['translation_err_m']:.3f} m  "
              f"err/spread {row['error_over_spread']:.2f}  spearman {row['spearman']:.2f}", flush=True)
    if args.calibrate:
        # A network that takes the landmarks, lifting without them: the table for that case.
        landmarks = args.world_landmarks or not lifter.uses_world_landmarks
        write_spread_temperature(args.weights, {K: row["error_over_spread"] for K, row in report["steps"].items()},
                                 args.precision, landmarks)
    b = report["baseline_mean_pose"]
    print(f"mean-pose baseline (true heading and shape): MPJPE {b['mpjpe_mm']:.1f}  PA-MPJPE {b['pa_mpjpe_mm']:.1f} mm")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate-lifter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", help="default: the bundled denoiser")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--samples", type=int, help="samples per person N (default: a run's, engines.run_defaults)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 10, 50])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mirror", action="store_true",
                   help="draw every sample from the view itself (default: half from its mirror image)")
    p.add_argument("--independent-noise", action="store_true",
                   help="start every sample from its own noise (default: pairs of opposite noise, "
                        "engines.diffusion.sampler.draw_noise)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8,
                   help="persons per lift call (default 8, a busy live frame's worth)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: the denoiser with int8 weights on ONNX Runtime (as live mode runs it); "
                        "default fp32 eager torch, the reference")
    p.add_argument("--keypoints", choices=sorted(KEYPOINT_CONDITIONS), default="detector",
                   help="detector (default): detector-like noise as in training; clean: noise-free; "
                        "coco17: only the 17 COCO points")
    p.add_argument("--world-noise", choices=sorted(WORLD_NOISE), default="points",
                   help="the simulated world landmarks' error model (synthetic_views.WORLD_NOISE)")
    p.add_argument("--world-landmarks", action="store_true",
                   help="give a network trained with them simulated world landmarks too")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the raw spread and write the per-K temperature into the weights' JSON")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    try:
        report = evaluate(args)
    except PlanError as exc:
        raise SystemExit(f"evaluate-lifter: error: {exc}") from None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

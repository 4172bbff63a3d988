"""Multi-view fitting on held-out mocap: the same clips seen by 1, 2 and 4 calibrated cameras.

    python -m engines.refinement.evaluate_multiview --data mocap.npz [--clips 8] [--max-frames 600]
        [--cameras 1 2 4] [--json OUT]

Each held-out clip (actors never trained on) gets one random body shape and a rig of
cameras on a circle around the clip's centre (5 m away, 0.5 m above the pelvis, 60 degree
field of view, 1280 x 720): camera 0 at a random heading, the others spread evenly (two
cameras 90 degrees apart, four 90 degrees apart all round). Every camera's keypoints are
damaged per frame like a detector's (as in training); the world landmarks are simulated for
every camera (``simulate_world_landmarks``, each camera's in its own frame; camera 0's from
a seed stream of their own, so they do not change with the rig). The per-frame lift sees
camera 0 alone; the fit (offline settings, the run plan's) then sees every camera of the
rig: with landmarks, once with camera 0's alone and once with every camera's. With more than one
camera the lift's position is first moved onto the hips triangulated from all views (the
lift cannot know its depth; the fit's robust terms would count a far-off view as outliers).

Reported on the 24 SMPL joints, in the rig's frame (camera 0's), mm: MPJPE (pelvis-aligned),
PA-MPJPE, the absolute error of the joints (no alignment: position included) and of the
pelvis alone, and the acceleration error.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace

import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix
from engines.run_engines import build_lifter, build_prior, build_refiner
from engines.run_plan import PlanOptions, plan_run
from engines.training.metrics import joint_errors
from engines.training.synthetic_views import WORLD_NOISE, ViewConfig, observe_points, simulate_world_landmarks

from .evaluate import accel_error, heldout_clips, joints_of, lift_sequence
from .guided import CameraParams
from .multiview import RigView, place_on_triangulated_hips
from .online import Observation, refine_sequence

IMAGE = (1280.0, 720.0)
HFOV_DEG = 60.0
DISTANCE = 5.0  # metres from the clip's centre
HEIGHT = 0.5  # metres above the clip's mean pelvis


def look_at(position: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World-to-camera rotation (3, 3) of a camera at ``position`` looking at ``target``, its
    image upright (SMPL world: y up; camera: x right, y down, z forward)."""
    z = target - position
    z = z / z.norm()
    x = torch.linalg.cross(torch.tensor([0.0, -1.0, 0.0]), z)
    x = x / x.norm()
    return torch.stack([x, torch.linalg.cross(z, x), z])


def rig_around(centre: torch.Tensor, cameras: int, heading: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``cameras`` poses ``(R_cw, position)`` on a circle around ``centre`` (world, metres),
    90 degrees apart from ``heading`` on (radians)."""
    out = []
    for k in range(cameras):
        a = heading + k * math.pi / 2
        pos = centre + torch.tensor([DISTANCE * math.sin(a), HEIGHT, DISTANCE * math.cos(a)])
        out.append((look_at(pos, centre), pos))
    return out


def intrinsics() -> torch.Tensor:
    f = IMAGE[0] / 2 / math.tan(math.radians(HFOV_DEG) / 2)
    return torch.tensor([[f, 0, IMAGE[0] / 2], [0, f, IMAGE[1] / 2], [0, 0, 1.0]])


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    body = BodyModel.load()
    options = PlanOptions(backend="lift=auto,refine=torch", weights=args.weights, threads=args.threads,
                          fit_changes=json.loads(args.settings) if args.settings else None)
    lift_plan = plan_run(replace(options, refine=False), "offline")
    fit_plan = plan_run(options, "offline")
    lifter = build_lifter(lift_plan, body, seed=args.seed)
    prior = build_prior(fit_plan)
    g = torch.Generator().manual_seed(args.seed)
    g_world = torch.Generator().manual_seed(args.seed + 1)
    world_noise = replace(WORLD_NOISE[args.world_noise], frame_correlation=args.world_correlation)
    g_views_world = torch.Generator().manual_seed(args.seed + 2)  # the other cameras' landmarks
    cfg = ViewConfig()
    K = intrinsics()
    results: dict[str, list] = {}
    for name, poses, trans_w in heldout_clips(args.data, args.clips, args.max_frames):
        T = poses.shape[0]
        poses_t = torch.from_numpy(poses).float()
        R = axis_angle_to_matrix(poses_t.view(T, 24, 3))
        betas = (torch.randn(1, 10, generator=g) * cfg.betas_sd).clamp(-3, 3).expand(T, -1).contiguous()
        out = body(R, betas, torch.from_numpy(trans_w).float(), keypoints="blazepose33")
        joints_w, kp_w = out.joints, out.keypoints["blazepose33"]
        centre = joints_w[:, 0].mean(0)
        heading = float(torch.rand(1, generator=g)) * 2 * math.pi
        rig = rig_around(centre, max(args.cameras), heading)
        # Everything in camera 0's frame: the rig's frame.
        R0, p0 = rig[0]
        to_ref = lambda X: (X - p0) @ R0.T  # noqa: E731
        true = to_ref(joints_w)
        kp_ref = to_ref(kp_w)
        poses_of_views = []  # per camera: (R, t) reference -> camera
        for Rc, pc in rig:
            Rv = Rc @ R0.T
            poses_of_views.append((Rv, Rc @ (p0 - pc)))
        observed = [observe_points(kp_ref @ Rv.T + tv, K, IMAGE, cfg, g) for Rv, tv in poses_of_views]
        world = simulate_world_landmarks(kp_ref, g_world, world_noise)
        # Every other camera's landmarks, each from its own crop (its own frame), always all
        # of the largest rig so the stream does not depend on the rig fitted.
        views_world = torch.stack([simulate_world_landmarks(kp_ref @ Rv.T + tv, g_views_world, world_noise)
                                   for Rv, tv in poses_of_views[1:]], 1) if len(rig) > 1 else None
        normalised = observed[0].clone()
        normalised[..., :2] = (observed[0][..., :2] - K[:2, 2]) / K[0, 0] * (observed[0][..., 2:] > 0)
        for use_world in (False, True):
            w = world if use_world else None
            x, trans, cond, spread = lift_sequence(lifter, normalised, w, False)
            tag = " + world" if use_world else ""
            pred = joints_of(body, x, trans)
            results.setdefault(f"lift (camera 0){tag}", []).append((T, metrics(pred, true)))
            # With landmarks and several cameras: once with camera 0's alone, once with every camera's.
            fits = [(V, every) for V in args.cameras for every in (False, True) if not every or (use_world and V > 1)]
            for V, every in fits:
                views = tuple(RigView(K, None, "pinhole", Rv, tv) for Rv, tv in poses_of_views[1:V])
                camera = CameraParams(K=K, views=views)
                start = trans
                if V > 1:
                    start = place_on_triangulated_hips(body, x, trans, observed[:V],
                                                        [(K, Rv, tv) for Rv, tv in poses_of_views[:V]])
                online = build_refiner(fit_plan, body, prior)
                others = torch.stack(observed[1:V], 1) if V > 1 else None
                others_world = views_world[:, :V - 1] if every else None

                def observation(i, start=start, w=w, others=others, others_world=others_world, spread=spread):
                    return {0: Observation(x[i], start[i], cond[i], observed[0][i], None if w is None else w[i],
                                           None if others is None else others[i],
                                           None if others_world is None else others_world[i], x_std=spread[i])}

                t0 = time.process_time()
                fitted = refine_sequence(online, range(T), observation, camera)
                cpu = (time.process_time() - t0) / T * 1000
                fx = torch.stack([e[0] for e in fitted])
                ft = torch.stack([e[1] for e in fitted])
                m = metrics(joints_of(body, fx, ft), true)
                m["cpu_ms_per_frame"] = cpu
                label = f"fit, {V} camera{'s' if V > 1 else ''}{tag}{' (every camera)' if every else ''}"
                results.setdefault(label, []).append((T, m))
        print(f"{name}: {T} frames", flush=True)

    report = {"frames": sum(T for T, _ in next(iter(results.values()))), "cameras": args.cameras, "methods": {}}
    print(f"\n{'method':<43}{'MPJPE':>8}{'PA-MPJPE':>10}{'abs':>8}{'pelvis':>8}{'accel':>8}{'CPU ms':>8}")
    for label, rows in results.items():
        n = sum(T for T, _ in rows)
        agg = {k: sum(T * m[k] for T, m in rows) / n for k in rows[0][1]}
        report["methods"][label] = agg
        cpu = f"{agg['cpu_ms_per_frame']:8.1f}" if "cpu_ms_per_frame" in agg else f"{'':>8}"
        print(f"{label:<43}{agg['mpjpe_mm']:8.1f}{agg['pa_mpjpe_mm']:10.1f}{agg['abs_mm']:8.1f}"
              f"{agg['pelvis_mm']:8.1f}{agg['accel_mm']:8.2f}{cpu}", flush=True)
    return report


def metrics(pred: torch.Tensor, true: torch.Tensor) -> dict:
    """MPJPE and PA-MPJPE (:func:`joint_errors`), the absolute joint and pelvis errors in the
    rig's frame, and the acceleration error; mm."""
    m = joint_errors(pred, true)
    m["abs_mm"] = (pred - true).norm(dim=-1).mean().item() * 1000
    m["pelvis_mm"] = (pred[:, 0] - true[:, 0]).norm(dim=-1).mean().item() * 1000
    m["accel_mm"] = accel_error(pred, true)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate-multiview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="mocap dataset .npz (engines.mocap.dataset)")
    p.add_argument("--weights", help="denoiser weights (default: the bundled ones)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=600, help="frames in all, split over the clips")
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4], help="rig sizes to fit with (default 1 2 4)")
    p.add_argument("--settings", help="FitSettings overrides as JSON, e.g. '{\"prior_spread\": 0}'")
    p.add_argument("--world-noise", choices=sorted(WORLD_NOISE), default="points",
                   help="the simulated landmarks' error model (default 'points', as the rig's figures in "
                        "docs/multi-camera.md were measured; evaluate-refinement's default is 'limbs')")
    p.add_argument("--world-correlation", type=float, default=0.0, metavar="RHO",
                   help="their errors' lag-one correlation over frames (default 0; the real ones': 0.67)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    if min(args.cameras) < 1 or max(args.cameras) > 4:
        p.error("--cameras: between 1 and 4 cameras")
    report = evaluate(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

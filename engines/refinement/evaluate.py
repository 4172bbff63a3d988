"""Temporal evaluation of refinement on held-out mocap clips with noisy synthetic keypoints.

    python -m engines.refinement.evaluate --data mocap.npz [--clips 8] [--max-frames 600]
        [--lags 0 2 5 10] [--json OUT]

Each held-out clip (actors never trained on) is seen by one random virtual camera with one
random body shape, and damaged per frame like a detector (``make_sequence_views``); the
landmark network's world landmarks are simulated from the true body with their own error
model (``simulate_world_landmarks``: by default whole bones turned, most in depth, limbs
flipped in depth now and then, scale and rotation noise, dropouts, every error persisting
over frames as the real landmarks' do: ``--world-noise``, ``--world-correlation``). The
same per-frame lifts then go through: nothing (per-frame lifting), the keypoint fit (``fitting.KeypointFitter``) at
each lag L with and without the world landmarks, the earlier score guidance
(``guided.GuidedRefiner``, ``--guided``), a One-Euro filter and a Kalman/RTS smoother. Reported on the 24 SMPL joints, in mm: MPJPE (pelvis-aligned),
PA-MPJPE, and the acceleration error (mm/frame^2: mean distance between predicted and true
second differences of the pelvis-aligned joints, as HMR papers report), plus the time the
refinement takes per frame.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix
from engines.diffusion.denoiser import BETAS, X_DIM, pose_vector, rotations_of
from engines.lifting.lifter import Lifter
from engines.run_defaults import REFINE_LAG
from engines.run_engines import build_lifter, build_prior, build_refiner
from engines.run_plan import PlanError, PlanOptions, RunPlan, plan_run
from engines.training.evaluate import lift_in_batches
from engines.training.metrics import joint_errors
from engines.training.synthetic_views import MEASURED_FRAME_CORRELATION, WORLD_NOISE, ViewConfig, make_sequence_views, simulate_world_landmarks

from .baselines import kalman_rts, one_euro
from .guided import CameraParams, GuidedRefiner
from .online import Observation, OnlineRefiner, refine_sequence
from .settings import GuidanceSettings


def heldout_clips(path: str, count: int, max_frames: int, min_length: int = 40) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Up to ``count`` held-out clips (name, poses (T, 72), trans (T, 3)), unmirrored, spread
    over the held-out list, each cut to ``max_frames // count`` frames."""
    with np.load(path) as d:
        ids = [c for c in np.nonzero(d["clip_heldout"])[0] if not d["clip_mirrored"][c] and d["clip_length"][c] >= min_length]
        pick = [ids[i] for i in np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int)]
        per = max(min_length, max_frames // max(len(pick), 1))
        out = []
        for c in pick:
            s, n = int(d["clip_start"][c]), min(int(d["clip_length"][c]), per)
            out.append((str(d["clip_names"][c]), d["poses"][s:s + n].copy(), d["trans"][s:s + n].copy()))
    return out


def accel_error(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean acceleration error (mm/frame^2) of pelvis-aligned joints (T, J, 3), metres in."""
    p, t = pred - pred[:, :1], true - true[:, :1]
    ap = p[2:] - 2 * p[1:-1] + p[:-2]
    at = t[2:] - 2 * t[1:-1] + t[:-2]
    return (ap - at).norm(dim=-1).mean().item() * 1000


def x_from_lift(poses: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    return pose_vector(axis_angle_to_matrix(poses.view(-1, 24, 3)), betas)


def joints_of(body: BodyModel, x: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    return body(rotations_of(x), x[:, BETAS], trans).joints


@torch.no_grad()
def run_online(refiner: OnlineRefiner, x, trans, cond, kp_px, camera: CameraParams, copies: int = 1, world=None,
               spread=None):
    """Feed a sequence frame by frame (``copies`` identical tracks, for timing); returns the
    emitted (x, trans) of track 0 in order and the seconds per frame of refinement."""
    T = x.shape[0]

    def observations(i: int) -> dict:
        obs = Observation(x[i], trans[i], cond[i], kp_px[i], None if world is None else world[i],
                          x_std=None if spread is None else spread[i])
        return {k: obs for k in range(copies)}

    t0 = time.perf_counter()
    out = refine_sequence(refiner, range(T), observations, camera)
    spent = time.perf_counter() - t0
    return torch.stack([e[0] for e in out]), torch.stack([e[1] for e in out]), spent / T


def smooth_baseline(fn, x: torch.Tensor, trans: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.cat([x, trans], dim=-1).double().numpy()
    s = torch.from_numpy(fn(v, **kw)).float()
    x = s[:, :X_DIM]
    return pose_vector(rotations_of(x), x[:, BETAS]), s[:, X_DIM:]  # back onto rotations


def lift_sequence(lifter: Lifter, keypoints: torch.Tensor, world: torch.Tensor | None, int8: bool):
    """Per-frame lift of a clip: ``x`` (T, 154), ``trans`` (T, 3) (frames too damaged to lift
    hold the last estimate), the denoiser condition (T, C) the fit's prior takes and the
    lift's angular spread per joint (T, 24)."""
    # int8 scales activations per call: lift frame by frame, as a live run does.
    lift = lift_in_batches(lifter, keypoints, 1, world) if int8 else lifter.lift(keypoints, world)
    x = x_from_lift(lift.poses, lift.betas)
    trans, spread = lift.trans.clone(), lift.poses_std.clone()
    for i in range(1, len(x)):
        if not lift.valid[i]:
            x[i], trans[i], spread[i] = x[i - 1], trans[i - 1], spread[i - 1]
    return x, trans, lifter.condition(keypoints, world), spread


def evaluation_plans(args: argparse.Namespace) -> tuple[RunPlan, dict[int, RunPlan]]:
    """The run plans evaluated: the lifts' (an offline run's, unless ``--lift-steps`` /
    ``--lift-samples``) and the fit's at each lag, L = 0 as live runs fit and the others as
    offline runs do, with ``--settings`` changing the fit's. fp32: the lift on ONNX Runtime
    and the fit's prior on eager torch; int8: both on ONNX Runtime, as live mode runs them."""
    int8 = args.precision == "int8"
    options = PlanOptions(backend="onnxruntime" if int8 else "lift=auto,refine=torch", denoiser_precision=args.precision,
                          weights=args.weights, threads=args.threads, lift_steps=args.lift_steps,
                          lift_samples=args.lift_samples, fit_changes=json.loads(args.settings) if args.settings else None)
    lifts = plan_run(replace(options, refine=False), "offline")
    fits = {L: plan_run(replace(options, lift_steps=lifts.lift_steps, refine_lag=L), "live" if L == 0 else "offline")
            for L in args.lags}
    return lifts, fits


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    body = BodyModel.load()
    int8 = args.precision == "int8"
    lift_plan, fit_plans = evaluation_plans(args)
    lifter = build_lifter(lift_plan, body, seed=args.seed)
    # The fit's prior as runs build it; one network for every lag and the guidance.
    model = build_prior(fit_plans[args.lags[0]])
    guided_for = {L: GuidedRefiner(model, body, GuidanceSettings.for_lag(L)) for L in args.guided}
    g = torch.Generator().manual_seed(args.seed)
    g_world = torch.Generator().manual_seed(args.seed + 1)  # apart, so the views stay as they were
    clips = heldout_clips(args.data, args.clips, args.max_frames)
    world_noise = replace(WORLD_NOISE[args.world_noise], frame_correlation=args.world_correlation)
    methods: dict[str, list] = {}
    timing: dict[str, list[float]] = {}

    def add(name, pred, true, T):
        m = joint_errors(pred, true)
        m["accel_mm"] = accel_error(pred, true)
        methods.setdefault(name, []).append((T, m))

    for name, poses, trans_w in clips:
        views = make_sequence_views(body, torch.from_numpy(poses), ViewConfig(), g, torch.from_numpy(trans_w))
        T = poses.shape[0]
        kp = views.keypoints_px
        camera = CameraParams(K=views.K[0])
        true = views.joints_cam
        world = simulate_world_landmarks(views.keypoints_cam, g_world, world_noise)
        # 2D only, and with the world landmarks: in the lift too when the network takes them.
        x, trans, cond, spread = lift_sequence(lifter, views.keypoints, None, int8)
        add("per-frame lift", joints_of(body, x, trans), true, T)
        xw, transw, condw, spreadw = x, trans, cond, spread
        if lifter.uses_world_landmarks:
            xw, transw, condw, spreadw = lift_sequence(lifter, views.keypoints, world, int8)
            add("per-frame lift + world", joints_of(body, xw, transw), true, T)
        runs = []
        for L, plan in fit_plans.items():
            runs.append((f"fit L={L}", build_refiner(plan, body, model, context=args.context), None))
            runs.append((f"fit L={L} + world", build_refiner(plan, body, model, context=args.context), world))
        runs += [(f"guidance L={L}", OnlineRefiner(guided_for[L], lag=L, context=args.context), None) for L in args.guided]
        for label, online, w in runs:
            sx, st, sc, ss = (x, trans, cond, spread) if w is None else (xw, transw, condw, spreadw)
            rx, rt, sec = run_online(online, sx, st, sc, kp, camera, world=w, spread=ss)
            add(label, joints_of(body, rx, rt), true, T)
            timing.setdefault(label, []).append(sec)
        for mc in args.euro_cutoffs:
            sx, st = smooth_baseline(one_euro, x, trans, fps=30.0, min_cutoff=mc, beta=args.euro_beta)
            add(f"One-Euro fc={mc:g}", joints_of(body, sx, st), true, T)
        for q in args.kalman_q:
            sx, st = smooth_baseline(kalman_rts, x, trans, process_var=q, measurement_var=args.kalman_r)
            add(f"Kalman/RTS q={q:g}", joints_of(body, sx, st), true, T)
        print(f"{name}: {T} frames", flush=True)

    report = {"clips": [c[0] for c in clips], "frames": sum(c[1].shape[0] for c in clips),
              "settings": {L: plan.fit_settings().to_dict() for L, plan in fit_plans.items()}, "context": args.context,
              "methods": {}}
    print(f"\n{'method':<26}{'MPJPE':>8}{'PA-MPJPE':>10}{'accel':>8}{'ms/frame':>10}")
    for label, rows in methods.items():
        n = sum(T for T, _ in rows)
        agg = {k: sum(T * m[k] for T, m in rows) / n for k in rows[0][1]}
        if label in timing:
            agg["ms_per_frame"] = 1000 * float(np.mean(timing[label]))
        report["methods"][label] = agg
        ms = f"{agg['ms_per_frame']:10.1f}" if "ms_per_frame" in agg else f"{'':>10}"
        print(f"{label:<26}{agg['mpjpe_mm']:8.1f}{agg['pa_mpjpe_mm']:10.1f}{agg['accel_mm']:8.2f}{ms}", flush=True)

    if args.timing_tracks:
        name, poses, trans_w = clips[0]
        views = make_sequence_views(body, torch.from_numpy(poses), ViewConfig(), g, torch.from_numpy(trans_w))
        x, trans, cond, spread = lift_sequence(lifter, views.keypoints, None, int8)
        camera = CameraParams(K=views.K[0])
        report["timing_ms"] = {}
        for L, plan in fit_plans.items():
            for n in args.timing_tracks:
                t0 = time.process_time()
                _, _, sec = run_online(build_refiner(plan, body, model, context=args.context), x, trans, cond,
                                       views.keypoints_px, camera, copies=n, spread=spread)
                cpu = (time.process_time() - t0) / x.shape[0] * 1000
                report["timing_ms"][f"L={L} tracks={n}"] = {"wall_ms": sec * 1000, "cpu_ms": cpu}
                print(f"timing L={L:<3} tracks={n}: {sec * 1000:6.1f} ms wall, {cpu:6.1f} ms CPU per frame", flush=True)
    return report


def plot_tradeoff(report: dict, path: str) -> None:
    """PA-MPJPE against acceleration error (log scale) of every method, as a PNG (OpenCV)."""
    import cv2

    w, h, m = 900, 520, 70
    img = np.full((h, w, 3), 255, np.uint8)
    rows = report["methods"]
    ax = np.log10([max(r["accel_mm"], 1e-3) for r in rows.values()])
    ay = np.array([r["pa_mpjpe_mm"] for r in rows.values()])
    x_lo, x_hi = ax.min() - 0.1, ax.max() + 0.1
    y_lo, y_hi = ay.min() - 2, ay.max() + 2
    px = lambda v: int(m + (v - x_lo) / (x_hi - x_lo) * (w - 2 * m))  # noqa: E731
    py = lambda v: int(h - m - (v - y_lo) / (y_hi - y_lo) * (h - 2 * m))  # noqa: E731
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for e in range(int(np.floor(x_lo)), int(np.ceil(x_hi)) + 1):
        for k in (1, 2, 5):
            v = e + np.log10(k)
            if x_lo <= v <= x_hi:
                cv2.line(img, (px(v), h - m), (px(v), h - m + 5), (0, 0, 0), 1)
                cv2.putText(img, f"{10 ** v:g}", (px(v) - 10, h - m + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for v in np.arange(np.ceil(y_lo), y_hi, max(1, round((y_hi - y_lo) / 8))):
        cv2.putText(img, f"{v:.0f}", (m - 35, py(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.line(img, (m - 5, py(v)), (m, py(v)), (0, 0, 0), 1)
    colours = {"per-frame": (0, 0, 200), "fit": (200, 80, 0), "guidance": (0, 120, 200), "One-Euro": (0, 150, 0),
               "Kalman": (150, 0, 150)}
    for i, ((label, _), x, y) in enumerate(zip(rows.items(), ax, ay)):
        colour = next((c for k, c in colours.items() if label.startswith(k)), (0, 0, 0))
        cv2.circle(img, (px(x), py(y)), 5, colour, -1, cv2.LINE_AA)
        dy = -8 if i % 2 else 16  # alternate above and below: neighbours' labels do not overlap
        cv2.putText(img, label, (px(x) + 7, py(y) + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    cv2.putText(img, "acceleration error, mm/frame^2 (log)", (w // 2 - 150, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"PA-MPJPE (mm) vs acceleration error, {report['frames']} held-out frames", (m, 40),
                cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(path, img)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate-refinement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="mocap dataset .npz (engines.mocap.dataset)")
    p.add_argument("--weights", help="denoiser weights (default: the bundled ones)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=600, help="frames in all, split over the clips")
    p.add_argument("--lags", type=int, nargs="+", default=[REFINE_LAG["live"], REFINE_LAG["offline"]])
    p.add_argument("--guided", type=int, nargs="*", default=[5],
                   help="lags at which to run the earlier score guidance too (GuidedRefiner), for comparison")
    p.add_argument("--context", type=int, default=4, help="emitted frames kept as fixed context")
    p.add_argument("--settings", help="FitSettings overrides as JSON, e.g. '{\"prior_sigma\": 0.2}'")
    p.add_argument("--lift-steps", type=int, help="K of the per-frame lifts (default: an offline run's)")
    p.add_argument("--lift-samples", type=int, help="N of the per-frame lifts (default: a run's)")
    p.add_argument("--euro-cutoffs", type=float, nargs="*", default=[3.0, 1.5, 0.8])
    p.add_argument("--euro-beta", type=float, default=0.05)
    p.add_argument("--kalman-q", type=float, nargs="*", default=[1e-3, 1e-4, 1e-5])
    p.add_argument("--kalman-r", type=float, default=1e-2)
    p.add_argument("--timing-tracks", type=int, nargs="*", default=[], help="also time 1, 2, 4... tracks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: the lift and the guidance's network with int8 weights on ONNX Runtime, as live "
                        "mode runs them (default fp32)")
    p.add_argument("--world-noise", choices=sorted(WORLD_NOISE), default="limbs",
                   help="the simulated world landmarks' error model (synthetic_views.WORLD_NOISE): 'limbs' "
                        "(default) errs by whole bones, as the real landmarks do on the clip (docs/lifter.md); "
                        "'points', independently per point")
    p.add_argument("--world-correlation", type=float, default=MEASURED_FRAME_CORRELATION, metavar="RHO",
                   help="the landmarks' errors from frame to frame as AR(1) series with this lag-one "
                        f"correlation (default {MEASURED_FRAME_CORRELATION}, the real ones' on the clip: "
                        "tools/world_noise_stats.py --clip; 0: drawn afresh each frame)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--plot", help="write a PA-MPJPE vs acceleration error figure (PNG) here")
    args = p.parse_args(argv)
    try:
        report = evaluate(args)
    except PlanError as exc:
        raise SystemExit(f"evaluate-refinement: error: {exc}") from None
    if args.plot:
        plot_tradeoff(report, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

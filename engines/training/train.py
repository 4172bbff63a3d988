"""Training the diffusion lifter on this CPU: resumable, with progress and a loss curve.

    python -m engines.training.train --data mocap.npz --out runs/lifter [--steps 20000]

Each step draws mocap poses of the training actors (held-out actors never), makes fresh
synthetic views of them (:mod:`engines.training.synthetic_views`), noises the targets to a
random diffusion time and regresses the clean target. The loss is the mean squared error on
the 6D rotations and shape, plus the error of the joints the predicted pose gives through
the body model (metres), which weights the rotations by how much they move the body.

With ``--ema DECAY`` an exponential moving average of the weights is kept beside them; it
is what the probe measures (the raw weights too, as ``raw_probe_*``) and what is exported.

Checkpoints (``checkpoint.pt``: model, optimiser, step, generator, average) are written every
``--save-every`` steps and on Ctrl-C; rerunning the command resumes. ``export`` writes the
shipped files: ``denoiser.pt`` (weights only, loaded with ``weights_only=True``) and
``denoiser.json`` (network config, training settings, data hash, final losses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.diffusion.denoiser import BETAS, ROTATIONS, DenoiserConfig, PoseDenoiser, build_denoiser
from engines.diffusion.features import COND_DIM, WORLD_COND_DIM, condition_features
from engines.diffusion.schedule import DDIMScheduler
from engines.training.synthetic_views import WORLD_NOISE, ViewConfig, WorldLandmarkNoise, make_views, simulate_world_landmarks

log = logging.getLogger("smplstream.train")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MocapPoses:
    """The training (or held-out) frames of a dataset written by ``engines.mocap.dataset``
    (or of its compact copy, :func:`write_compact`), on ``device``."""

    def __init__(self, path: str | Path, heldout: bool = False, device: str | torch.device = "cpu"):
        with np.load(path) as d:
            held = d["clip_heldout"][d["clip_id"]]
            keep = held if heldout else ~held
            self.poses = torch.from_numpy(d["poses"][keep].astype(np.float32)).to(device)
            self.clip_id = d["clip_id"][keep]
        if len(self.poses) == 0:
            raise ValueError(f"{path}: no {'held-out' if heldout else 'training'} frames")

    def __len__(self) -> int:
        return len(self.poses)

    def batch(self, size: int, g: torch.Generator) -> torch.Tensor:
        return self.poses[torch.randint(len(self.poses), (size,), generator=g, device=g.device)]


def write_compact(data: str | Path, out: str | Path, every: int = 2) -> Path:
    """A small copy of a dataset for another machine: every ``every``-th frame (adjacent
    frames at 30 fps are nearly the same pose), float16 poses, the clip ids and held-out
    flags; ``source_sha256`` names the full file it came from."""
    with np.load(data) as d:
        np.savez_compressed(out, poses=d["poses"][::every].astype(np.float16), clip_id=d["clip_id"][::every],
                            clip_heldout=d["clip_heldout"], source_sha256=file_sha256(data), every=every)
    return Path(out)


#: Diffusion times the samplers visit: the K-step DDIM times at K = 1, 2 and 4 (pure noise
#: at 999, then 749, 500, 250) and refinement's noise levels (``noise_t`` 100, then 50).
SAMPLER_TIMES = (999, 749, 500, 250, 100, 50)


def draw_timesteps(B: int, scheduler: DDIMScheduler, g: torch.Generator, recipe: str = "uniform",
                   uniform_share: float = 0.3, jitter: float = 25.0) -> torch.Tensor:
    """Diffusion times (B,) for one training batch.

    ``uniform``: every time alike (the original recipe). ``sampler``: training spent where
    sampling happens: ``1 - uniform_share`` of the rows at one of :data:`SAMPLER_TIMES`
    (Gaussian jitter of ``jitter`` steps, so the network stays smooth around them), the rest
    uniform, so the model remains a prior at every noise level (refinement inverts to
    other levels, and more sampling steps visit others)."""
    T = scheduler.num_train_steps
    dev = g.device
    t = torch.randint(0, T, (B,), generator=g, device=dev)
    if recipe == "uniform":
        return t
    if recipe != "sampler":
        raise ValueError(f"unknown timestep recipe {recipe!r} (uniform or sampler)")
    times = torch.tensor(SAMPLER_TIMES, device=dev, dtype=torch.float32)
    pick = times[torch.randint(len(SAMPLER_TIMES), (B,), generator=g, device=dev)]
    near = (pick + jitter * torch.randn(B, generator=g, device=dev)).round().clamp(0, T - 1).long()
    keep_uniform = torch.rand(B, generator=g, device=dev) < uniform_share
    return torch.where(keep_uniform, t, near)


#: In training, the share of views whose world landmarks are withheld (besides the error
#: model's own dropouts), so that a network conditioned on them also lifts without them
#: (``train-lifter --world-absent``).
WORLD_ABSENT_SHARE = 0.3


def view_condition(views, g: torch.Generator, world: bool, noise: WorldLandmarkNoise | None = None,
                   absent_share: float = WORLD_ABSENT_SHARE) -> torch.Tensor:
    """The denoiser condition of training views; with ``world``, world landmarks simulated
    from the true points (:func:`simulate_world_landmarks` with the error model ``noise``),
    withheld for ``absent_share`` of the rows."""
    if not world:
        return condition_features(views.keypoints)
    B = views.keypoints.shape[0]
    wl = simulate_world_landmarks(views.keypoints_cam, g, noise)
    absent = torch.rand(B, generator=g, device=g.device) < absent_share
    wl = torch.where(absent[:, None, None], torch.zeros_like(wl), wl)
    return condition_features(views.keypoints, wl, world=True)


def training_loss(model: PoseDenoiser, body: BodyModel, scheduler: DDIMScheduler, views, g: torch.Generator,
                  joint_weight: float = 10.0, timesteps: str = "uniform",
                  world_noise: WorldLandmarkNoise | None = None,
                  world_absent: float = WORLD_ABSENT_SHARE,
                  matmul_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion regression loss on one batch of views (parts as tensors: reading them
    every step would stall a GPU). ``matmul_dtype`` (e.g. ``torch.bfloat16``): the network
    runs under autocast to it; the body model and the losses stay float32 (a joint a metre
    from the root would carry 4 mm of bf16 rounding)."""
    B = views.x0.shape[0]
    cond = view_condition(views, g, model.config.world_landmarks, world_noise, world_absent)
    t = draw_timesteps(B, scheduler, g, timesteps)
    noise = torch.randn(views.x0.shape, generator=g, device=g.device)
    x_t = scheduler.add_noise(views.x0, noise, t)
    with torch.autocast(x_t.device.type, dtype=matmul_dtype or torch.float32, enabled=matmul_dtype is not None):
        pred = model(x_t, t, cond)
    pred = pred.float()
    param_loss = torch.nn.functional.mse_loss(pred, views.x0)
    # Joints through the body model, root-relative (translation is solved separately).
    joints_pred = body(pred[:, ROTATIONS].view(B, 24, 6), pred[:, BETAS]).joints
    joints_true = views.joints_cam - views.trans_cam[:, None]
    joint_loss = (joints_pred - joints_true).norm(dim=-1).mean()
    loss = param_loss + joint_weight * joint_loss
    return loss, {"loss": loss.detach(), "param": param_loss.detach(), "joint_mm": joint_loss.detach() * 1000}


class HeldoutProbe:
    """A quick held-out check run during training (the same views every time): K-step DDIM
    from fixed noise, ``samples`` per person, the 6D mean of the samples; MPJPE and PA-MPJPE
    (mm, 24 joints). A proxy for ``evaluate-lifter`` (no mirrored half, no rotation mean),
    cheap enough to draw a curve on the device that trains."""

    def __init__(self, data: str | Path, body: BodyModel, device, frames: int = 1000, samples: int = 4,
                 steps: tuple[int, ...] = (1, 4), seed: int = 0, world: bool = False,
                 world_noise: WorldLandmarkNoise | None = None):
        g = torch.Generator(device=device).manual_seed(seed)
        views = make_views(body, MocapPoses(data, heldout=True, device=device).batch(frames, g), ViewConfig(), g)
        # With world landmarks: every view has them (the probe measures what they give), and
        # the same views without them again, keys ``probe_2d_...`` (what the 2D alone gives).
        self.conds = {"probe": condition_features(views.keypoints)}
        if world:
            self.conds = {"probe": condition_features(views.keypoints, simulate_world_landmarks(
                views.keypoints_cam, g, world_noise), world=True),
                "probe_2d": condition_features(views.keypoints, None, world=True)}
        self.true = views.joints_cam - views.trans_cam[:, None]
        self.body, self.samples, self.steps, self.seed, self.device = body, samples, steps, seed, device

    @torch.no_grad()
    def __call__(self, model: PoseDenoiser, scheduler: DDIMScheduler) -> dict[str, float]:
        from engines.diffusion.sampler import sample
        from engines.training.metrics import joint_errors

        was_training = model.training
        model.eval()
        out = {}
        for prefix, cond in self.conds.items():
            for K in self.steps:
                g = torch.Generator(device=self.device).manual_seed(self.seed + 1)
                # Independent noise, as every probe before the lift's antithetic pairs: the
                # training curves of all runs stay comparable.
                x = sample(model, scheduler, cond, num_steps=K, num_samples=self.samples, generator=g,
                           antithetic=False).mean(1)
                joints = self.body(x[:, ROTATIONS].view(-1, 24, 6), x[:, BETAS]).joints
                errors = joint_errors(joints.float().cpu(), self.true.float().cpu())
                out.update({f"{prefix}_k{K}_{k}": v for k, v in errors.items()})
        model.train(was_training)
        return out


def grown_for_world_landmarks(config: DenoiserConfig) -> DenoiserConfig:
    """The config of ``config``'s network with the world landmarks added to its condition."""
    return DenoiserConfig(**{**config.to_dict(), "world_landmarks": True, "cond_dim": WORLD_COND_DIM})


def load_grown(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` where a weight of ``model`` has more input columns (a
    condition grown by the world landmarks): the old columns are copied, the new ones are
    zero, so the grown network starts as exactly the old one and learns what they add."""
    own = model.state_dict()
    for name, value in state.items():
        target = own[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif target.dim() == 2 and target.shape[0] == value.shape[0] and target.shape[1] > value.shape[1]:
            target.zero_()
            target[:, : value.shape[1]] = value
        else:
            raise ValueError(f"--init weights do not fit the network: {name} {tuple(value.shape)} -> "
                             f"{tuple(target.shape)}")
    model.load_state_dict(own)


def export_checkpoint(args: argparse.Namespace) -> Path:
    """Export the run's latest checkpoint as the shipped files (``--export-only``)."""
    out = Path(args.out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    meta = json.loads((out / "run.json").read_text())
    model = build_denoiser(DenoiserConfig(**meta["config"]))
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
    meta["exported_step"] = int(ckpt["step"])
    plot_history(history, out / "loss.png")
    export(model, meta, history, out)
    return out


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("train-lifter: --device cuda, but torch sees no CUDA device (use --device cpu)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products natively (a CPU with AVX-512 BF16 or AMX
    tiles: about 1.7 times the fp32 training steps per second on this project's CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # torch's own CPU feature probes (private, hence looked up: absent, the answer is no).
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The network's matmul dtype in training (None: float32). ``auto``: bf16 on a CPU that
    runs it natively; float32 (TF32 matmuls) on CUDA, where bf16 has not been measured."""
    if name == "auto":
        name = "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"
    if name == "fp32":
        return None
    if not native_bf16(device):
        raise SystemExit(f"train-lifter: --precision bf16, but this {device.type} has no native bf16 "
                         "(it would run slower than fp32); use --precision fp32")
    return torch.bfloat16


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    matmul_dtype = resolve_precision(args.precision, device)
    if device.type == "cuda":
        # Views are made on the device from poses kept there; TF32 matmuls are plenty for
        # a regression of this size.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device=device).manual_seed(args.seed)
    data = MocapPoses(args.data, device=device)
    body = BodyModel.load().to(device)
    config = DenoiserConfig(width=args.width, depth=args.depth, arch=args.arch, heads=args.heads,
                            encoder_depth=args.encoder_depth,
                            world_landmarks=args.world_landmarks,
                            cond_dim=WORLD_COND_DIM if args.world_landmarks else COND_DIM)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and (out / "run.json").exists():
        # A resumed run keeps the network it started with, whatever the flags say now.
        saved = DenoiserConfig(**json.loads((out / "run.json").read_text())["config"])
        if saved != config:
            log.warning("resuming with the run's own network %s (flags asked for width %d, depth %d)",
                        saved, args.width, args.depth)
        config = saved
    init = None
    init_path = getattr(args, "init", None)
    if init_path and not ckpt_path.exists():
        # Fine-tune shipped weights (their own network; the optimiser starts afresh): how
        # training goes on in a new session once the run directory with its optimiser
        # state is gone.
        from engines.diffusion.weights import load_denoiser

        init = load_denoiser(init_path)
        config = init.config
        if args.world_landmarks and not config.world_landmarks:
            config = grown_for_world_landmarks(config)
    model = build_denoiser(config)
    if init is not None:
        load_grown(model, init.state_dict())
        log.info("starting from the weights %s", init_path)
    model.to(device)
    scheduler = DDIMScheduler()
    # Fused: one kernel over all parameters (a CPU step's optimiser 15 -> 5.6 ms of 180).
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4, fused=True)
    ema = average_of(model, args.ema)
    view_cfg = ViewConfig()
    step = 0
    history: list[dict] = []
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        g.set_state(ckpt["generator"].cpu())
        if ema is not None and "ema" in ckpt:
            # With its count: at a count of 0 the next update would copy the weights over it.
            ema.module.load_state_dict(ckpt["ema"])
            ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        step = int(ckpt["step"])
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
        log.info("resumed from %s at step %d", ckpt_path, step)
    meta = {"data": str(args.data), "data_sha256": file_sha256(args.data), "frames": len(data),
            "config": config.to_dict(), "views": asdict(view_cfg), "batch": args.batch, "lr": args.lr,
            "steps": args.steps, "minutes": args.minutes, "timesteps": args.timesteps, "seed": args.seed,
            "ema_decay": args.ema or None,
            "world_absent_share": args.world_absent if config.world_landmarks else None,
            "world_noise": args.world_noise if config.world_landmarks else None,
            "device": str(device), "precision": "bf16" if matmul_dtype is not None else "fp32",
            "body_model": body.name}
    with np.load(args.data) as d:
        if "source_sha256" in d.files:  # a compact copy: name the full dataset too
            meta["data_source_sha256"] = str(d["source_sha256"])
    if init is not None:
        meta["init"] = {"weights": str(init_path), "sha256": file_sha256(init_path)}
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    world_noise = WORLD_NOISE[args.world_noise]
    probe = HeldoutProbe(args.data, body, device, world=config.world_landmarks, world_noise=world_noise) \
        if args.probe_every else None

    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True
        log.warning("signal %d: saving a checkpoint and stopping", signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def save():
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "generator": g.get_state()}
        if ema is not None:
            state["ema"], state["ema_updates"] = ema.module.state_dict(), int(ema.n_averaged)
        torch.save(state, out / "checkpoint.tmp")
        (out / "checkpoint.tmp").replace(ckpt_path)
        (out / "history.json").write_text(json.dumps(history))

    def progress() -> float:
        """Fraction of the run done: by steps, or by the clock with ``--minutes``."""
        if args.minutes:
            return (time.monotonic() - started) / (60 * args.minutes)
        return step / args.steps

    model.train()
    started, window = time.monotonic(), []
    first_step = step
    warmup = min(500, max(1, args.steps // 10))
    try:
        while progress() < 1.0 and not stop["now"]:
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(progress(), 1.0)))
            lr *= min(1.0, (step + 1) / warmup)  # warm-up
            for group in opt.param_groups:
                group["lr"] = lr
            views = make_views(body, data.batch(args.batch, g), view_cfg, g)
            loss, parts = training_loss(model, body, scheduler, views, g, timesteps=args.timesteps,
                                        world_noise=world_noise, world_absent=args.world_absent,
                                        matmul_dtype=matmul_dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            window.append(torch.stack([parts["loss"], parts["param"], parts["joint_mm"]]))
            if step % args.log_every == 0 or (not args.minutes and step == args.steps):
                loss_mean, param_mean, joint_mean = torch.stack(window).mean(0).tolist()
                window = []
                elapsed = time.monotonic() - started
                row = {"step": step, "lr": lr, "loss": loss_mean, "param": param_mean, "joint_mm": joint_mean,
                       "seconds": round(elapsed, 1)}
                if probe is not None and step % args.probe_every == 0:
                    row.update(probe(model if ema is None else ema.module, scheduler))
                    if ema is not None:
                        row.update({f"raw_{k}": v for k, v in probe(model, scheduler).items()})
                history.append(row)
                probe_text = "".join(f"  {k[6:]} {v:.1f}" for k, v in row.items() if k.startswith("probe_"))
                print(f"step {step}/{args.steps if not args.minutes else '-'}  loss {loss_mean:.4f}  "
                      f"param {param_mean:.4f}  joints {joint_mean:.1f} mm  lr {lr:.2e}  "
                      f"{(step - first_step) / max(elapsed, 1e-9):.2f} steps/s{probe_text}", flush=True)
            if step % args.save_every == 0:
                save()
    finally:
        save()
        for s, h in previous.items():
            signal.signal(s, h)
    plot_history(history, out / "loss.png")
    if args.minutes or step >= args.steps:
        export((model if ema is None else ema.module).cpu(), meta, history, out, onnx=not args.no_onnx)
    return out


def average_of(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights (``decay`` per step), or None for
    0: it evens out the step-to-step noise of small batches, which the last weights keep."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise SystemExit(f"train-lifter: --ema {decay}: give a decay between 0 and 1, e.g. 0.999")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def export(model: PoseDenoiser, meta: dict, history: list[dict], out: Path, onnx: bool = True) -> None:
    """Write the shipped weights (float16 state dict: half the bytes, computed in float32),
    their description and, when the export extra is installed, the ONNX file."""
    torch.save({k: v.detach().half() if v.is_floating_point() else v.detach().clone()
                for k, v in model.state_dict().items()}, out / "denoiser.pt")
    info = dict(meta)
    info["final"] = history[-1] if history else None
    info["weights_sha256"] = file_sha256(out / "denoiser.pt")
    (out / "denoiser.json").write_text(json.dumps(info, indent=2))
    log.info("exported %s", out / "denoiser.pt")
    import importlib.util

    if not onnx:
        return
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript")):
        from engines.diffusion.onnx_denoiser import main as export_onnx_main

        export_onnx_main(["--weights", str(out / "denoiser.pt")])
    else:
        log.warning("no ONNX export: install the export extra (pip install -e '.[export]') and run "
                    "`python -m engines.diffusion.onnx_denoiser --weights %s`", out / "denoiser.pt")


def plot_history(history: list[dict], path: Path) -> None:
    """Loss curve as a PNG (OpenCV drawing, log scale)."""
    if len(history) < 2:
        return
    import cv2

    w, h, m = 800, 400, 50
    img = np.full((h, w, 3), 255, np.uint8)
    steps = np.array([r["step"] for r in history], float)
    for key, color in (("loss", (200, 60, 0)), ("param", (0, 140, 0))):
        y = np.log10(np.maximum([r[key] for r in history], 1e-6))
        lo, hi = y.min(), y.max() + 1e-9
        pts = np.stack([m + (steps - steps[0]) / max(steps[-1] - steps[0], 1) * (w - 2 * m),
                        h - m - (y - lo) / (hi - lo) * (h - 2 * m)], -1).astype(np.int32)
        cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        cv2.putText(img, f"{key}: {history[0][key]:.3g} -> {history[-1][key]:.3g}", (m, 30 + 20 * (key == "param")),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    cv2.putText(img, f"step {int(steps[0])} .. {int(steps[-1])} (log-scale loss)", (m, h - 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train-lifter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training arrays from `engines.mocap.dataset`")
    p.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--minutes", type=float,
                   help="train for this long instead of --steps (the cosine schedule follows the clock)")
    p.add_argument("--timesteps", choices=["uniform", "sampler"], default="sampler",
                   help="diffusion times drawn in training: 'sampler' (default) spends most of them "
                        "at the times the samplers and refinement visit; 'uniform', the original recipe")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--probe-every", type=int, default=0, metavar="N",
                   help="every N steps, a quick held-out check (K = 1 and 4) goes into the history")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the network's matrix products in training: bf16 under autocast (weights, optimiser, "
                        "body model and losses stay fp32); auto: bf16 on a CPU that runs it natively "
                        "(AVX-512 BF16 or AMX), else fp32")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--arch", choices=["mlp", "tokens"], default=DenoiserConfig.arch,
                   help="denoiser network: residual MLP, or joints and keypoints as tokens (transformer)")
    p.add_argument("--world-noise", choices=sorted(WORLD_NOISE), default="points",
                   help="the simulated world landmarks' error model (synthetic_views.WORLD_NOISE)")
    p.add_argument("--world-absent", type=float, default=WORLD_ABSENT_SHARE, metavar="SHARE",
                   help="with --world-landmarks: the share of training views whose landmarks are withheld "
                        "(the network learns to lift without them from these)")
    p.add_argument("--world-landmarks", action="store_true",
                   help="condition on BlazePose's world landmarks too (simulated in training); with --init "
                        "of a network without them, its condition grows by zero-initialised columns")
    p.add_argument("--heads", type=int, default=DenoiserConfig.heads, help="attention heads (tokens)")
    p.add_argument("--encoder-depth", type=int, default=DenoiserConfig.encoder_depth,
                   help="keypoint-encoder layers (tokens)")
    p.add_argument("--width", type=int, default=DenoiserConfig.width)
    p.add_argument("--depth", type=int, default=DenoiserConfig.depth)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999) and export it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint and exit")
    p.add_argument("--no-onnx", action="store_true", help="export the torch weights only (make the ONNX file later)")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="start a new run from these weights (e.g. the shipped engines/diffusion/assets/"
                        "denoiser.pt; their network, a fresh optimiser); ignored when resuming")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    (export_checkpoint if args.export_only else train)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

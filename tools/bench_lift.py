#!/usr/bin/env python3
"""CPU time of the lift (K denoising steps, N samples, persons batched): eager torch, ONNX
Runtime, and ONNX Runtime with the int8 denoiser (live mode's engine on a CPU), in one run
(this machine is noisy: compare the ratios).

    python tools/bench_lift.py [--steps 4] [--samples 8] [--threads 1] [--repeat 30] [--weights W] [--cold]

``--cold`` writes through 64 MB before every timed call, so the networks' weights are no
longer in the caches: as in the live pipeline, where the landmark network, the frames and
the fit pass through the caches between two lifts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.body.body_model import BodyModel  # noqa: E402
from engines.lifting.lifter import Lifter  # noqa: E402
from engines.training.synthetic_views import ViewConfig, make_views  # noqa: E402
from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=LIFT_STEPS["offline"])
    p.add_argument("--samples", type=int, default=LIFT_SAMPLES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--cold", action="store_true", help="evict the caches before every timed call")
    p.add_argument("--weights", help="denoiser weights with their .json and .onnx (default: the bundled ones)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    body = BodyModel.load()
    views = make_views(body, torch.zeros(8, 72), ViewConfig(), torch.Generator().manual_seed(0))
    engines = {"torch": ("torch", None), "onnxruntime": ("onnxruntime", None), "int8": ("onnxruntime", "int8")}
    lifters = {name: Lifter.load(args.weights, body=body, backend=b, precision=prec, threads=args.threads, num_steps=args.steps,
                                 num_samples=args.samples) for name, (b, prec) in engines.items()}
    print(f"lift, K={args.steps} steps, N={args.samples} samples, {args.threads} thread(s); median of {args.repeat}"
          + ("; caches evicted before each call" if args.cold else ""))
    flush = np.ones(16 << 20, np.float32) if args.cold else None  # 64 MB: twice the last-level cache here
    print(f"{'persons':>8} {'torch ms':>9} {'ORT ms':>8} {'ORT int8 ms':>12} {'torch/ORT':>10} {'ORT/int8':>9} "
          f"{'int8 ms/person':>15}")
    for persons in (1, 8):
        kp = views.keypoints[:persons]
        times = {b: [] for b in lifters}
        for _ in range(args.repeat):
            for name, lifter in lifters.items():  # interleaved, so both see the same load
                if flush is not None:
                    flush += 1.0
                t0 = time.perf_counter()
                lifter.lift(kp)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{persons:>8} {med['torch']:>9.2f} {med['onnxruntime']:>8.2f} {med['int8']:>12.2f} "
              f"{med['torch'] / med['onnxruntime']:>10.2f} {med['onnxruntime'] / med['int8']:>9.2f} "
              f"{med['int8'] / persons:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

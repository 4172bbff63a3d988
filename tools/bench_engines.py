#!/usr/bin/env python3
"""Per-model latency on each backend, in one run (this machine is noisy: compare the ratios).

    python tools/bench_engines.py [--threads 1] [--batches 1 8 32] [--json]
                                  [--backends onnxruntime torch torch-compile tensorrt]

For the detector, the landmark model, one denoiser call and the fused sampler (K steps,
N samples per person; batch = persons), each backend's median time per call at each batch
size, and its ratio to ONNX Runtime. The sampler is also timed step by step (one network
call per step from Python, as ``engines.diffusion.sampler.sample`` does) on ONNX Runtime
and eager torch, which gives the per-step Python overhead the fused loop removes. Backends
are timed interleaved (call by call), so they share the same machine load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS  # noqa: E402
from engines.runtime.catalog import MODELS, make_inputs, make_runner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"],
                   help="onnxruntime, torch, torch-compile, tensorrt (onnxruntime is the baseline, always run)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device for the torch backends (default: theirs)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=LIFT_STEPS["offline"])
    p.add_argument("--samples", type=int, default=LIFT_SAMPLES)
    p.add_argument("--repeat", type=int, default=20, help="timed calls per backend and batch (fewer for slow calls)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per backend and batch at most")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    backends = ["onnxruntime"] + [b for b in args.backends if b != "onnxruntime"]
    rows = []
    say = (lambda *a: None) if args.json else print
    say(f"threads {args.threads}; torch {torch.__version__}; median ms per call; K={args.steps} N={args.samples}")
    for model in args.models:
        names = list(backends)
        if model == "sampler":
            names += ["onnxruntime:stepwise", "torch:stepwise"]
        runners, descs = {}, {}
        for name in names:
            device = None if name.endswith(":stepwise") or name == "onnxruntime" else args.device
            runners[name], descs[name] = make_runner(model, name, device, threads=args.threads,
                                                     num_steps=args.steps, num_samples=args.samples)
            say(f"  {model} / {name}: {descs[name]}")
        rng = np.random.default_rng(0)
        for batch in args.batches:
            inputs = make_inputs(model, batch, rng, num_samples=args.samples)
            first = {}
            for name, run in runners.items():  # warm-up (compiles, allocates), and a cost estimate
                run(inputs)
                t0 = time.perf_counter()
                run(inputs)
                first[name] = time.perf_counter() - t0
            repeat = max(3, min(args.repeat, int(args.budget / max(first.values()))))
            times = {name: [] for name in runners}
            for _ in range(repeat):
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    run(inputs)
                    times[name].append(time.perf_counter() - t0)
            med = {name: 1000 * statistics.median(v) for name, v in times.items()}
            for name in runners:
                rows.append({"model": model, "backend": name, "batch": batch, "median_ms": round(med[name], 3),
                             "ratio_to_onnxruntime": round(med[name] / med["onnxruntime"], 3), "repeat": repeat,
                             "what": descs[name]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"\n{'model':<10} {'batch':>5} " + " ".join(f"{n:>21}" for n in ["backend: ms (x ORT)"]))
    for model in args.models:
        for batch in args.batches:
            sel = [r for r in rows if r["model"] == model and r["batch"] == batch]
            cells = "  ".join(f"{r['backend']} {r['median_ms']:.2f} ({r['ratio_to_onnxruntime']:.2f}x)" for r in sel)
            print(f"{model:<10} {batch:>5}  {cells}")
    if "sampler" in args.models:
        print(f"\nper-step overhead of the step-by-step loop (K={args.steps}, N={args.samples}):")
        for batch in args.batches:
            get = {r["backend"]: r["median_ms"] for r in rows if r["model"] == "sampler" and r["batch"] == batch}
            for engine in ("onnxruntime", "torch"):
                if engine in get and f"{engine}:stepwise" in get:
                    step, fused = get[f"{engine}:stepwise"], get[engine]
                    print(f"  {batch:>2} persons, {engine:<12} step-by-step {step:7.2f} ms, fused {fused:7.2f} ms: "
                          f"{(step - fused) / args.steps:+.3f} ms per step ({100 * (step - fused) / step:+.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

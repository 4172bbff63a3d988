"""``smplstream export-engines``: prepare every model for every available backend and check
each against its reference on random inputs.

For each model (detector, landmarks, denoiser step network, fused sampler loop) and each
backend, the command builds what the backend needs (ONNX Runtime sessions, the fused
sampler graph, the ONNX-to-torch conversion, torch.compile, TensorRT engines, which are
cached on disk) and compares its outputs with the reference (the shipped ONNX graph on
ONNX Runtime for the perception models; eager torch for the denoiser; the eager
step-by-step loop for the sampler) at batch 1, 8 and 32, printing max abs and max relative
error. Exit status 1 if any error is above :data:`THRESHOLDS` (:data:`FP16_THRESHOLDS` for
TensorRT's FP16 engines).

    python -m engines.runtime.export [--backends onnxruntime torch ...] [--batches 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS

from .backends import BACKENDS, BackendUnavailable, check_backend, cuda_available, tensorrt_importable
from .catalog import MODELS, REFERENCE, compare, make_inputs, make_runner

# Max relative error (to the output's largest reference magnitude) allowed per model, fp32.
# Float32 reordering in another engine gives about 1e-6 (MLPs) to 2e-5 (the conv nets); a
# wrong operator (layout, padding, resize mode) gives 1e-2 or more.
THRESHOLDS = {"detector": 1e-4, "landmarks": 1e-4, "denoiser": 1e-5, "sampler": 1e-5}
# TensorRT builds in FP16: about 3 decimal digits, compounded over the sampler's K steps.
FP16_THRESHOLDS = {"detector": 2e-2, "landmarks": 2e-2, "denoiser": 1e-2, "sampler": 3e-2}


@dataclass
class Check:
    model: str
    backend: str
    batch: int
    max_abs: float
    max_rel: float
    threshold: float
    seconds: float

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.threshold


def threshold(model: str, backend: str) -> float:
    return (FP16_THRESHOLDS if backend.startswith("tensorrt") else THRESHOLDS)[model]


def candidates(model: str, backends: list[str]) -> list[str]:
    """The backends to check for ``model`` (never its reference itself)."""
    out = [b for b in backends if b != REFERENCE[model]]
    if model == "sampler" and "onnxruntime" in backends:
        out.append("onnxruntime:stepwise")
    return out


def check_model(model: str, backends: list[str], batches=(1, 8, 32), *, device: str | None = None, threads: int = 1,
                num_steps: int = LIFT_STEPS["offline"], num_samples: int = LIFT_SAMPLES, seed: int = 0,
                log=print) -> list[Check]:
    """Compare ``model`` on each backend with its reference; one :class:`Check` per backend
    and batch size."""
    rng = np.random.default_rng(seed)
    reference, ref_desc = make_runner(model, REFERENCE[model], threads=threads, num_steps=num_steps,
                                      num_samples=num_samples)
    log(f"{model}: reference {ref_desc}")
    runners = {}
    for backend in candidates(model, backends):
        t0 = time.perf_counter()
        dev = None if backend.endswith(":stepwise") else device
        runners[backend], desc = make_runner(model, backend, dev, threads=threads, num_steps=num_steps,
                                             num_samples=num_samples)
        log(f"  prepared {desc} in {time.perf_counter() - t0:.1f} s")
    checks = []
    for batch in batches:
        inputs = make_inputs(model, batch, rng, num_samples=num_samples)
        ref = reference(inputs)
        for backend, run in runners.items():
            t0 = time.perf_counter()
            err_abs, err_rel = compare(ref, run(inputs))
            checks.append(Check(model, backend, batch, err_abs, err_rel, threshold(model, backend),
                                time.perf_counter() - t0))
    return checks


def save_onnx(directory: Path, num_steps: int = LIFT_STEPS["offline"]) -> list[Path]:
    """Write the fused sampler graph (``sampler_k{K}.onnx``: ``cond`` (B, C), ``noise``
    (B, N, 154) -> ``x``) and the detector with a dynamic batch to ``directory``."""
    from engines.diffusion.schedule import DDIMScheduler

    from .fused_sampler import build_fused_onnx
    from .models import DENOISER_ONNX, DETECTOR_ONNX
    from .onnx_to_torch import batch_dynamic_onnx

    directory.mkdir(parents=True, exist_ok=True)
    out = [directory / f"sampler_k{num_steps}.onnx", directory / "pose_detection_dynamic_batch.onnx"]
    out[0].write_bytes(build_fused_onnx(DENOISER_ONNX, DDIMScheduler(), num_steps))
    out[1].write_bytes(batch_dynamic_onnx(DETECTOR_ONNX))
    return out


def available_backends(device: str | None) -> list[str]:
    """onnxruntime and torch always; torch-compile on CUDA; tensorrt with CUDA and torch_tensorrt."""
    out = ["onnxruntime", "torch"]
    if device != "cpu" and cuda_available():
        out.append("torch-compile")
        if tensorrt_importable():
            out.append("tensorrt")
    return out


def main(argv: list[str] | None = None) -> int:
    """Prepare (build, compile, cache) every model for each backend and check it against the
    reference model on random inputs; non-zero exit if an error exceeds its threshold."""
    p = argparse.ArgumentParser(prog="export-engines", description=main.__doc__)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--backends", nargs="+", choices=BACKENDS,
                   help="default: every backend available here (torch-compile only on CUDA: on CPU it "
                        "compiles for minutes; ask for it by name)")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and torch")
    p.add_argument("--steps", type=int, default=LIFT_STEPS["offline"], help="K, the sampler's DDIM steps")
    p.add_argument("--samples", type=int, default=LIFT_SAMPLES, help="N, samples per person")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--save-onnx", metavar="DIR", type=Path,
                   help="also write the graphs built at run time (the fused K-step sampler, the detector with a "
                        "dynamic batch) as .onnx files in DIR, for use outside this package (needs `onnx`)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.steps < 1 or args.samples < 1 or min(args.batches) < 1:
        p.error("--threads, --steps, --samples and --batches must be at least 1")

    import torch

    torch.set_num_threads(args.threads)
    backends = args.backends or available_backends(args.device)
    for b in backends:
        try:
            check_backend(b, args.device or ("cuda" if b == "tensorrt" else "cpu"))
        except BackendUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    log = (lambda *a, **k: None) if args.json else print
    if args.save_onnx:
        for path in save_onnx(args.save_onnx, args.steps):
            log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    checks: list[Check] = []
    for model in args.models:
        checks += check_model(model, backends, args.batches, device=args.device, threads=args.threads,
                              num_steps=args.steps, num_samples=args.samples, log=log)
    if args.json:
        print(json.dumps([{**asdict(c), "ok": c.ok} for c in checks], indent=1))
    else:
        print(f"\n{'model':<10} {'backend':<22} {'batch':>5} {'max abs':>10} {'max rel':>10} {'limit':>8}  ok")
        for c in checks:
            print(f"{c.model:<10} {c.backend:<22} {c.batch:>5} {c.max_abs:>10.2e} {c.max_rel:>10.2e} "
                  f"{c.threshold:>8.0e}  {'yes' if c.ok else 'NO'}")
    bad = [c for c in checks if not c.ok]
    if bad:
        print(f"{len(bad)} check(s) above threshold", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The project's four models as runnable units for checks and benchmarks.

``make_runner(model, backend)`` returns a callable ``inputs -> outputs`` (dicts of numpy
arrays by name) for ``detector``, ``landmarks``, ``denoiser`` (one network call) and
``sampler`` (K DDIM steps for N samples of B persons), on any backend; ``make_inputs``
draws inputs of the right kind (images in the model's range, diffusion times, noise).
The ``sampler`` also has ``:stepwise`` variants of ``onnxruntime`` and ``torch`` (one call
per step from Python, as :func:`engines.diffusion.sampler.sample` does), used as the
reference and to measure the per-step Python overhead the fused loop removes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS

from .models import DENOISER_WEIGHTS, DETECTOR_ONNX, LANDMARKS_ONNX, load_denoiser_engine, load_onnx_model

MODELS = ("detector", "landmarks", "denoiser", "sampler")
# What each model's outputs are compared against.
REFERENCE = {"detector": "onnxruntime", "landmarks": "onnxruntime", "denoiser": "torch", "sampler": "torch:stepwise"}


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def random_images(rng: np.random.Generator, batch: int, size: int, low: float, high: float) -> np.ndarray:
    """(batch, size, size, 3) random images in [low, high]: uniform noise at 1/16 of the size,
    smoothly upsampled, plus fine noise. Pixel-level white noise would drive the perception
    networks far outside what a camera shows (logits in the thousands), where any two float32
    engines disagree by rounding alone."""
    import cv2

    out = np.empty((batch, size, size, 3), np.float32)
    for i in range(batch):
        coarse = rng.uniform(0, 1, (size // 16, size // 16, 3)).astype(np.float32)
        img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)
        out[i] = low + (high - low) * np.clip(img, 0, 1)
    return out


def make_inputs(model: str, batch: int, rng: np.random.Generator, *, num_samples: int = LIFT_SAMPLES) -> dict[str, np.ndarray]:
    """Random inputs for ``batch`` items (persons for the sampler)."""
    if model == "detector":
        return {"input_1": random_images(rng, batch, 224, -1.0, 1.0)}
    if model == "landmarks":
        return {"input_1": random_images(rng, batch, 256, 0.0, 1.0)}
    if model == "denoiser":
        return {"x_t": rng.standard_normal((batch, 154)).astype(np.float32),
                "t": rng.integers(0, 1000, batch).astype(np.int64),
                "cond": rng.standard_normal((batch, shipped_cond_dim())).astype(np.float32)}
    if model == "sampler":
        return {"cond": rng.standard_normal((batch, shipped_cond_dim())).astype(np.float32),
                "noise": rng.standard_normal((batch, num_samples, 154)).astype(np.float32)}
    raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


def shipped_cond_dim() -> int:
    """The condition width of the bundled denoiser (its JSON config)."""
    import json

    return int(json.loads(DENOISER_WEIGHTS.with_suffix(".json").read_text())["config"]["cond_dim"])


def _stepwise(denoiser, scheduler, num_steps: int) -> Runner:
    """The step-by-step loop of ``sample()`` with the noise given (the reference)."""

    @torch.inference_mode()
    def run(inputs):
        cond = torch.from_numpy(inputs["cond"])
        noise = torch.from_numpy(inputs["noise"])
        b, n, d = noise.shape
        x = noise.reshape(b * n, d)
        cond_rep = cond.repeat_interleave(n, dim=0)
        for t, t_prev in scheduler.timesteps(num_steps):
            x0 = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long), cond_rep)
            x = scheduler.step(x0, t, t_prev, x)
        return {"x": x.reshape(b, n, d).numpy()}

    return run


def make_runner(model: str, backend: str, device: str | None = None, *, threads: int = 1,
                num_steps: int = LIFT_STEPS["offline"], num_samples: int = LIFT_SAMPLES) -> tuple[Runner, str]:
    """A callable for ``model`` on ``backend`` and a one-line description of what runs."""
    if model in ("detector", "landmarks"):
        path = DETECTOR_ONNX if model == "detector" else LANDMARKS_ONNX
        engine = load_onnx_model(path, backend, device, threads=threads, name=model,
                                 dynamic_batch=model == "detector")
        return engine.run, engine.describe()
    if model == "denoiser":
        engine = load_denoiser_engine(backend, device, threads=threads)
        return engine.run, engine.describe()
    if model != "sampler":
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    from engines.diffusion.onnx_denoiser import OrtDenoiser
    from engines.diffusion.schedule import DDIMScheduler
    from engines.diffusion.weights import load_denoiser

    from .backends import resolve_backend
    from .fused_sampler import FusedSampler
    from .models import TensorSampler, load_sampler

    scheduler = DDIMScheduler()
    torch_model = load_denoiser(DENOISER_WEIGHTS)
    if backend == "torch:stepwise":
        return _stepwise(torch_model, scheduler, num_steps), f"sampler: torch eager, step by step, K={num_steps}"
    if backend == "onnxruntime:stepwise":
        ort_model = OrtDenoiser(DENOISER_WEIGHTS.with_suffix(".onnx"), torch_model.config, threads=threads)
        return (_stepwise(ort_model, scheduler, num_steps),
                f"sampler: onnxruntime, step by step, K={num_steps}, {threads} thread(s)")
    choice = resolve_backend(backend, device)
    if choice.backend == "torch" and choice.device == "cpu":
        fused = FusedSampler(torch_model, scheduler, num_steps)
        sampler = TensorSampler(fused, "cpu", None)
        desc = f"sampler: torch eager, fused loop, K={num_steps}"
    else:
        sampler = load_sampler(choice.backend, choice.device, torch_model, weights=DENOISER_WEIGHTS,
                               num_steps=num_steps, num_samples=num_samples, threads=threads, scheduler=scheduler)
        if sampler is None:  # onnxruntime without the `onnx` package: no fused graph
            return make_runner(model, "onnxruntime:stepwise", threads=threads, num_steps=num_steps)
        desc = sampler.info.describe() + ", fused loop"

    def run(inputs):
        return {"x": sampler(torch.from_numpy(inputs["cond"]), torch.from_numpy(inputs["noise"])).numpy()}

    return run, desc


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            outputs: tuple[str, ...] | None = None) -> tuple[float, float]:
    """(max abs error, max relative error) over all outputs; relative to each output's
    largest reference magnitude, floored at 1e-3 (elementwise relative error is meaningless
    near zero, and a probability that underflows to 0 would make any difference infinite)."""
    worst_abs = worst_rel = 0.0
    for name, ref in reference.items():
        if outputs is not None and name not in outputs:
            continue
        got = np.asarray(candidate[name], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"output {name}: shape {got.shape}, reference {ref.shape}")
        err = float(np.abs(got - ref).max()) if ref.size else 0.0
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / max(float(np.abs(ref).max()), 1e-3))
    return worst_abs, worst_rel

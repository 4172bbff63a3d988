"""The project's models behind the engine interface: load any of them for any backend.

* :func:`load_onnx_model`: the perception models (BlazePose detector, landmarks) or any
  ONNX file of the supported operator set, for onnxruntime / torch / torch-compile /
  tensorrt (the torch paths convert the graph with :mod:`engines.runtime.onnx_to_torch`).
* :func:`load_denoiser_engine`: one denoising call (``x_t``, ``t``, ``cond`` -> ``x0``).
* :func:`load_prior_denoiser`: the same call as a forward-only torch module, the keypoint
  fit's prior.
* :func:`load_sampler`: the fused K-step sampler (``cond``, ``noise`` -> ``x``) for the
  Lifter; ``None`` where the step-by-step loop is the right path (see its docstring).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Callable

import torch

from engines.diffusion.weights import DEFAULT_WEIGHTS as DENOISER_WEIGHTS
from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS

from .backends import resolve_backend
from .cache import file_sha256
from .spec import EngineInfo, ModelSpec, TensorSpec

log = logging.getLogger("engines.runtime")

ROOT = Path(__file__).resolve().parents[1]
DETECTOR_ONNX = ROOT / "perception" / "assets" / "pose_detection.onnx"
LANDMARKS_ONNX = ROOT / "perception" / "assets" / "pose_landmark_full.onnx"
DENOISER_ONNX = DENOISER_WEIGHTS.with_suffix(".onnx")

_warned_no_onnx = False


def onnx_graph_spec(module, name: str) -> ModelSpec:
    """The spec of a converted ONNX graph (its first dimension is the dynamic batch)."""
    return ModelSpec(name, tuple(TensorSpec(n, (None, *s[1:])) for n, s in module.input_shapes),
                     tuple(module.output_names),
                     output_shapes=tuple((None, *s[1:]) for s in module.output_shapes))


def load_onnx_model(path: str | Path, backend: str = "onnxruntime", device: str | None = None, *, threads: int = 1,
                    providers=None, name: str | None = None, dynamic_batch: bool = False, precision: str | None = None):
    """An engine running the ONNX model at ``path`` on ``backend`` (or ``auto``).

    ``dynamic_batch``: for onnxruntime, rewrite a fixed batch-1 graph to take any batch (needs
    ``onnx``); the torch backends always take any batch. ``precision``: tensorrt builds fp16
    by default, the others run fp32.
    """
    from .ort import OrtEngine

    path = Path(path)
    name = name or path.stem
    choice = resolve_backend(backend, device)
    if choice.backend == "onnxruntime":
        model: str | Path | bytes = path
        if dynamic_batch:
            from .onnx_to_torch import batch_dynamic_onnx

            model = batch_dynamic_onnx(path)
        engine = OrtEngine(None, model, device=choice.device, threads=threads, providers=providers, name=name)
        engine.info.source = str(path)
        return engine
    from .onnx_to_torch import load_onnx_as_torch

    module = load_onnx_as_torch(path)
    spec = onnx_graph_spec(module, name)
    if choice.backend == "tensorrt":
        from .tensorrt_engine import TensorRTEngine

        engine = TensorRTEngine(spec, module, file_sha256(path), precision=precision or "fp16")
    else:
        from .torch_engine import TorchEngine

        engine = TorchEngine(spec, module, backend=choice.backend, device=choice.device, precision=precision or "fp32")
    engine.info.source = str(path)
    return engine


def denoiser_spec(x_dim: int, cond_dim: int) -> ModelSpec:
    return ModelSpec("denoiser", (TensorSpec("x_t", (None, x_dim)), TensorSpec("t", (None,), "int64"),
                                  TensorSpec("cond", (None, cond_dim))), ("x0",))


def sampler_spec(x_dim: int, cond_dim: int, num_samples: int) -> ModelSpec:
    """The fused sampler: ``cond`` (B, C) and ``noise`` (B, N, X) -> ``x`` (B, N, X); the batch
    range is persons (1..32), N is fixed for compiled engines (ONNX Runtime takes any N)."""
    return ModelSpec("sampler", (TensorSpec("cond", (None, cond_dim)), TensorSpec("noise", (None, num_samples, x_dim))),
                     ("x",))


class _DenoiserModule(torch.nn.Module):
    """PoseDenoiser with the spec's positional interface (x_t, t, cond) -> (x0,)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, cond):
        return (self.model(x_t, t, cond),)


def load_denoiser_engine(backend: str = "onnxruntime", device: str | None = None, *, weights: str | Path | None = None,
                         threads: int = 1, precision: str | None = None):
    """One denoiser call behind the engine interface (inputs ``x_t``, ``t``, ``cond``)."""
    from engines.diffusion.weights import load_denoiser

    from .ort import OrtEngine

    weights = Path(weights or DENOISER_WEIGHTS)
    choice = resolve_backend(backend, device)
    model = load_denoiser(weights)
    spec = denoiser_spec(model.config.x_dim, model.config.cond_dim)
    if choice.backend == "onnxruntime":
        engine = OrtEngine(spec, weights.with_suffix(".onnx"), device=choice.device, threads=threads)
        engine.info.source = str(weights.with_suffix(".onnx"))
        return engine
    if choice.backend == "tensorrt":
        from .tensorrt_engine import TensorRTEngine

        return TensorRTEngine(spec, _DenoiserModule(model), file_sha256(weights), precision=precision or "fp16")
    from .torch_engine import TorchEngine

    return TorchEngine(spec, _DenoiserModule(model), backend=choice.backend, device=choice.device,
                       precision=precision or "fp32")


def load_prior_denoiser(backend: str = "onnxruntime", *, weights: str | Path | None = None, precision: str = "fp32",
                        threads: int = 1):
    """The denoiser the keypoint fit calls as its prior, forward only (no gradient goes
    through it): ``onnxruntime`` runs the ``.onnx`` beside ``weights`` (``precision="int8"``:
    its int8 version), ``torch`` the eager network on the CPU. The other backends are built
    for the lift's fused sampler and have no place here: a ValueError says so."""
    from engines.diffusion.onnx_denoiser import ForwardOnly
    from engines.diffusion.weights import LifterWeightsError, load_denoiser

    if backend not in ("onnxruntime", "torch"):
        raise ValueError(f"the fit's prior runs on onnxruntime or torch, not {backend!r}")
    if precision not in ("fp32", "int8"):
        raise ValueError(f"the fit's prior runs fp32 or int8, not {precision!r}")
    if precision == "int8" and backend != "onnxruntime":
        raise ValueError("int8 runs on onnxruntime, not torch")
    weights = Path(weights or DENOISER_WEIGHTS)
    model = load_denoiser(weights)
    if backend == "torch":
        return model
    onnx_path = weights.with_suffix(".onnx")
    if not onnx_path.is_file():
        raise LifterWeightsError(f"{onnx_path}: missing; export it with `python -m engines.diffusion.onnx_denoiser` "
                                 "or run the fit on torch (--backend refine=torch)")
    return ForwardOnly.from_onnx(onnx_path, model.config, precision=precision, threads=threads)


class TensorSampler:
    """A fused sampler on a torch device: ``(cond, noise) -> x`` on CPU tensors in and out.
    ``max_batch``: engines built for at most that many persons get larger batches in chunks."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: str,
                 info: EngineInfo | None, max_batch: int | None = None):
        self.fn = fn
        self.device = torch.device(device)
        self.info = info
        self.max_batch = max_batch

    @torch.inference_mode()
    def __call__(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        step = self.max_batch or max(1, cond.shape[0])
        parts = [self.fn(cond[i:i + step].to(self.device), noise[i:i + step].to(self.device)).float().cpu()
                 for i in range(0, cond.shape[0], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def load_sampler(backend: str, device: str, model, *, weights: str | Path | None = None,
                 num_steps: int = LIFT_STEPS["offline"], num_samples: int = LIFT_SAMPLES, threads: int = 1, scheduler=None, precision: str | None = None):
    """The fused K-step sampler for a resolved ``backend`` / ``device`` and a loaded torch
    denoiser ``model`` (the Lifter's), or ``None`` where the step-by-step loop is used:

    * ``onnxruntime``: the fused graph (:func:`build_fused_onnx`) from the ``.onnx`` beside
      ``weights``; ``None`` (step-by-step on ONNX Runtime, logged) when ``onnx`` is missing,
      and for one step (K = 1: there is no loop to fuse, and the one network call can then
      take other rows beside the samples, :func:`engines.diffusion.sampler.sample`).
    * ``torch`` on cpu: ``None`` (eager step-by-step, the reference); on cuda a CUDA graph
      of the fused loop.
    * ``torch-compile``: ``torch.compile`` of the fused loop, ``mode="reduce-overhead"``
      on CUDA (CUDA graphs), Inductor's default on CPU.
    * ``tensorrt``: the fused loop as a TensorRT engine (fp16, persons 1..32, N fixed).

    ``precision``: ``int8`` (onnxruntime only) runs the denoiser with int8 weights
    (:mod:`engines.runtime.quantize`); tensorrt defaults to fp16, the others run fp32.
    """
    from .fused_sampler import CudaGraphSampler, FusedSampler, OrtFusedSampler

    from .quantize import check_int8, int8_onnx

    weights = Path(weights or DENOISER_WEIGHTS)
    int8 = check_int8(precision, backend)
    if backend == "onnxruntime":
        if num_steps == 1:
            return None
        if importlib.util.find_spec("onnx") is None:
            global _warned_no_onnx
            if not _warned_no_onnx:
                log.warning("`onnx` is not installed: the sampler runs step by step on ONNX Runtime "
                            "(`pip install onnx` for the fused loop)")
                _warned_no_onnx = True
            return None
        onnx_path = weights.with_suffix(".onnx")
        sampler = OrtFusedSampler(int8_onnx(onnx_path) if int8 else onnx_path, scheduler, num_steps, threads=threads,
                                  device=device)
        if int8:
            sampler.info.precision = "int8"
            sampler.info.source = f"{onnx_path} (int8 weights, fused, K={num_steps})"
        return sampler
    fused = FusedSampler(model, scheduler, num_steps)
    info = EngineInfo("sampler", backend, device, "fp32", torch.get_num_threads(),
                      source=str(weights), details={"K": num_steps})
    if backend == "torch":
        if device == "cpu":
            return None
        graph = CudaGraphSampler(fused, device)
        info.details["cuda_graph"] = True
        return TensorSampler(graph, device, info)
    if backend == "torch-compile":
        mode = "reduce-overhead" if device == "cuda" else None
        info.details["mode"] = mode or "default"
        compiled = torch.compile(fused.to(device), mode=mode, fullgraph=True)
        return TensorSampler(compiled, device, info)
    if backend == "tensorrt":
        from .tensorrt_engine import TensorRTEngine

        spec = sampler_spec(model.config.x_dim, model.config.cond_dim, num_samples)
        engine = TensorRTEngine(spec, fused, file_sha256(weights), precision=precision or "fp16",
                                extra_key={"num_steps": num_steps, "plan": [t for t, _ in fused.plan]})
        return TensorSampler(lambda c, n: engine.run_tensors({"cond": c, "noise": n})["x"], "cuda", engine.info,
                             max_batch=spec.max_batch)
    raise ValueError(f"unknown backend {backend!r}")

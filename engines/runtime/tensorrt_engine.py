"""TensorRT engines through torch-tensorrt (the optional ``gpu`` extra).

A module is exported (``torch.export``, batch dimension dynamic) and compiled with
torch-tensorrt's dynamo frontend for the spec's batch range (one optimisation profile,
min/opt/max = 1/8/32 by default), in FP16 by default, saved with ``torch_tensorrt.save``
under the engine cache and loaded from there with ``torch_tensorrt.load`` next time. The cache file name carries a hash of the model
file, the shapes, the precision, torch / torch-tensorrt / TensorRT / CUDA versions and the
GPU name (:mod:`engines.runtime.cache`), so any change rebuilds.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Mapping

import torch

from .backends import check_backend
from .cache import cache_fields, cache_path, write_fields
from .spec import EngineInfo, ModelSpec
from .torch_engine import TensorEngine

log = logging.getLogger("engines.runtime")


def _trt_inputs(spec: ModelSpec, dtype: torch.dtype):
    import torch_tensorrt

    out = []
    for t in spec.inputs:
        lo, opt, hi = (t.concrete(b) for b in (spec.min_batch, spec.opt_batch, spec.max_batch))
        tdtype = getattr(torch, t.dtype) if t.dtype.startswith("int") else dtype
        out.append(torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=tdtype))
    return out


def _examples(spec: ModelSpec, batch: int, device: str = "cuda") -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(t.concrete(batch), dtype=getattr(torch, t.dtype), device=device) for t in spec.inputs)


def export_program(spec: ModelSpec, module: torch.nn.Module, device: str = "cuda"):
    """``torch.export`` of ``module`` with one dynamic batch dimension shared by all inputs;
    returns (program, example inputs, dynamic_shapes)."""
    batch = torch.export.Dim("batch", min=spec.min_batch, max=spec.max_batch)
    dynamic = tuple({0: batch} for _ in spec.inputs)
    params = list(inspect.signature(module.forward).parameters.values())
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        dynamic = (dynamic,)  # forward(*inputs): the shapes of the one *args entry
    examples = _examples(spec, spec.opt_batch, device)
    return torch.export.export(module, examples, dynamic_shapes=dynamic, strict=False), examples, dynamic


def build_engine(spec: ModelSpec, module: torch.nn.Module, path: Path, precision: str = "fp16"):
    """Compile ``module`` for ``spec`` and save it to ``path``; returns the compiled module.

    The module is exported first with one ``torch.export.Dim`` shared by every input's
    batch dimension (the sampler's condition and noise must agree on it; separate
    per-input dimensions, as plain ``torch_tensorrt.Input`` ranges would give, fail
    export's shape checks), then compiled with the spec's min/opt/max profile.
    """
    import torch_tensorrt

    program, examples, dynamic = export_program(spec, module.eval().cuda())
    precisions = {torch.float16, torch.float32} if precision == "fp16" else {torch.float32}
    kwargs = dict(arg_inputs=_trt_inputs(spec, torch.float32), enabled_precisions=precisions, min_block_size=1)
    # torch-tensorrt 2.9+ defaults to explicit typing, under which enabled_precisions is ignored;
    # FP16 needs weak typing there.
    if precision == "fp16" and "use_explicit_typing" in inspect.signature(torch_tensorrt.dynamo.compile).parameters:
        kwargs["use_explicit_typing"] = False
    trt_module = torch_tensorrt.dynamo.compile(program, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    torch_tensorrt.save(trt_module, str(tmp), arg_inputs=list(examples), dynamic_shapes=dynamic)
    tmp.replace(path)  # atomic: a half-written engine is never found in the cache
    return trt_module


class TensorRTEngine(TensorEngine):
    """A TensorRT engine for a module, loaded from the cache or built (and cached)."""

    def __init__(self, spec: ModelSpec, module: torch.nn.Module, model_sha256: str, *, precision: str = "fp16",
                 cache_directory: Path | None = None, extra_key: dict | None = None, rebuild: bool = False):
        check_backend("tensorrt", "cuda")
        import torch_tensorrt

        self.spec = spec
        fields = cache_fields(model_sha256, spec.profile(), precision, extra=extra_key)
        path = cache_path(spec.name, fields, ".ep", cache_directory)
        built = False
        self.module = None
        if path.is_file() and not rebuild:
            try:
                self.module = torch_tensorrt.load(str(path)).module()
            except Exception as exc:  # noqa: BLE001 - a stale or truncated file: rebuild it
                log.warning("%s: cannot load cached engine (%s); rebuilding", path, str(exc).splitlines()[0])
        if self.module is None:
            log.info("building TensorRT engine %s (%s, batch %d..%d)", spec.name, precision, spec.min_batch,
                     spec.max_batch)
            self.module = build_engine(spec, module, path, precision)
            write_fields(path, fields)
            built = True
        self.info = EngineInfo(spec.name, "tensorrt", "cuda", precision, None, str(path),
                               details={"built": built})

    @torch.inference_mode()
    def run_tensors(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        args = [inputs[t.name].cuda() for t in self.spec.inputs]
        outs = self.module(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return {name: o.float() for name, o in zip(self.spec.outputs, outs)}

"""torch engines: eager (cpu or cuda) and ``torch.compile``.

A module here takes the spec's inputs positionally, in order, and returns a tuple of
outputs in the spec's order. ``run`` takes and returns numpy (the perception interface);
``run_tensors`` keeps torch tensors on the device (the sampler's interface).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .spec import EngineInfo, ModelSpec


class TensorEngine:
    """What the torch-based engines share: ``run`` on numpy arrays around their
    ``run_tensors``, and ``describe``."""

    info: EngineInfo

    def run_tensors(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.run_tensors({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()})
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def describe(self) -> str:
        return self.info.describe()


class TorchEngine(TensorEngine):
    """An ``nn.Module`` behind the engine interface.

    ``backend="torch-compile"`` wraps it in ``torch.compile``: on CUDA with
    ``mode="max-autotune"`` (or ``compile_mode``), on CPU with Inductor's default mode.
    The first call of each new shape compiles (seconds to minutes); later calls are fast.
    """

    def __init__(self, spec: ModelSpec, module: torch.nn.Module, *, backend: str = "torch", device: str = "cpu",
                 compile_mode: str | None = None, precision: str = "fp32"):
        if backend not in ("torch", "torch-compile"):
            raise ValueError(f"TorchEngine runs torch or torch-compile, not {backend!r}")
        self.spec = spec
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16":
            self.module = self.module.half()
        details = {}
        if backend == "torch-compile":
            mode = compile_mode or ("max-autotune" if self.device.type == "cuda" else None)
            self.callable = torch.compile(self.module, mode=mode, dynamic=True)
            details["mode"] = mode or "default"
        else:
            self.callable = self.module
        self.info = EngineInfo(spec.name, backend, str(self.device), precision, torch.get_num_threads(),
                               details=details)

    @torch.inference_mode()
    def run_tensors(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        args = []
        for t in self.spec.inputs:
            x = inputs[t.name].to(self.device)
            args.append(x.to(self.dtype) if x.is_floating_point() else x)
        outs = self.callable(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return {name: o.float() for name, o in zip(self.spec.outputs, outs)}

"""ONNX Runtime: the one place sessions are made (explicit thread counts, sequential
execution, full graph optimisation), and the engine wrapping a session."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .spec import EngineInfo, ModelSpec, TensorSpec

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def make_session(
    model: str | Path | bytes,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
):
    """An ONNX Runtime inference session with explicit thread counts.

    Args:
        model: the .onnx file, or a serialised model (bytes) built in memory.
        providers: execution providers in order of preference, e.g.
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; default CPU.
        intra_op_threads: threads inside one operator (this project's CPU machines have two
            cores shared with other stages: keep it at 1-2).
        inter_op_threads: threads across operators (sequential execution: 1).
    """
    import onnxruntime as ort

    if not isinstance(model, bytes):
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"{model}: model file missing; the bundled models ship with the repository "
                                    "(engines/*/assets); regenerate them with their export tool")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = int(inter_op_threads)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    wanted = list(providers) if providers else ["CPUExecutionProvider"]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ValueError(
            f"ONNX Runtime providers {missing} are not available here (available: {available}); "
            "install the matching onnxruntime package (e.g. onnxruntime-gpu) or pick from the list"
        )
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                providers=wanted)


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def spec_from_session(session, name: str) -> ModelSpec:
    """The spec of a loaded model (symbolic dimensions read as the dynamic batch)."""
    types = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}
    inputs = tuple(TensorSpec(i.name, tuple(_dim(d) for d in i.shape), types.get(i.type, "float32"))
                   for i in session.get_inputs())
    outs = session.get_outputs()
    return ModelSpec(name, inputs, tuple(o.name for o in outs),
                     output_shapes=tuple(tuple(_dim(d) for d in o.shape) for o in outs))


class OrtEngine:
    """A model run by ONNX Runtime: ``run({name: array}) -> {name: array}`` (numpy)."""

    def __init__(self, spec: ModelSpec | None, model: str | Path | bytes, *, device: str = "cpu", threads: int = 1,
                 providers: Sequence[str] | None = None, name: str | None = None):
        self.session = make_session(model, providers or PROVIDERS[device], threads)
        self.spec = spec or spec_from_session(self.session, name or (Path(model).stem if not isinstance(model, bytes)
                                                                      else "model"))
        used = self.session.get_providers()
        self.info = EngineInfo(self.spec.name, "onnxruntime", "cuda" if "CUDAExecutionProvider" in used else "cpu",
                               "fp32", threads, source=None if isinstance(model, bytes) else str(model),
                               details={"providers": "+".join(p.replace("ExecutionProvider", "") for p in used)})

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(list(self.spec.outputs), {k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return dict(zip(self.spec.outputs, outs))

    def describe(self) -> str:
        return self.info.describe()

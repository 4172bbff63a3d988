"""One engine interface over several backends.

A model is described by a :class:`ModelSpec` (input names and shapes with a dynamic batch,
output names, dtype) and loaded for a backend; the engine's ``run(inputs) -> outputs`` takes
and returns numpy arrays by name (torch engines also have ``run_tensors`` for tensors on
their device), and ``engine.info`` / ``engine.describe()`` say what actually runs.

Backends: ``onnxruntime`` (the CPU default), ``torch`` (eager), ``torch-compile``,
``tensorrt`` (torch-tensorrt, cached engines). :func:`resolve_backend` picks one for
``auto``. See ``docs/engines.md``.
"""

from .backends import BACKENDS, BackendChoice, BackendUnavailable, check_backend, resolve_backend
from .cache import cache_dir, cache_fields, cache_key, cache_path
from .models import load_denoiser_engine, load_onnx_model, load_sampler
from .ort import OrtEngine, make_session
from .spec import EngineInfo, ModelSpec, TensorSpec

__all__ = [
    "BACKENDS", "BackendChoice", "BackendUnavailable", "EngineInfo", "ModelSpec", "OrtEngine", "TensorSpec",
    "cache_dir", "cache_fields", "cache_key", "cache_path", "check_backend", "load_denoiser_engine",
    "load_onnx_model", "load_sampler", "make_session", "resolve_backend",
]

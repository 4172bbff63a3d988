"""Which backends exist on this machine, and which one to use.

Backends: ``onnxruntime`` (CPU default; CUDA execution provider with onnxruntime-gpu),
``torch`` (eager, cpu or cuda), ``torch-compile`` (``torch.compile``; on CPU it needs a C++
compiler for Inductor), ``tensorrt`` (torch-tensorrt, CUDA only). ``resolve_backend("auto")``
picks TensorRT when importable with CUDA, else torch-compile on CUDA, else ONNX Runtime on
CPU, and logs its choice. A backend asked for by name that cannot run here is a
:class:`BackendUnavailable` naming what to install.

The availability probes are small module-level functions so tests can monkeypatch them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from typing import NamedTuple

log = logging.getLogger("engines.runtime")

BACKENDS = ("onnxruntime", "torch", "torch-compile", "tensorrt")
DEVICES = ("cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run on this machine; the message says what to install."""


class BackendChoice(NamedTuple):
    backend: str
    device: str
    reason: str


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("torch_tensorrt") is not None


def onnxruntime_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def cxx_compiler() -> str | None:
    """Path of the C++ compiler torch.compile's CPU code generation would use, if any."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def check_backend(backend: str, device: str) -> None:
    """Raise :class:`BackendUnavailable` (or ValueError for an unknown name) unless
    ``backend`` can run on ``device`` here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
    _check_device(device)
    if backend == "tensorrt":
        if device != "cuda":
            raise BackendUnavailable("backend tensorrt runs on cuda only; use --device cuda on an NVIDIA GPU")
        missing = []
        if not tensorrt_importable():
            missing.append("torch_tensorrt is not installed: `pip install 'smplstream[gpu]'` "
                           "(torch-tensorrt matching torch's minor version)")
        if not cuda_available():
            missing.append("torch sees no CUDA device (needs an NVIDIA GPU and a CUDA build of torch)")
        if missing:
            raise BackendUnavailable("backend tensorrt: " + "; ".join(missing))
        return
    if device == "cuda" and not cuda_available() and backend != "onnxruntime":
        raise BackendUnavailable(f"backend {backend} on cuda: torch sees no CUDA device; install a CUDA build "
                                 "of torch (https://pytorch.org/get-started) on a machine with an NVIDIA GPU")
    if backend == "onnxruntime":
        if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime_providers():
            raise BackendUnavailable("backend onnxruntime on cuda: no CUDAExecutionProvider in this onnxruntime; "
                                     "`pip uninstall onnxruntime && pip install onnxruntime-gpu`")
    elif backend == "torch-compile":
        if device == "cpu" and cxx_compiler() is None:
            raise BackendUnavailable("backend torch-compile on cpu: no C++ compiler found (torch.compile generates "
                                     "C++ on CPU); install one (`apt-get install g++`) or set $CXX, or use "
                                     "--backend onnxruntime")


def resolve_backend(backend: str = "auto", device: str | None = None) -> BackendChoice:
    """The backend and device to use.

    ``auto``: TensorRT if torch_tensorrt imports and CUDA is there, else torch-compile on
    CUDA, else ONNX Runtime on CPU (``device="cpu"`` forces the CPU choice); the choice is
    logged. A named backend is checked (:func:`check_backend`); its device defaults to cuda
    for tensorrt, cuda-if-available for torch-compile, cpu otherwise.
    """
    if device is not None:
        _check_device(device)
    if backend == "auto":
        use_cuda = device != "cpu" and cuda_available()
        if device == "cuda" and not use_cuda:
            raise BackendUnavailable("device cuda asked for but torch sees no CUDA device")
        if use_cuda and tensorrt_importable():
            choice = BackendChoice("tensorrt", "cuda", "CUDA device and torch_tensorrt present")
        elif use_cuda:
            choice = BackendChoice("torch-compile", "cuda", "CUDA device, torch_tensorrt not installed")
        else:
            choice = BackendChoice("onnxruntime", "cpu", "no CUDA device" if device is None else "device cpu")
        # Once per stage: debug (the run plan, printed with -v, says it once for all stages).
        log.debug("backend auto -> %s on %s (%s)", choice.backend, choice.device, choice.reason)
        return choice
    if device is None:
        if backend == "tensorrt":
            device = "cuda"
        elif backend == "torch-compile":
            device = "cuda" if cuda_available() else "cpu"
        else:
            device = "cpu"
    check_backend(backend, device)
    return BackendChoice(backend, device, "asked for")

"""int8 weights for ONNX Runtime on CPU: the denoiser with dynamically quantised matrix products.

The denoiser is an 8.4 M-parameter MLP; at the batch sizes of a live run (a few persons
times N samples) every call reads all of its weights, so it is bound by memory traffic, not
arithmetic. :func:`int8_onnx` stores the weights of its matrix products as int8 (per output
channel) and quantises the activations on the fly (ONNX Runtime's ``quantize_dynamic``:
``DynamicQuantizeLinear`` + ``MatMulInteger``, VNNI where the CPU has it): a quarter of the
bytes, about 4 times faster per call. What it costs in accuracy is measured by
``evaluate-lifter --precision int8`` (docs/performance.md).

The quantised file is made on first use and cached (:mod:`engines.runtime.cache`), keyed by
the source file's hash and the ONNX Runtime and onnx versions; nothing new is committed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from .cache import cache_path, file_sha256, write_fields

log = logging.getLogger("engines.runtime")
_building = threading.Lock()  # one int8 file made at a time; the others wait and reuse it


def check_int8(precision: str | None, backend: str) -> bool:
    """Whether ``precision`` asks for int8; a clear error where ``backend`` cannot run it."""
    if precision != "int8":
        return False
    if backend != "onnxruntime":
        raise ValueError(f"precision int8 runs on onnxruntime (CPU) only, not {backend}; "
                         "use --backend onnxruntime or leave the precision at its default")
    return True


def _fp32_weights(model) -> None:
    """Turn float16 initializers cast to float32 in the graph (how the shipped files store
    their weights) back into float32 initializers, so the quantiser sees them as weights."""
    import numpy as np
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, weights = [], []
    for n in g.node:
        if n.op_type == "Cast" and n.input[0] in inits:
            weights.append(numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]).astype(np.float32),
                                                   n.output[0]))
        else:
            nodes.append(n)
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    g.ClearField("node")
    g.node.extend(nodes)
    g.ClearField("initializer")
    g.initializer.extend(kept + weights)
    g.ClearField("value_info")  # stale after the rewrite; the quantiser re-infers shapes


def int8_onnx(path: str | Path, directory: Path | None = None) -> Path:
    """The ONNX file at ``path`` with int8 weights in its matrix products (per channel), made
    once and cached; returns the cached file. Where the cache folder cannot be written (a
    read-only home), the file is made in a temporary folder for this process, with a warning."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    fields = {"model_sha256": file_sha256(path), "precision": "int8-dynamic-per-channel",
              "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__}}
    out = cache_path(path.stem + "-int8", fields, ".onnx", directory)
    with _building:
        if out.is_file():
            return out
        log.info("building int8 weights for %s (first run only)", path.name)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _quantise(path, out)
        except OSError as exc:
            out = Path(tempfile.mkdtemp(prefix="smplstream-int8-")) / out.name
            log.warning("cannot write the engine cache (%s); int8 weights made in %s for this run only "
                        "(set SMPLSTREAM_CACHE to a writable folder to keep them)", exc, out.parent)
            _quantise(path, out)
        write_fields(out, fields)
        log.debug("int8 weights for %s cached at %s", path.name, out)
    return out


class _QuantiserLogs(logging.Filter):
    """ONNX Runtime's quantiser logs every tensor it handles, and advice meant for model
    authors, on the root logger; short of an error, those records are shown with -v only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and "quantization" in record.pathname:
            return record.levelno >= logging.ERROR or log.isEnabledFor(logging.DEBUG)
        return True


@contextlib.contextmanager
def _quiet_quantiser():
    quiet = _QuantiserLogs()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _quantise(path: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(path))
    _fp32_weights(model)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(src))
        partial = Path(tmp) / "int8.onnx"
        with _quiet_quantiser():
            quantize_dynamic(str(src), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        # Atomic: a concurrent process never reads a half-written file.
        fd, staging = tempfile.mkstemp(dir=out.parent, suffix=".part")
        os.close(fd)
        Path(staging).write_bytes(partial.read_bytes())
        os.replace(staging, out)

"""The whole few-step sampler in one call: K DDIM steps for N samples of B persons.

``sample()`` in :mod:`engines.diffusion.sampler` runs one network call per step from
Python: per step a ``torch.full`` for the times, a call into the network (or an ONNX
Runtime ``run`` with its input/output copies) and a few small tensor ops for the update.
Here the loop is fixed at build time (K and the times are constants) and runs as one unit:

* :class:`FusedSampler` (torch): ``forward(cond (B, C), noise (B, N, X)) -> (B, N, X)``,
  the loop unrolled in Python over constants, so ``torch.compile``, CUDA graph capture and
  torch-tensorrt see one static graph.
* :func:`build_fused_onnx`: the same loop as one ONNX graph, made at run time by graph
  surgery on the shipped ``denoiser.onnx`` (nothing new is committed): the network's
  nodes are copied once per step with the step's time as a constant, while the weights
  and everything that depends only on the condition (the weight casts, the condition
  MLP) are shared by all steps. With the time constant, ONNX Runtime's constant folding
  computes each step's time embedding once, when the session is made. Building needs the
  ``onnx`` package (protobuf only; no onnxscript, no torch exporter).
* :class:`OrtFusedSampler`: that graph on ONNX Runtime, called like :class:`FusedSampler`.
* :class:`CudaGraphSampler`: a :class:`FusedSampler` captured into a CUDA graph per input
  shape and replayed (no per-kernel launch cost).

Same noise in, same samples out as the step-by-step ``sample()`` (within float rounding),
so a seeded Lifter gives the same result on every path.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from engines.diffusion.schedule import DDIMScheduler
from engines.run_defaults import LIFT_STEPS

from .spec import EngineInfo


def ddim_plan(scheduler: DDIMScheduler, num_steps: int) -> list[tuple[int, tuple[float, float, float, float] | None]]:
    """Per step: the time ``t`` and its :meth:`DDIMScheduler.ddim_coefficients` (``None`` on
    the last step, whose result is the predicted clean sample itself)."""
    return [(t, scheduler.ddim_coefficients(t, t_prev)) for t, t_prev in scheduler.timesteps(num_steps)]


class FusedSampler(torch.nn.Module):
    """K DDIM steps of ``denoiser`` as one module: ``(cond (B, C), noise (B, N, X)) -> (B, N, X)``."""

    def __init__(self, denoiser: torch.nn.Module, scheduler: DDIMScheduler | None = None,
                 num_steps: int = LIFT_STEPS["offline"]):
        super().__init__()
        self.denoiser = denoiser.eval()
        self.num_steps = int(num_steps)
        self.plan = ddim_plan(scheduler or DDIMScheduler(), num_steps)
        for i, (t, coefs) in enumerate(self.plan):
            self.register_buffer(f"t{i}", torch.tensor([t], dtype=torch.long), persistent=False)
            if coefs is not None:
                self.register_buffer(f"k{i}", torch.tensor(coefs, dtype=torch.float32), persistent=False)

    def forward(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        b, n, d = noise.shape
        x = noise.reshape(b * n, d)
        # Row b * n + j is sample j of person b, as repeat_interleave gives in sample(); the
        # expand form has no host-side size computation (CUDA graph capture, torch.export).
        cond_rows = cond.unsqueeze(1).expand(b, n, cond.shape[1]).reshape(b * n, cond.shape[1])
        for i, (_, coefs) in enumerate(self.plan):
            t = getattr(self, f"t{i}").expand(b * n)
            x0 = self.denoiser(x, t, cond_rows)
            if coefs is None:
                x = x0
            else:
                x = DDIMScheduler.ddim_update(x0, x, getattr(self, f"k{i}"))
        return x.reshape(b, n, d)


def build_fused_onnx(denoiser_onnx: str | Path, scheduler: DDIMScheduler | None = None,
                     num_steps: int = LIFT_STEPS["offline"]) -> bytes:
    """The K-step sampler as one serialised ONNX model, from the single-step denoiser file
    (inputs ``x_t`` (rows, X), ``t`` (rows,), ``cond`` (rows, C); output ``x0``).

    The result has inputs ``cond`` (B, C) and ``noise`` (B, N, X) and output ``x`` (B, N, X).
    The last two results are kept in memory (keyed by the file's path, size and modification
    time and by the step plan), so loading several lifters builds the graph once.
    """
    path = Path(denoiser_onnx)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no denoiser ONNX file; export it with "
                                "`python -m engines.diffusion.onnx_denoiser` (needs the export extra)")
    stat = path.stat()
    plan = tuple(ddim_plan(scheduler or DDIMScheduler(), num_steps))
    return _build_fused_onnx(str(path.resolve()), stat.st_size, stat.st_mtime_ns, plan)


@functools.lru_cache(maxsize=2)
def _build_fused_onnx(denoiser_onnx: str, _size: int, _mtime_ns: int, plan: tuple) -> bytes:
    num_steps = len(plan)
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("building the fused sampler graph needs the `onnx` package: `pip install onnx`") from None
    src = onnx.load(str(denoiser_onnx))
    g = src.graph
    names = {i.name for i in g.input}
    if not {"x_t", "t", "cond"} <= names or [o.name for o in g.output] != ["x0"]:
        raise ValueError(f"{denoiser_onnx}: not a denoiser graph (inputs x_t, t, cond; output x0)")
    x_dim = g.input[[i.name for i in g.input].index("x_t")].type.tensor_type.shape.dim[1].dim_value
    c_dim = g.input[[i.name for i in g.input].index("cond")].type.tensor_type.shape.dim[1].dim_value
    # Nodes that depend on x_t or t run once per step; the rest (weight casts, the
    # condition MLP) once for all steps.
    per_step: set[str] = {"x_t", "t"}
    step_nodes, shared_nodes = [], []
    for node in g.node:
        if any(i in per_step for i in node.input):
            per_step.update(node.output)
            step_nodes.append(node)
        else:
            shared_nodes.append(node)

    def rename(name: str, k: int, x_name: str) -> str:
        if name == "x_t":
            return x_name
        if name == "t":
            return f"t_{k}"
        if name == "cond":
            return "cond_rows"
        return f"s{k}/{name}" if name in per_step else name

    nodes = [
        helper.make_node("Shape", ["noise"], ["bn"], start=0, end=2),
        helper.make_node("Concat", ["bn", "c_dim"], ["bnc"], axis=0),
        helper.make_node("Unsqueeze", ["cond", "axis1"], ["cond_b1c"]),
        helper.make_node("Expand", ["cond_b1c", "bnc"], ["cond_bnc"]),
        helper.make_node("Reshape", ["cond_bnc", "rows_c"], ["cond_rows"]),
        helper.make_node("Reshape", ["noise", "rows_x"], ["x_0"]),
        helper.make_node("Shape", ["noise"], ["noise_shape"]),
    ]
    inits = list(g.initializer) + [
        numpy_helper.from_array(np.array([c_dim], np.int64), "c_dim"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1, c_dim], np.int64), "rows_c"),
        numpy_helper.from_array(np.array([-1, x_dim], np.int64), "rows_x"),
    ]
    for node in shared_nodes:
        nodes.append(helper.make_node(node.op_type, [rename(i, 0, "x_t") for i in node.input], list(node.output),
                                      name=node.name, domain=node.domain))
        nodes[-1].attribute.extend(node.attribute)
    x_name = "x_0"
    for k, (t, coefs) in enumerate(plan):
        # A one-element time: the time embedding broadcasts over rows and folds to a constant.
        inits.append(numpy_helper.from_array(np.array([t], np.int64), f"t_{k}"))
        for node in step_nodes:
            new = helper.make_node(node.op_type, [rename(i, k, x_name) for i in node.input],
                                   [rename(o, k, x_name) for o in node.output], name=f"s{k}/{node.name}",
                                   domain=node.domain)
            new.attribute.extend(node.attribute)
            nodes.append(new)
        x0 = f"s{k}/x0"
        if coefs is None:
            x_name = x0
            continue
        for j, c in enumerate(coefs):
            inits.append(numpy_helper.from_array(np.array(c, np.float32), f"k{k}_{j}"))
        nxt = f"x_{k + 1}"
        nodes += [  # DDIMScheduler.ddim_update, as graph nodes
            helper.make_node("Mul", [f"k{k}_0", x0], [f"s{k}/a"]),
            helper.make_node("Sub", [x_name, f"s{k}/a"], [f"s{k}/b"]),
            helper.make_node("Div", [f"s{k}/b", f"k{k}_1"], [f"s{k}/eps"]),
            helper.make_node("Mul", [f"k{k}_2", x0], [f"s{k}/c"]),
            helper.make_node("Mul", [f"k{k}_3", f"s{k}/eps"], [f"s{k}/d"]),
            helper.make_node("Add", [f"s{k}/c", f"s{k}/d"], [nxt]),
        ]
        x_name = nxt
    nodes.append(helper.make_node("Reshape", [x_name, "noise_shape"], ["x"]))
    graph = helper.make_graph(
        nodes, f"ddim_sampler_k{num_steps}",
        [helper.make_tensor_value_info("cond", TensorProto.FLOAT, ["batch", c_dim]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", "samples", x_dim])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples", x_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=list(src.opset_import), ir_version=src.ir_version,
                              producer_name="smplstream.fused_sampler")
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OrtFusedSampler:
    """The fused sampler graph on ONNX Runtime; ``(cond, noise) -> x`` like :class:`FusedSampler`."""

    def __init__(self, denoiser_onnx: str | Path, scheduler: DDIMScheduler | None = None,
                 num_steps: int = LIFT_STEPS["offline"], *,
                 threads: int = 1, device: str = "cpu"):
        from .ort import OrtEngine

        self.num_steps = num_steps
        # The spec is read from the graph: its condition width is the denoiser's own.
        self.engine = OrtEngine(None, build_fused_onnx(denoiser_onnx, scheduler, num_steps), device=device,
                                threads=threads, name="sampler")
        self.engine.info.source = f"{denoiser_onnx} (fused, K={num_steps})"
        self.engine.info.details["K"] = num_steps
        self.info: EngineInfo = self.engine.info

    def __call__(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.engine.run({"cond": cond.detach().cpu().numpy().astype(np.float32, copy=False),
                               "noise": noise.detach().cpu().numpy().astype(np.float32, copy=False)})
        return torch.from_numpy(out["x"])


class CudaGraphSampler:
    """A :class:`FusedSampler` on CUDA, captured once per (B, N) into a ``torch.cuda.CUDAGraph``
    and replayed: inputs are copied into static buffers, the whole K-step loop is one replay.
    """

    def __init__(self, sampler: FusedSampler, device: str = "cuda"):
        self.sampler = sampler.to(device).eval()
        self.device = torch.device(device)
        self.graphs: dict[tuple[int, ...], tuple] = {}
        self.info = EngineInfo("sampler", "torch", str(self.device), "fp32", details={"cuda_graph": True})

    @torch.inference_mode()
    def _capture(self, cond_shape: tuple[int, ...], noise_shape: tuple[int, ...]):
        cond = torch.zeros(cond_shape, device=self.device)
        noise = torch.zeros(noise_shape, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
            for _ in range(2):
                self.sampler(cond, noise)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.sampler(cond, noise)
        return graph, cond, noise, out

    @torch.inference_mode()
    def __call__(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        key = tuple(cond.shape) + tuple(noise.shape)
        if key not in self.graphs:
            self.graphs[key] = self._capture(tuple(cond.shape), tuple(noise.shape))
        graph, s_cond, s_noise, s_out = self.graphs[key]
        s_cond.copy_(cond)
        s_noise.copy_(noise)
        graph.replay()
        return s_out.clone()

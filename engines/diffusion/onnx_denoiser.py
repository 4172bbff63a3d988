"""The denoiser on ONNX Runtime, the fast CPU path.

``export_onnx`` writes the network (one denoising call: ``x_t``, ``t``, ``cond`` -> ``x0``,
dynamic batch) with ``torch.onnx.export``; this needs the ``export`` extra (onnx,
onnxscript) and is done once, when the weights are made. ``OrtDenoiser`` runs the file with
nothing but ONNX Runtime and is called exactly like :class:`PoseDenoiser`, so the sampler,
the lifter and guidance use either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .denoiser import DenoiserConfig, PoseDenoiser


def export_onnx(model: PoseDenoiser, path: str | Path, *, opset: int = 18, fp16_weights: bool = True) -> Path:
    """Export ``model`` to ``path`` with a dynamic batch dimension.

    ``fp16_weights`` stores the weight tensors as float16 with a Cast back to float32 (the
    arithmetic stays float32): half the file. Exact when the weights are already float16
    values, as the shipped ones are (they are stored as float16).
    """
    path = Path(path)
    model = model.eval()
    cfg = model.config
    example = (torch.zeros(2, cfg.x_dim), torch.zeros(2, dtype=torch.long), torch.zeros(2, cfg.cond_dim))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, example, str(path), input_names=["x_t", "t", "cond"], output_names=["x0"],
                      dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), opset_version=opset,
                      dynamo=True, external_data=False)
    if fp16_weights:
        _store_weights_as_fp16(path)
    return path


def _store_weights_as_fp16(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    casts = []
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            continue
        arr = numpy_helper.to_array(init)
        if not np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
            continue  # computed constants (e.g. time frequencies) stay exact
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16")
        g.initializer.remove(init)
        g.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        g.node.insert(0, node)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


class OrtDenoiser:
    """A denoiser ONNX file run by ONNX Runtime; callable like :class:`PoseDenoiser`."""

    def __init__(self, path: str | Path, config: DenoiserConfig, *, threads: int = 1,
                 providers: list[str] | None = None):
        from engines.runtime.ort import make_session

        self.session = make_session(path, providers, intra_op_threads=threads)
        self.config = config
        self.path = Path(path)

    def eval(self) -> "OrtDenoiser":
        return self

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"x_t": x_t.detach().numpy().astype(np.float32, copy=False),
                                      "t": t.detach().numpy().astype(np.int64, copy=False),
                                      "cond": cond.detach().numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(out)


class ForwardOnly(torch.nn.Module):
    """An :class:`OrtDenoiser` as the torch module guidance expects (no parameters, no
    gradient through it: for guidance on the clean prediction, ``guide="x0"``)."""

    def __init__(self, ort_model: OrtDenoiser) -> None:
        super().__init__()
        self.ort_model = ort_model
        self.config = ort_model.config

    @classmethod
    def from_onnx(cls, path: str | Path, config: DenoiserConfig, *, precision: str = "fp32",
                  threads: int = 1) -> "ForwardOnly":
        """The denoiser ONNX file at ``path`` (``precision="int8"``: its cached int8 version,
        :func:`engines.runtime.quantize.int8_onnx`) on ONNX Runtime."""
        if precision == "int8":
            from engines.runtime.quantize import int8_onnx

            path = int8_onnx(path)
        return cls(OrtDenoiser(path, config, threads=threads))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.ort_model(x_t, t, cond)


def main(argv: list[str] | None = None) -> int:
    """Export denoiser weights (default: the bundled ones) to ONNX beside them and check the
    ONNX Runtime output against eager torch on random inputs."""
    import argparse

    from engines.diffusion.weights import DEFAULT_WEIGHTS, load_denoiser

    p = argparse.ArgumentParser(prog="export-denoiser", description=main.__doc__)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--out", help="default: the weights path with .onnx")
    args = p.parse_args(argv)
    model = load_denoiser(args.weights)
    out = Path(args.out or Path(args.weights).with_suffix(".onnx"))
    export_onnx(model, out)
    ort_model = OrtDenoiser(out, model.config)
    g = torch.Generator().manual_seed(0)
    worst_abs = worst_rel = 0.0
    for batch in (1, 8, 64):
        x = torch.randn(batch, model.config.x_dim, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        c = torch.randn(batch, model.config.cond_dim, generator=g)
        with torch.no_grad():
            ref = model(x, t, c)
        diff = (ort_model(x, t, c) - ref).abs().max().item()
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / ref.abs().max().item())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); ONNX Runtime vs torch: max abs {worst_abs:.2e}, "
          f"max rel {worst_rel:.2e}")
    return 0 if worst_rel < 1e-4 else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())

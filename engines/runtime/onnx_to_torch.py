"""A small ONNX-graph-to-``torch.nn.Module`` converter for the bundled perception models.

Why not ``onnx2torch``: it needs torchvision pinned to the installed torch, which this project
does not otherwise need. The BlazePose detector and landmark models use a dozen operators
(:data:`SUPPORTED_OPS`); this converter implements exactly those, following the ONNX operator
specification, and refuses any other operator with a clear error rather than guessing.

How it works: initialisers become float32 buffers (the models store weights in float16
with a ``Cast`` to float32; casts of constants are folded here, which is exact), and the
remaining nodes are kept as an ordered list that ``forward`` walks, calling the matching
torch function. The walk is plain Python over a fixed list, so ``torch.compile`` and
``torch.export`` (TensorRT) trace it into one graph.

``dynamic_batch=True`` reads a leading 1 in a ``Reshape`` target as "the batch dimension"
(the detector was converted with batch 1), so batches of any size go through.

Needs the ``onnx`` package to read the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SUPPORTED_OPS = frozenset({"Cast", "Conv", "Clip", "Add", "Pad", "Transpose", "Reshape", "DepthToSpace", "Resize",
                           "Concat", "MaxPool", "Sigmoid"})


class UnsupportedOnnxModel(ValueError):
    """The ONNX graph uses something this converter does not implement."""


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError("reading ONNX graphs needs the `onnx` package: `pip install onnx` "
                          "(or `pip install 'smplstream[export]'`)") from None
    return onnx, numpy_helper


def _torch_dtype(onnx_type: int) -> torch.dtype:
    onnx, _ = _onnx()
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def _conv_padding(pads: list[int], ndim: int) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """ONNX pads (begins then ends, per spatial dim) -> (F.pad argument or None, symmetric padding)."""
    begins, ends = pads[:ndim], pads[ndim:]
    if begins == ends:
        return None, tuple(begins)
    fpad: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        fpad += [b, e]
    return tuple(fpad), (0,) * ndim


class OnnxGraphModule(torch.nn.Module):
    """The converted graph. ``forward(*inputs)`` takes the graph inputs in order and returns
    a tuple of the graph outputs in order."""

    def __init__(self, model, *, dynamic_batch: bool = True, name: str = "onnx"):
        super().__init__()
        onnx, numpy_helper = _onnx()
        graph = model.graph
        self.model_name = name
        init_names = {t.name for t in graph.initializer}
        graph_inputs = [i for i in graph.input if i.name not in init_names]
        self.input_names = [i.name for i in graph_inputs]
        # (name, shape) with None for symbolic dimensions.
        self.input_shapes = [(i.name, tuple(d.dim_value or None for d in i.type.tensor_type.shape.dim))
                             for i in graph_inputs]
        self.output_names = [o.name for o in graph.output]
        self.output_shapes = [tuple(d.dim_value or None for d in o.type.tensor_type.shape.dim) for o in graph.output]
        unsupported = sorted({n.op_type for n in graph.node
                              if n.op_type not in SUPPORTED_OPS or n.domain not in ("", "ai.onnx")})
        if unsupported:
            raise UnsupportedOnnxModel(f"{name}: operators {unsupported} are not supported by the converter "
                                       f"(supported: {sorted(SUPPORTED_OPS)}); run this model with onnxruntime")
        consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self._slots: dict[str, str] = {}  # ONNX value name -> buffer attribute name
        self.nodes: list[tuple[str, list[str], list[str], dict]] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            # Fold nodes whose inputs are all constants (the float16 -> float32 weight casts).
            if node.op_type == "Cast" and node.input[0] in consts:
                consts[node.output[0]] = consts[node.input[0]].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        used = {i for _, ins, _, _ in self.nodes for i in ins} | set(self.output_names)
        self._consts_np = consts  # shape-like constants (pads, shapes, scales) are read as Python values
        for i, (cname, arr) in enumerate(sorted(consts.items())):
            if cname not in used:
                continue
            slot = f"c{i}"
            value = torch.from_numpy(np.array(arr.astype(np.float32) if arr.dtype == np.float16 else arr))
            self.register_buffer(slot, value, persistent=False)
            self._slots[cname] = slot
        self.dynamic_batch = dynamic_batch
        for op, ins, outs, attrs in self.nodes:
            self._validate(op, ins, attrs)
            self._resolve_constants(op, ins, attrs)
        del self._consts_np  # forward reads only Python values and buffers (torch.compile traces it)

    def _const(self, name: str) -> np.ndarray:
        if name not in self._consts_np:
            raise UnsupportedOnnxModel(f"{self.model_name}: input {name!r} must be a constant for this converter")
        return self._consts_np[name]

    def _validate(self, op: str, ins: list[str], attrs: dict) -> None:
        if op == "Conv" and attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOnnxModel(f"{self.model_name}: Conv auto_pad={attrs['auto_pad']!r} not supported")
        if op == "Pad" and attrs.get("mode", b"constant") not in (b"constant", "constant"):
            raise UnsupportedOnnxModel(f"{self.model_name}: Pad mode {attrs['mode']!r} not supported")
        if op == "Resize":
            mode = attrs.get("mode", b"nearest").decode()
            ctm = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
            nearest = attrs.get("nearest_mode", b"round_prefer_floor")
            ok = (mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel")) or \
                 (mode == "nearest" and ctm == "asymmetric" and nearest == b"floor")
            if not ok or len(ins) < 3 or not ins[2]:
                raise UnsupportedOnnxModel(f"{self.model_name}: Resize mode={mode} "
                                           f"coordinate_transformation_mode={ctm} (or sizes instead of scales) "
                                           "not supported")
        if op == "DepthToSpace" and attrs.get("mode", b"DCR") not in (b"DCR", b"CRD", "DCR", "CRD"):
            raise UnsupportedOnnxModel(f"{self.model_name}: DepthToSpace mode {attrs['mode']!r}")
        if op == "MaxPool" and (attrs.get("ceil_mode", 0) or attrs.get("storage_order", 0)):
            raise UnsupportedOnnxModel(f"{self.model_name}: MaxPool ceil_mode/storage_order not supported")

    def _resolve_constants(self, op: str, ins: list[str], a: dict) -> None:
        """Shape-like constant inputs (pads, target shapes, scales, clip bounds) as Python values."""
        present = lambda i: len(ins) > i and bool(ins[i])  # noqa: E731 - optional ONNX inputs
        if op == "Clip":
            a["_lo"] = float(self._const(ins[1])) if present(1) else None
            a["_hi"] = float(self._const(ins[2])) if present(2) else None
        elif op == "Pad":
            a["_pads"] = [int(p) for p in self._const(ins[1])]
            a["_value"] = float(self._const(ins[2])) if present(2) else 0.0
        elif op == "Reshape":
            a["_shape"] = [int(v) for v in self._const(ins[1])]
        elif op == "Resize":
            a["_scales"] = [float(v) for v in self._const(ins[2])]
            if a["_scales"][:2] != [1.0, 1.0]:
                raise UnsupportedOnnxModel(f"{self.model_name}: Resize over batch/channel dims")

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))

        def get(name: str) -> torch.Tensor:
            if name in env:
                return env[name]
            return getattr(self, self._slots[name])

        for op, ins, outs, a in self.nodes:
            x = get(ins[0])
            if op == "Conv":
                w = get(ins[1])
                b = get(ins[2]) if len(ins) > 2 and ins[2] else None
                nd = w.dim() - 2
                fpad, pad = _conv_padding(list(a.get("pads", [0] * 2 * nd)), nd)
                if fpad is not None:
                    x = F.pad(x, fpad)
                y = F.conv2d(x, w, b, stride=tuple(a.get("strides", [1] * nd)), padding=pad,
                             dilation=tuple(a.get("dilations", [1] * nd)), groups=int(a.get("group", 1)))
            elif op == "Clip":
                y = torch.clamp(x, a["_lo"], a["_hi"])
            elif op == "Add":
                y = x + get(ins[1])
            elif op == "Sigmoid":
                y = torch.sigmoid(x)
            elif op == "Cast":
                y = x.to(_torch_dtype(a["to"]))
            elif op == "Pad":
                pads, value = a["_pads"], a["_value"]
                n = len(pads) // 2
                fpad = []
                for d in reversed(range(n)):
                    fpad += [pads[d], pads[n + d]]
                y = F.pad(x, fpad, value=value)
            elif op == "Transpose":
                y = x.permute(*a["perm"])
            elif op == "Reshape":
                shape = list(a["_shape"])
                if self.dynamic_batch and shape and shape[0] == 1:
                    shape[0] = x.shape[0]
                shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
                y = x.reshape(shape)
            elif op == "DepthToSpace":
                bs = int(a["blocksize"])
                n, c, h, w = x.shape
                if a.get("mode", b"DCR") in (b"DCR", "DCR"):
                    y = x.reshape(n, bs, bs, c // bs**2, h, w).permute(0, 3, 4, 1, 5, 2)
                else:
                    y = x.reshape(n, c // bs**2, bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
                y = y.reshape(n, c // bs**2, h * bs, w * bs)
            elif op == "Resize":
                scales = a["_scales"]
                if a.get("mode", b"nearest") == b"linear":
                    y = F.interpolate(x, scale_factor=tuple(scales[2:]), mode="bilinear", align_corners=False)
                else:
                    y = F.interpolate(x, scale_factor=tuple(scales[2:]), mode="nearest")
            elif op == "Concat":
                y = torch.cat([get(i) for i in ins], dim=int(a["axis"]))
            elif op == "MaxPool":
                k = tuple(a["kernel_shape"])
                nd = len(k)
                fpad, pad = _conv_padding(list(a.get("pads", [0] * 2 * nd)), nd)
                if fpad is not None:
                    x = F.pad(x, fpad, value=float("-inf"))
                y = F.max_pool2d(x, k, stride=tuple(a.get("strides", [1] * nd)), padding=pad,
                                 dilation=tuple(a.get("dilations", [1] * nd)))
            else:  # pragma: no cover - rejected in __init__
                raise UnsupportedOnnxModel(f"{self.model_name}: operator {op}")
            env[outs[0]] = y
        return tuple(env[name] for name in self.output_names)


def load_onnx_as_torch(path: str | Path, *, dynamic_batch: bool = True) -> OnnxGraphModule:
    """Read an ONNX file and convert it (see the module docstring for what is supported)."""
    onnx, _ = _onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    return OnnxGraphModule(onnx.load(str(path)), dynamic_batch=dynamic_batch, name=path.name).eval()


def batch_dynamic_onnx(path: str | Path) -> bytes:
    """The ONNX file with its batch dimension made dynamic (inputs, outputs, and a leading 1
    in constant Reshape targets turned into 0, "copy from the input"), serialised for ONNX
    Runtime. The detector was converted with a fixed batch of 1."""
    onnx, numpy_helper = _onnx()
    model = onnx.load(str(path))
    g = model.graph
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            t = inits[node.input[1]]
            shape = numpy_helper.to_array(t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), t.name))
    del g.value_info[:]  # stale batch-1 shapes of intermediate values
    return model.SerializeToString()

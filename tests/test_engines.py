"""The engine layer: backend selection and the engine cache key (everywhere, availability
monkeypatched), the ONNX-to-torch converter against ONNX Runtime (per operator, and on a real
frame of the test clip), the fused sampler against the step-by-step loop, the export checks
against their thresholds, and TensorRT (only where torch_tensorrt and CUDA are present)."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.diffusion.sampler import draw_noise, sample
from engines.diffusion.schedule import DDIMScheduler
from engines.runtime import backends as B
from engines.runtime import cache as C
from engines.runtime import tensorrt_engine as T
from engines.runtime.backends import BackendUnavailable, resolve_backend
from engines.runtime.fused_sampler import FusedSampler, ddim_plan
from engines.runtime.catalog import shipped_cond_dim
from engines.runtime.spec import ModelSpec, TensorSpec

torch.set_num_threads(1)
COND = shipped_cond_dim()  # the bundled denoiser's condition width
HAS_ONNX = importlib.util.find_spec("onnx") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx package (`pip install onnx`)")
HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None and torch.cuda.is_available()
CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has (or lacks) CUDA, torch_tensorrt, a C++ compiler, ORT's CUDA EP."""

    def configure(cuda=False, trt=False, cxx="/usr/bin/c++", cuda_ep=False):
        monkeypatch.setattr(B, "cuda_available", lambda: cuda)
        monkeypatch.setattr(B, "tensorrt_importable", lambda: trt)
        monkeypatch.setattr(B, "cxx_compiler", lambda: cxx)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_ep else ["CPUExecutionProvider"]
        monkeypatch.setattr(B, "onnxruntime_providers", lambda: providers)

    return configure


# ---------------------------------------------------------------- backend selection


@pytest.mark.parametrize("cuda, trt, device, expected", [
    (True, True, None, ("tensorrt", "cuda")),
    (True, False, None, ("torch-compile", "cuda")),
    (False, True, None, ("onnxruntime", "cpu")),
    (False, False, None, ("onnxruntime", "cpu")),
    (True, True, "cpu", ("onnxruntime", "cpu")),
])
def test_auto_picks_tensorrt_then_compile_on_cuda_then_onnxruntime(machine, caplog, cuda, trt, device, expected):
    machine(cuda=cuda, trt=trt)
    with caplog.at_level(logging.DEBUG, logger="engines.runtime"):
        choice = resolve_backend("auto", device)
    assert (choice.backend, choice.device) == expected
    assert f"backend auto -> {expected[0]} on {expected[1]}" in caplog.text


@pytest.mark.parametrize("backend, device, setup, hint", [
    ("tensorrt", None, dict(cuda=True, trt=False), "pip install 'smplstream[gpu]'"),
    ("tensorrt", "cpu", dict(cuda=True, trt=True), "cuda only"),
    ("tensorrt", None, dict(cuda=False, trt=True), "no CUDA device"),
    ("tensorrt", None, dict(cuda=False, trt=False), "pip install 'smplstream[gpu]'"),
    ("onnxruntime", "cuda", dict(cuda=True), "onnxruntime-gpu"),
    ("torch-compile", "cpu", dict(cxx=None), "C++ compiler"),
    ("torch", "cuda", dict(cuda=False), "CUDA build of torch"),
])
def test_missing_backend_says_what_to_install(machine, backend, device, setup, hint):
    machine(**setup)
    with pytest.raises(BackendUnavailable, match=re.escape(hint)):
        resolve_backend(backend, device)


def test_available_backends_resolve_with_their_default_device(machine):
    machine(cuda=True, trt=True, cuda_ep=True)
    assert resolve_backend("tensorrt") [:2] == ("tensorrt", "cuda")
    assert resolve_backend("torch-compile")[:2] == ("torch-compile", "cuda")
    assert resolve_backend("onnxruntime", "cuda")[:2] == ("onnxruntime", "cuda")
    machine(cuda=False)
    assert resolve_backend("torch-compile")[:2] == ("torch-compile", "cpu")  # a C++ compiler is there
    assert resolve_backend("torch")[:2] == ("torch", "cpu")
    with pytest.raises(ValueError, match="unknown backend 'trt'"):
        resolve_backend("trt")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_backend("torch", "gpu")


def test_lifter_with_a_missing_backend_is_a_clear_error(machine):
    from engines.lifting.lifter import Lifter

    machine(cuda=False, trt=False)
    with pytest.raises(BackendUnavailable, match="smplstream"):
        Lifter.load(backend="tensorrt")


# ---------------------------------------------------------------- engine cache


def _fields(**change):
    base = dict(model_sha256="ab" * 32, shapes={"x": ((1, 4), (8, 4), (32, 4))}, precision="fp16",
                versions={"torch": "2.13.0", "torch_tensorrt": "2.13.0", "tensorrt": "10.9", "cuda": "12.8"},
                gpu="NVIDIA H100")
    base.update(change)
    return C.cache_fields(base.pop("model_sha256"), base.pop("shapes"), base.pop("precision"), **base)


def test_cache_key_changes_with_every_field_and_only_then():
    key = C.cache_key(_fields())
    assert C.cache_key(_fields()) == key
    variants = [
        _fields(model_sha256="cd" * 32),
        _fields(shapes={"x": ((1, 4), (8, 4), (16, 4))}),
        _fields(precision="fp32"),
        _fields(gpu="NVIDIA H200"),
        _fields(extra={"num_steps": 2}),
    ]
    for lib in ("torch", "torch_tensorrt", "tensorrt", "cuda"):
        versions = {"torch": "2.13.0", "torch_tensorrt": "2.13.0", "tensorrt": "10.9", "cuda": "12.8"}
        versions[lib] = "9.9"
        variants.append(_fields(versions=versions))
    keys = {C.cache_key(f) for f in variants}
    assert key not in keys and len(keys) == len(variants)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SMPLSTREAM_CACHE", str(tmp_path / "c"))
    assert C.cache_dir() == tmp_path / "c"
    path = C.cache_path("sampler", _fields())
    assert path.parent == tmp_path / "c" and path.name.startswith("sampler-") and path.suffix == ".ep"
    monkeypatch.delenv("SMPLSTREAM_CACHE")
    assert C.cache_dir() == Path.home() / ".cache" / "smplstream" / "engines"


def test_tensorrt_engine_is_cached_and_rebuilt_when_the_key_changes(machine, monkeypatch, tmp_path):
    """The cache logic of TensorRTEngine with torch_tensorrt replaced by a recorder."""
    machine(cuda=True, trt=True)
    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = "2.13.0"
    loads, builds = [], []
    fake.load = lambda path: loads.append(path) or types.SimpleNamespace(module=lambda: torch.nn.Identity())
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)

    def fake_build(spec, module, path, precision):
        builds.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"engine")
        return module

    monkeypatch.setattr(T, "build_engine", fake_build)
    spec = ModelSpec("toy", (TensorSpec("x", (None, 4)),), ("y",))
    first = T.TensorRTEngine(spec, torch.nn.Identity(), "11" * 32, cache_directory=tmp_path)
    assert first.info.details["built"] and len(builds) == 1 and not loads
    fields = Path(first.info.cache_file).with_suffix(".json").read_text()
    assert '"model_sha256": "' + "11" * 32 in fields and '"torch_tensorrt": "2.13.0"' in fields
    again = T.TensorRTEngine(spec, torch.nn.Identity(), "11" * 32, cache_directory=tmp_path)
    assert not again.info.details["built"] and len(builds) == 1 and loads == [again.info.cache_file]
    assert again.info.cache_file == first.info.cache_file
    new_weights = T.TensorRTEngine(spec, torch.nn.Identity(), "22" * 32, cache_directory=tmp_path)
    fp32 = T.TensorRTEngine(spec, torch.nn.Identity(), "11" * 32, cache_directory=tmp_path, precision="fp32")
    assert new_weights.info.details["built"] and fp32.info.details["built"] and len(builds) == 3
    assert len({first.info.cache_file, new_weights.info.cache_file, fp32.info.cache_file}) == 3


@pytest.mark.skipif(not HAS_TRT, reason="needs torch_tensorrt and a CUDA device")
def test_tensorrt_sampler_matches_eager_and_loads_from_cache(monkeypatch, tmp_path):
    from engines.diffusion.weights import load_denoiser
    from engines.runtime.export import FP16_THRESHOLDS
    from engines.runtime.models import load_sampler

    monkeypatch.setenv("SMPLSTREAM_CACHE", str(tmp_path))
    model = load_denoiser()
    cond, noise = torch.randn(8, COND), torch.randn(8, 8, 154)
    ref = FusedSampler(model, DDIMScheduler(), 4)(cond, noise)
    built = load_sampler("tensorrt", "cuda", model, num_steps=4, num_samples=8)
    err = (built(cond, noise) - ref).abs().max() / ref.abs().max()
    assert err < FP16_THRESHOLDS["sampler"]
    assert built.info.details["built"]
    assert not load_sampler("tensorrt", "cuda", model, num_steps=4, num_samples=8).info.details["built"]


# ---------------------------------------------------------------- ONNX -> torch


def _run_both(nodes, inputs, inits=(), opset=17):
    """A one-op ONNX graph run by ONNX Runtime and by the converter."""
    from onnx import TensorProto, helper, numpy_helper

    from engines.runtime.onnx_to_torch import OnnxGraphModule
    from engines.runtime.ort import make_session

    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    ref = make_session(model.SerializeToString()).run(None, inputs)[0]
    with torch.no_grad():
        got = OnnxGraphModule(model, dynamic_batch=False)(*(torch.from_numpy(a) for a in inputs.values()))[0]
    return ref, got.numpy()


@needs_onnx
@pytest.mark.parametrize("case", ["conv_asym", "depthwise", "d2s_dcr", "d2s_crd", "resize", "maxpool", "pad",
                                  "clip_cast_sigmoid", "reshape_transpose_concat"])
def test_each_operator_matches_onnxruntime(case):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    f16 = lambda a: a.astype(np.float16)  # noqa: E731 - weights stored as in the shipped models
    nodes, inits = [], []
    if case in ("conv_asym", "depthwise"):
        group = 8 if case == "depthwise" else 1
        w = f16(rng.standard_normal((8, 8 // group, 3, 3)))
        inits = [("w16", w), ("b", rng.standard_normal(8).astype(np.float32))]
        nodes = [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
                 helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 1, 1, 2] if group == 1 else [1, 1, 1, 1],
                                  strides=[2, 1], group=group, kernel_shape=[3, 3])]
    elif case.startswith("d2s"):
        nodes = [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=case[-3:].upper())]
    elif case == "resize":
        inits = [("roi", np.zeros(0, np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))]
        nodes = [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear",
                                  coordinate_transformation_mode="half_pixel")]
    elif case == "maxpool":
        nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])]
    elif case == "pad":
        inits = [("p", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), ("v", np.array(0.5, np.float32))]
        nodes = [helper.make_node("Pad", ["x", "p", "v"], ["y"])]
    elif case == "clip_cast_sigmoid":
        inits = [("lo", np.array(0, np.float32)), ("hi", np.array(0.6, np.float32))]
        nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Clip", ["s", "lo", "hi"], ["c"]),
                 helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    else:
        inits = [("shape", np.array([1, -1, 4], np.int64))]
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                 helper.make_node("Concat", ["t", "t"], ["c"], axis=1),
                 helper.make_node("Reshape", ["c", "shape"], ["y"])]
        x = x[:1, :4]
    ref, got = _run_both(nodes, {"x": x}, inits)
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@needs_onnx
def test_unsupported_operator_is_refused_by_name():
    from onnx import TensorProto, helper

    from engines.runtime.onnx_to_torch import OnnxGraphModule, UnsupportedOnnxModel

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(UnsupportedOnnxModel, match=r"\['Relu'\].*onnxruntime"):
        OnnxGraphModule(helper.make_model(graph), name="toy.onnx")


@needs_onnx
def test_torch_perception_matches_onnxruntime_on_a_real_frame(frame120):
    from engines.perception.pose_detector import PoseDetector, preprocess
    from engines.perception.pose_landmarks import PoseLandmarker, Roi
    from engines.runtime.catalog import compare

    ort_det, torch_det = PoseDetector(), PoseDetector(backend="torch")
    assert torch_det.engine.info.backend == "torch" and ort_det.engine.info.backend == "onnxruntime"
    tensor, _ = preprocess(frame120)
    abs_err, rel_err = compare(dict(zip("bs", ort_det.run_raw(tensor))), dict(zip("bs", torch_det.run_raw(tensor))))
    assert rel_err < 1e-5, (abs_err, rel_err)
    a, b = ort_det(frame120), torch_det(frame120)
    assert len(a) == len(b) >= 1
    for da, db in zip(a, b):
        assert abs(da.score - db.score) < 1e-5
        np.testing.assert_allclose(db.keypoints, da.keypoints, atol=0.01)
    rois = [Roi.from_alignment(d.keypoints[0], d.keypoints[1]) for d in a]
    la, lb = PoseLandmarker()(frame120, rois), PoseLandmarker(backend="torch")(frame120, rois)
    for pa, pb in zip(la, lb):
        assert pa.presence > 0.5 and abs(pa.presence - pb.presence) < 1e-5
        np.testing.assert_allclose(pb.image[:, :2], pa.image[:, :2], atol=0.02)  # pixels of the full frame
        np.testing.assert_allclose(pb.world, pa.world, atol=1e-4)  # metres
        np.testing.assert_allclose(pb.visibility, pa.visibility, atol=1e-4)


# ---------------------------------------------------------------- the fused sampler


@pytest.fixture(scope="module")
def denoiser():
    from engines.diffusion.weights import load_denoiser

    return load_denoiser()


@pytest.mark.parametrize("k", [4, 2])
def test_fused_torch_loop_is_the_step_by_step_loop(denoiser, k):
    sched = DDIMScheduler()
    cond = torch.randn(3, COND, generator=torch.Generator().manual_seed(1))
    ref = sample(denoiser, sched, cond, num_steps=k, num_samples=5, generator=torch.Generator().manual_seed(2))
    noise = draw_noise(3, 5, 154, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(FusedSampler(denoiser, sched, k)(cond, noise), ref)
    assert [t for t, _ in ddim_plan(sched, k)] == [t for t, _ in sched.timesteps(k)]


@needs_onnx
@pytest.mark.parametrize("k, persons, samples", [(4, 1, 8), (4, 8, 8), (3, 2, 5)])
def test_fused_onnx_loop_matches_step_by_step(denoiser, k, persons, samples):
    from engines.runtime.fused_sampler import OrtFusedSampler
    from engines.runtime.models import DENOISER_ONNX

    sched = DDIMScheduler()
    cond = torch.randn(persons, COND, generator=torch.Generator().manual_seed(1))
    ref = sample(denoiser, sched, cond, num_steps=k, num_samples=samples, generator=torch.Generator().manual_seed(3))
    noise = draw_noise(persons, samples, 154, generator=torch.Generator().manual_seed(3))
    got = OrtFusedSampler(DENOISER_ONNX, sched, k)(cond, noise)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 1e-5 * ref.abs().max()


@needs_onnx
def test_lifter_on_onnxruntime_uses_the_fused_loop_and_matches_the_fallback(monkeypatch):
    from engines.body.body_model import BodyModel
    from engines.lifting.lifter import Lifter
    from engines.runtime.fused_sampler import OrtFusedSampler

    body = BodyModel.load()
    kp = torch.zeros(2, 33, 3)
    kp[:, :, 0] = torch.linspace(-0.1, 0.1, 33)
    kp[:, :, 1] = torch.linspace(-0.3, 0.3, 33)[torch.randperm(33, generator=torch.Generator().manual_seed(0))]
    kp[:, :, 2] = 0.9
    fused = Lifter.load(body=body, backend="onnxruntime", seed=4, num_steps=3)
    assert isinstance(fused.sampler, OrtFusedSampler) and "K=3" in fused.sampler.info.source
    monkeypatch.setitem(sys.modules, "onnx", None)  # `onnx` missing: step by step on ONNX Runtime
    stepwise = Lifter.load(body=body, backend="onnxruntime", seed=4, num_steps=3)
    assert stepwise.sampler is None and "step-by-step" in stepwise.describe()
    a, b = fused.lift(kp), stepwise.lift(kp)
    torch.testing.assert_close(a.poses, b.poses, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.joints, b.joints, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- int8 denoiser


@pytest.fixture(scope="module")
def walker_cond():
    """Condition features of the real walker's keypoints (committed keypoint file)."""
    from calibration.camera import assumed_camera
    from engines.diffusion.features import condition_features

    z = np.load(Path(__file__).parent / "data" / "keypoints" / "sports2d_walker_blazepose33.npz")
    cam = assumed_camera(*[int(v) for v in z["image_size"]])
    norm = cam.normalize_keypoints(z["keypoints"].astype(np.float64)).astype(np.float32)
    from engines.diffusion.features import WORLD_COND_DIM

    return condition_features(torch.from_numpy(norm), world=COND == WORLD_COND_DIM)


@needs_onnx
def test_int8_denoiser_is_cached_quantised_and_close_to_float(denoiser, walker_cond, tmp_path):
    import onnx

    from engines.diffusion.onnx_denoiser import OrtDenoiser
    from engines.runtime.models import DENOISER_ONNX
    from engines.runtime.quantize import int8_onnx

    path = int8_onnx(DENOISER_ONNX, directory=tmp_path)
    assert path.parent == tmp_path and path.with_suffix(".json").is_file()
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops, ops
    assert path.stat().st_size < 0.6 * DENOISER_ONNX.stat().st_size  # int8, not the float16 file's 2 bytes
    mtime = path.stat().st_mtime_ns
    assert int8_onnx(DENOISER_ONNX, directory=tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused

    cond = walker_cond[:8]
    x_t = torch.randn(8, 154, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 500)
    with torch.no_grad():
        ref = denoiser(x_t, t, cond)
    got = OrtDenoiser(path, denoiser.config)(x_t, t, cond)
    rel = ((got - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()
    assert 1e-4 < rel < 0.15, rel  # quantised (not the float graph), yet the same function


@needs_onnx
def test_int8_without_a_writable_cache_still_runs(tmp_path, caplog):
    from engines.runtime.models import DENOISER_ONNX
    from engines.runtime.quantize import int8_onnx

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="engines.runtime"):
        path = int8_onnx(DENOISER_ONNX, directory=blocked)
    assert path.is_file() and blocked not in path.parents
    assert "cannot write the engine cache" in caplog.text


@needs_onnx
def test_int8_lifter_runs_on_onnxruntime_only(monkeypatch, tmp_path):
    from engines.body.body_model import BodyModel
    from engines.lifting.lifter import Lifter

    monkeypatch.setenv("SMPLSTREAM_CACHE", str(tmp_path))
    body = BodyModel.load()
    lifter = Lifter.load(body=body, backend="onnxruntime", precision="int8", num_steps=2)
    assert "int8" in lifter.describe()
    assert list(tmp_path.glob("denoiser-int8-*.onnx"))
    with pytest.raises(ValueError, match="onnxruntime"):
        Lifter.load(body=body, backend="torch", precision="int8")


def test_live_runs_take_the_int8_denoiser_on_cpu_only(machine):
    from engines.run_plan import plan_run
    from streamer.app import RunConfig

    def precisions(mode, **options):
        plan = plan_run(RunConfig(source="x", **options), mode)
        return plan.lift.precision, plan.refine.precision

    machine()  # no CUDA
    assert precisions("live") == ("int8", "int8")
    assert precisions("live", backend="onnxruntime") == ("int8", "int8")
    assert precisions("offline") == ("fp32", "fp32")
    assert precisions("live", backend="torch") == ("fp32", "fp32")
    assert precisions("live", denoiser_precision="fp32") == ("fp32", "fp32")
    # A GPU machine: auto is TensorRT there for the lift, which keeps its own precision; the
    # fit's prior still runs on ONNX Runtime on the CPU, int8 in live mode.
    machine(cuda=True, trt=True)
    plan = plan_run(RunConfig(source="x"), "live")
    assert (plan.lift.backend, plan.lift.precision) == ("tensorrt", "fp32")
    assert (plan.refine.backend, plan.refine.device, plan.refine.precision) == ("onnxruntime", "cpu", "int8")


# ---------------------------------------------------------------- export checks


def test_export_checks_pass_their_thresholds_on_cpu():
    from engines.runtime.export import THRESHOLDS, check_model

    assert max(THRESHOLDS.values()) <= 1e-4  # fp32 engines must agree to rounding, not roughly
    models = ["denoiser", "sampler"] + (["detector", "landmarks"] if HAS_ONNX else [])
    for model in models:
        batches = (1, 8) if model in ("denoiser", "sampler") else (2,)
        backends = ["onnxruntime", "torch"] if HAS_ONNX or model == "denoiser" else ["torch"]
        checks = check_model(model, backends, batches, log=lambda *a: None)
        assert checks, model
        for c in checks:
            assert c.ok, c
            assert c.max_rel > 0 or c.backend == "torch"  # different engines do differ a little


def test_export_command_fails_when_a_threshold_is_exceeded(monkeypatch, capsys, tmp_path):
    from engines.runtime import export

    assert export.main(["--models", "denoiser", "--batches", "1", "--backends", "onnxruntime", "torch"]) == 0
    assert "denoiser   onnxruntime" in capsys.readouterr().out
    if HAS_ONNX:
        saved = export.save_onnx(tmp_path, num_steps=2)
        from engines.runtime.ort import make_session

        sampler = make_session(saved[0])
        assert [i.name for i in sampler.get_inputs()] == ["cond", "noise"]
        x = sampler.run(None, {"cond": np.zeros((2, COND), np.float32), "noise": np.zeros((2, 3, 154), np.float32)})
        assert x[0].shape == (2, 3, 154)
    monkeypatch.setitem(export.THRESHOLDS, "denoiser", 1e-9)
    assert export.main(["--models", "denoiser", "--batches", "1", "--backends", "onnxruntime", "torch"]) == 1


def test_modules_tensorrt_builds_from_export_with_a_shared_dynamic_batch(denoiser):
    """The torch.export step of the TensorRT build, on CPU: one batch dimension shared by the
    sampler's inputs (and the converted detector, whose forward takes *inputs)."""
    from engines.runtime.models import sampler_spec

    fused = FusedSampler(denoiser, DDIMScheduler(), 4)
    program, examples, _ = T.export_program(sampler_spec(denoiser.config.x_dim, denoiser.config.cond_dim, 8), fused, "cpu")
    assert examples[1].shape == (8, 8, 154)  # built at the profile's opt batch
    cond, noise = torch.randn(3, COND), torch.randn(3, 8, 154)
    with torch.no_grad():
        assert torch.equal(program.module()(cond, noise), fused(cond, noise))
    if HAS_ONNX:
        from engines.runtime.models import DETECTOR_ONNX, onnx_graph_spec
        from engines.runtime.onnx_to_torch import load_onnx_as_torch

        det = load_onnx_as_torch(DETECTOR_ONNX)
        program, _, _ = T.export_program(onnx_graph_spec(det, "detector"), det, "cpu")
        x = torch.rand(2, 224, 224, 3)
        with torch.no_grad():
            for a, b in zip(program.module()(x), det(x)):
                assert a.shape[0] == 2 and torch.allclose(a, b, atol=1e-5)


def test_sampler_engines_with_a_batch_limit_take_larger_batches_in_chunks(denoiser):
    from engines.runtime.models import TensorSampler

    fused = FusedSampler(denoiser, DDIMScheduler(), 2)
    calls = []
    chunked = TensorSampler(lambda c, n: calls.append(c.shape[0]) or fused(c, n), "cpu", None, max_batch=4)
    cond, noise = torch.randn(10, COND), torch.randn(10, 3, 154)
    with torch.no_grad():
        torch.testing.assert_close(chunked(cond, noise), fused(cond, noise))
    assert calls == [4, 4, 2]

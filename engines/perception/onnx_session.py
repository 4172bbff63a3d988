"""ONNX Runtime sessions for the bundled perception models."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

ASSETS = Path(__file__).resolve().parent / "assets"
DETECTOR_ONNX = ASSETS / "pose_detection.onnx"
LANDMARKS_ONNX = ASSETS / "pose_landmark_full.onnx"


def make_session(
    path: str | Path,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
):
    """Open an ONNX Runtime inference session with explicit thread counts.

    Args:
        path: the .onnx file.
        providers: ORT execution providers in order of preference, e.g.
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; default CPU.
        intra_op_threads: threads inside one operator (this project's CPU
            machines have two cores shared with other stages: keep it at 1-2).
        inter_op_threads: threads across operators (sequential models: 1).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: model file missing; it ships with the repository "
            "(engines/perception/assets), regenerate it with tools/convert_blazepose.py"
        )
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
    return ort.InferenceSession(str(path), sess_options=opts, providers=wanted)

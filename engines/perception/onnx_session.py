"""Paths of the bundled perception models. Sessions are made by the engine layer
(:func:`engines.runtime.ort.make_session`)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DETECTOR_ONNX = ASSETS / "pose_detection.onnx"
LANDMARKS_ONNX = ASSETS / "pose_landmark_full.onnx"

__all__ = ["ASSETS", "DETECTOR_ONNX", "LANDMARKS_ONNX"]

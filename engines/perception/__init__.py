"""Perception: person detection and 2D/3D body landmarks (BlazePose, ONNX Runtime)."""

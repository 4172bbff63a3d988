"""The refine stage: fixed-lag temporal refinement of each track's SMPL estimates by score
guidance (``engines.refinement``), all tracks of a frame in one batch.

Every frame that comes in leaves exactly once, in order, ``lag`` frames later (``lag = 0``:
at once); at the end of the stream the held frames are flushed. Persons whose track has a
refined estimate for the released frame get their ``poses``, ``betas``, ``trans`` and
``joints`` replaced; ``poses_std`` and ``joints_std`` stay the lifter's per-frame sample
spread (an upper bound of the refined estimate's uncertainty). Persons without a lift pass
through untouched.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np
import torch

from .frames import Frame
from .graph import Stage

log = logging.getLogger("smplstream.refine")

KEYPOINTS = "keypoints_blazepose33"


class RefineStage(Stage):
    """Refines what :class:`~streamer.lift_stage.LiftStage` produced, through ``camera`` (a
    :class:`calibration.camera.Camera`; the reprojection goes through its distortion)."""

    name = "refine"

    def __init__(self, camera, *, lag: int = 5, context: int = 4, settings=None, weights=None, threads: int = 1,
                 backend: str = "auto", precision: str = "fp32"):
        if lag < 0:
            raise ValueError(f"refine lag must be >= 0 frames, got {lag}")
        if backend in ("torch-compile", "tensorrt"):
            # Guidance takes gradients of the losses of the network's output every step; those
            # engines are forward-only here, so refinement stays on eager torch.
            log.info("refine: backend %s has no gradients here; refinement runs on torch", backend)
            backend = "torch"
        if backend not in ("auto", "onnxruntime", "torch"):
            raise ValueError(f"refine: backend {backend!r} is not supported (auto, onnxruntime or torch)")
        if precision == "int8" and backend == "torch":
            raise ValueError("refine: precision int8 runs on onnxruntime, not torch")
        self.backend = backend
        self.precision = precision
        self.camera = camera
        self.lag = lag
        self.context = context
        self.settings = settings
        self.weights = weights
        self.threads = threads
        self.online = None
        self._held: deque[tuple[int, Frame]] = deque()
        self._step = -1

    def start(self) -> None:
        from engines.body.body_model import BodyModel
        from engines.lifting.lifter import load_denoiser
        from engines.refinement.guided import CameraParams, GuidedRefiner
        from engines.refinement.online import OnlineRefiner
        from engines.refinement.settings import GuidanceSettings

        torch.set_num_threads(self.threads)
        self.body = BodyModel.load()
        settings = self.settings or GuidanceSettings.for_lag(self.lag)
        refiner = GuidedRefiner(self._denoiser(settings), self.body, settings)
        self.online = OnlineRefiner(refiner, lag=self.lag, context=self.context)
        self.camera_params = CameraParams.from_camera(self.camera)

    def _denoiser(self, settings):
        """The network guidance calls. With ``guide="x0"`` it is only run forward (the
        gradients are of the losses of its output), so ONNX Runtime can run it ("auto",
        "onnxruntime"); ``guide="xt"`` differentiates through it and needs torch."""
        from engines.lifting.lifter import DEFAULT_WEIGHTS, LifterWeightsError, load_denoiser

        model = load_denoiser(self.weights)
        if self.backend == "torch":
            return model
        onnx_path = Path(self.weights or DEFAULT_WEIGHTS).with_suffix(".onnx")
        if settings.guide != "x0" or not onnx_path.is_file():
            if self.backend == "onnxruntime" or self.precision == "int8":
                raise LifterWeightsError(f"refine on onnxruntime needs guide='x0' and {onnx_path} "
                                         f"(guide is {settings.guide!r}; the file "
                                         f"{'exists' if onnx_path.is_file() else 'is missing'})")
            return model
        from engines.diffusion.onnx_denoiser import ForwardOnly

        return ForwardOnly.from_onnx(onnx_path, model.config, precision=self.precision, threads=self.threads)

    def process(self, frame: Frame) -> Frame | None:
        self._step += 1
        observations = self._observations(frame)
        if observations:
            self.online.update(self._step, observations, self.camera_params)
        self._held.append((self._step, frame))
        if len(self._held) > self.lag:
            return self._release(*self._held.popleft())
        return None

    def finish(self) -> list[Frame]:
        out = [self._release(step, frame) for step, frame in self._held]
        self._held.clear()
        return out

    def _observations(self, frame: Frame) -> dict:
        from engines.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
        from engines.diffusion.features import condition_features
        from engines.refinement.online import Observation

        persons = [p for p in frame.persons if "poses" in p.arrays and KEYPOINTS in p.arrays]
        seen: set[int] = set()
        persons = [p for p in persons if not (p.track_id in seen or seen.add(p.track_id))]
        if not persons:
            return {}
        pixels = np.stack([p.arrays[KEYPOINTS] for p in persons]).astype(np.float64)
        normalised = torch.from_numpy(self.camera.normalize_keypoints(pixels).astype(np.float32))
        cond = condition_features(normalised)
        poses = torch.from_numpy(np.stack([p.arrays["poses"] for p in persons]).astype(np.float32))
        betas = torch.from_numpy(np.stack([p.arrays["betas"] for p in persons]).astype(np.float32))
        x = torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(poses.view(-1, 24, 3))).flatten(1), betas], -1)
        return {p.track_id: Observation(x=x[i], trans=torch.from_numpy(np.asarray(p.arrays["trans"], np.float32)),
                                        cond=cond[i], keypoints=torch.from_numpy(pixels[i].astype(np.float32)))
                for i, p in enumerate(persons)}

    def _release(self, step: int, frame: Frame) -> Frame:
        from engines.body.rotations import matrix_to_axis_angle, rotation_6d_to_matrix

        found = [(p, self.online.estimate(p.track_id, step)) for p in frame.persons if "poses" in p.arrays]
        found = [(p, e) for p, e in found if e is not None]
        if not found:
            return frame
        x = torch.stack([e[0] for _, e in found])
        trans = torch.stack([e[1] for _, e in found])
        R = rotation_6d_to_matrix(x[:, :144].reshape(-1, 24, 6))
        with torch.no_grad():
            joints = self.body(R, x[:, 144:154], trans).joints
        poses = matrix_to_axis_angle(R).reshape(-1, 72)
        for i, (person, _) in enumerate(found):
            person.arrays.update(poses=poses[i].numpy().astype(np.float32), betas=x[i, 144:154].numpy().astype(np.float32),
                                 trans=trans[i].numpy().astype(np.float32), joints=joints[i].numpy().astype(np.float32))
        return frame

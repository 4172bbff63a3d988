"""The lift stage: every person of a frame with keypoints gets SMPL pose, shape,
translation and uncertainty, all persons of the frame in one batch."""

from __future__ import annotations

import numpy as np
import torch

from .frames import Frame
from .graph import Stage
from .refine_stage import measure_persons, world_rows


class LiftStage(Stage):
    """Lifts ``keypoints_blazepose33`` (pixels) through ``camera`` (a
    :class:`calibration.camera.Camera`; its distortion is removed first) to SMPL arrays
    ``poses`` (72,), ``betas`` (10,), ``trans`` (3,), ``joints`` (24, 3),
    ``poses_std`` (24,) and ``joints_std`` (24,) with ``lifter`` (an
    :class:`engines.lifting.lifter.Lifter`, built: :func:`engines.run_engines.build_lifter`).
    Persons with too few keypoints are passed on without them. ``rig``: a
    :class:`~streamer.multi_view.MultiViewRig`; its view-only persons (seen by another camera
    alone) are lifted through their own camera, in its frame (the refine stage moves them into
    the reference's; without one, this stage does)."""

    name = "lift"

    def __init__(self, camera, lifter, *, threads: int = 1, measure: bool = False, use_world: bool = True, rig=None):
        self.camera = camera
        self.rig = rig
        self.lifter = lifter
        self.threads = threads
        # Without a refine stage after it, the lift's own bodies are what is published, and
        # their re-projection error is measured here (``reprojection_px``, ``quality``).
        self.quality = None
        # Each camera's CameraParams to measure through (the rig's in its order), or None.
        self.camera_params = [None] * (1 if rig is None else len(rig.cameras))
        if measure:
            from engines.refinement.guided import CameraParams
            from engines.refinement.quality import FitQuality

            self.quality = FitQuality()
            self.camera_params = [CameraParams.from_camera(c) for c in ([camera] if rig is None else rig.cameras)]
        # The world landmarks go in beside the keypoints when the network was trained with them.
        self.use_world = use_world and lifter.uses_world_landmarks
        # The refine stage's RefineStage.prior_inputs, where its fit's first denoiser call is
        # made in this stage's network call (live; set by processing_stages), else None.
        self.prior_inputs = None

    def start(self) -> None:
        torch.set_num_threads(self.threads)  # in the thread that runs the lifter

    def process(self, frame: Frame) -> Frame:
        persons = [p for p in frame.persons if "keypoints_blazepose33" in p.arrays]
        if self.rig is None:
            self._lift(persons, self.camera, self.camera_params[0])
            return frame
        from .multi_view import VIEW_ONLY

        own = [p for p in persons if VIEW_ONLY not in p.handover]
        self._lift(own, self.camera, self.camera_params[0])
        for v, cam in enumerate(self.rig.cameras[1:], 1):
            group = [p for p in persons if p.handover.get(VIEW_ONLY) == v]
            self._lift(group, cam, self.camera_params[v])
        if self.quality is not None:  # no refine stage: the view-only persons are final here
            for p in frame.persons:
                if VIEW_ONLY in p.handover:
                    self.rig.finish_view_only(p)
        return frame

    def _lift(self, persons: list, camera, camera_params) -> None:
        """Lift ``persons`` (keypoints in ``camera``'s pixels) in ``camera``'s frame."""
        if not persons:
            return
        pixels = np.stack([p.arrays["keypoints_blazepose33"] for p in persons]).astype(np.float64)
        normalised = camera.normalize_keypoints(pixels)
        world = world_rows(persons) if self.use_world else None
        asked = self.prior_inputs(persons) if self.prior_inputs is not None else None
        riders = None if asked is None else (torch.tensor(asked[0]), asked[2], torch.full((len(asked[0]),), asked[1]))
        result = self.lifter.lift(torch.from_numpy(normalised.astype(np.float32)), world, riders)
        arrays = result.smpl_arrays()
        for i, person in enumerate(persons):
            if bool(result.valid[i]):
                person.arrays.update({k: v[i] for k, v in arrays.items()})
                # For the refine stage: what it would otherwise compute again.
                person.handover["lift"] = (result.rotations[i], result.condition[i], result.condition_world)
        if asked is not None and result.riders_x0 is not None:
            for k, i in enumerate(asked[0]):
                persons[i].handover["prior"] = (asked[1], asked[2][k], result.riders_x0[k])
        if self.quality is not None:
            measure_persons(self.lifter.body, camera_params, persons, self.quality)

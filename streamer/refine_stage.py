"""The refine stage: each track's SMPL estimates fitted to its keypoints (and the landmark
network's world landmarks) under the diffusion prior, over a window with a fixed lag
(``engines.refinement.fitting``), all tracks of a frame in one batch.

Every frame that comes in leaves exactly once, in order, ``lag`` frames later (``lag = 0``:
at once); at the end of the stream the held frames are flushed. Persons whose track has a
fitted estimate for the released frame get their ``poses``, ``betas``, ``trans`` and
``joints`` replaced; ``poses_std`` and ``joints_std`` stay the lifter's per-frame sample
spread. Live, a frame that reaches the stage later than ``fit_deadline_s`` after its capture
is not fitted: its persons keep the lift's bodies (counted: ``overload_report``), so an
overloaded machine does not add the fit's time to frames that are late already. Every
released person with a body gets ``reprojection_px`` (the median distance of
its confident keypoints from the body's re-projected points), collected in ``quality``
for the end-of-run report. Persons without a lift pass through untouched.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from engines.refinement.online import LagBuffer

from .frames import Frame
from .graph import Stage

KEYPOINTS = "keypoints_blazepose33"
WORLD = "world_blazepose33"


def measure_persons(body, camera_params, persons, quality, points: torch.Tensor | None = None) -> None:
    """Re-projection error of each person's published body against its own keypoints:
    ``reprojection_px`` (a float32 scalar) goes into its arrays and every counted point into
    ``quality`` (:class:`engines.refinement.quality.FitQuality`). ``points`` (N, 33, 3): the
    bodies' BlazePose-33 points when the caller has them already (one per person given,
    all with a body and keypoints)."""
    from engines.body.rotations import axis_angle_to_matrix

    if points is None:
        persons = [p for p in persons if "poses" in p.arrays and KEYPOINTS in p.arrays]
    if not persons:
        return
    kp = torch.from_numpy(np.stack([p.arrays[KEYPOINTS] for p in persons]).astype(np.float32))
    if points is None:
        poses = torch.from_numpy(np.stack([p.arrays["poses"] for p in persons]).astype(np.float32))
        betas = torch.from_numpy(np.stack([p.arrays["betas"] for p in persons]).astype(np.float32))
        trans = torch.from_numpy(np.stack([p.arrays["trans"] for p in persons]).astype(np.float32))
        with torch.no_grad():
            points = body(axis_angle_to_matrix(poses.view(-1, 24, 3)), betas, trans,
                          keypoints="blazepose33").keypoints["blazepose33"]
    per_frame = quality.measure([p.track_id for p in persons], points, kp, camera_params)
    for i, person in enumerate(persons):
        person.arrays["reprojection_px"] = np.float32(per_frame[i])


class _ViewFit(NamedTuple):
    """The fit of one camera of a rig: its refiner, the rig seen from it, its camera (to
    measure re-projection) and that camera with the rig's other views (to fit)."""

    online: object
    rig: object
    camera: object
    fit_camera: object


class RefineStage(Stage):
    """Refines what :class:`~streamer.lift_stage.LiftStage` produced with ``refiner`` (an
    :class:`engines.refinement.online.OnlineRefiner`, built:
    :func:`engines.run_engines.build_refiner`; its lag is the stage's), through ``camera``
    (a :class:`calibration.camera.Camera`; the reprojection goes through its distortion).
    ``body``: the body model the released bodies are posed with. ``fit_deadline_s``: live
    mode's deadline (None: every frame is fitted, as offline)."""

    name = "refine"

    def __init__(self, camera, refiner, body, *, threads: int = 1, use_world: bool = True,
                 fit_deadline_s: float | None = None, rig=None):
        from engines.refinement.guided import CameraParams
        from engines.refinement.quality import FitQuality

        self.camera = camera
        self.camera_params = CameraParams.from_camera(camera)
        # Several cameras (streamer.multi_view.MultiViewRig): the fit sees every view.
        self.rig = rig
        self.fit_camera = self.camera_params if rig is None else replace(self.camera_params, views=rig.rig_views)
        self.online = refiner
        self.body = body
        self.threads = threads
        self.use_world = use_world
        # A network trained with world landmarks takes them in its condition too.
        self.denoiser_uses_world = bool(getattr(refiner.refiner.model.config, "world_landmarks", False))
        self.quality = FitQuality()
        # A rig's other cameras' fits of their view-only persons, by camera.
        self._view_fits: dict[int, _ViewFit] = {}
        self.fit_deadline_s = fit_deadline_s
        self.frames_fitted = 0
        self.frames_fit_skipped = 0
        self._fit_poses_body = getattr(refiner.refiner, "body", None) is body
        self._held: LagBuffer[tuple[int, Frame]] = LagBuffer(refiner.lag)
        self._step = -1

    @property
    def lag(self) -> int:
        return self.online.lag

    def start(self) -> None:
        torch.set_num_threads(self.threads)  # in the thread that runs the fit

    def process(self, frame: Frame) -> Frame | None:
        self._step += 1
        observations = self._observations(frame)
        # A rig's view-only persons (seen by another camera alone): each camera's fitted in
        # its own frame by a refiner of its own, as one camera would (streamer.multi_view).
        by_view = self._view_only_observations(frame) if self.rig is not None else {}
        if observations or by_view:
            late = self.fit_deadline_s is not None and time.monotonic() - frame.capture_time > self.fit_deadline_s
            self.frames_fit_skipped += late
            self.frames_fitted += not late
            if observations:
                self.online.update(self._step, observations, fit=not late, camera=self.fit_camera)
            for v, found in by_view.items():
                view = self._view_fit(v)
                view.online.update(self._step, found, fit=not late, camera=view.fit_camera)
        released = self._held.push((self._step, frame))
        return None if released is None else self._release(*released)

    def overload_report(self) -> dict:
        """Frames fitted and frames whose fit was skipped for being late (live)."""
        return {"fit_deadline_ms": None if self.fit_deadline_s is None else round(1000 * self.fit_deadline_s, 1),
                "frames_fitted": self.frames_fitted, "frames_fit_skipped": self.frames_fit_skipped}

    def finish(self) -> list[Frame]:
        return [self._release(step, frame) for step, frame in self._held.flush()]

    # -- a rig's view-only persons ------------------------------------------------------------
    def _view_of(self, person) -> int:
        """The camera a person is fitted in: 0, or a view-only person's own."""
        from .multi_view import VIEW_ONLY

        return int(person.handover.get(VIEW_ONLY, 0))

    def _view_fit(self, v: int) -> "_ViewFit":
        """Camera ``v``'s fit (0: the run's): a refiner like the run's, sharing its fitter, in
        the rig seen from camera ``v``."""
        if v == 0:
            return _ViewFit(self.online, self.rig, self.camera_params, self.fit_camera)
        if v not in self._view_fits:
            from engines.refinement.guided import CameraParams
            from engines.refinement.online import OnlineRefiner

            o = self.online
            rig = self.rig.seen_from(v)
            camera = CameraParams.from_camera(rig.cameras[0])
            # With two cameras a view-only person is one camera's, fitted as a single-camera
            # run's (from the last estimate); with more, others may see them too, and the fit
            # starts from the placed lift as the rig's own does.
            warm = o.warm_start if len(rig.cameras) > 2 else True
            online = OnlineRefiner(o.refiner, lag=o.lag, context=o.context, max_gap=o.max_gap, warm_start=warm)
            self._view_fits[v] = _ViewFit(online, rig, camera, replace(camera, views=rig.rig_views))
        return self._view_fits[v]

    def _view_only_observations(self, frame: Frame) -> dict[int, dict]:
        """Per camera, its view-only persons' observations in its frame (with their keypoints
        in the cameras that see them too, and placed on their triangulated hips)."""
        out = {}
        for v in range(1, len(self.rig.cameras)):
            persons = [p for p in frame.persons
                       if self._view_of(p) == v and "poses" in p.arrays and KEYPOINTS in p.arrays]
            if persons:
                rig = self._view_fit(v).rig
                found = self._observe(persons, rig.cameras[0], rig)
                if found:
                    out[v] = found
        return out

    def _observations(self, frame: Frame) -> dict:
        persons = [p for p in frame.persons if "poses" in p.arrays and KEYPOINTS in p.arrays and not self._view_of(p)]
        return self._observe(persons, self.camera, self.rig)

    def _observe(self, persons: list, camera, rig) -> dict:
        """The fit's observations of ``persons`` (keypoints in ``camera``'s pixels); ``rig``:
        their keypoints in the rig's other views join, and the lifts are placed on the
        triangulated hips."""
        from engines.body.rotations import axis_angle_to_matrix
        from engines.diffusion.denoiser import pose_vector
        from engines.diffusion.features import COND_DIM, WORLD_COND_DIM, condition_features
        from engines.refinement.online import Observation

        seen: set[int] = set()
        persons = [p for p in persons if not (p.track_id in seen or seen.add(p.track_id))]
        if not persons:
            return {}
        pixels = np.stack([p.arrays[KEYPOINTS] for p in persons]).astype(np.float64)
        # Stacked once, for the condition and the fit (a zero row: no landmarks for that person).
        worlds = world_rows(persons) if self.use_world else None
        betas = torch.from_numpy(np.stack([p.arrays["betas"] for p in persons]).astype(np.float32))
        # The lift's own rotations and condition when it handed them over for these very
        # keypoints (the same network with the landmarks given alike); else computed here.
        lifted = [p.handover.get("lift") for p in persons]
        dim = WORLD_COND_DIM if self.denoiser_uses_world else COND_DIM
        # The fit's first prior prediction the lift made (prior_inputs), under that condition.
        priors = [None] * len(persons)
        if all(h is not None and h[2] == (worlds is not None) and h[1].shape[-1] == dim for h in lifted):
            cond = torch.stack([h[1] for h in lifted])
            x = pose_vector(torch.stack([h[0] for h in lifted]), betas)
            priors = [p.handover.get("prior") for p in persons]
        else:
            normalised = torch.from_numpy(camera.normalize_keypoints(pixels).astype(np.float32))
            cond = condition_features(normalised, worlds, world=self.denoiser_uses_world)
            poses = torch.from_numpy(np.stack([p.arrays["poses"] for p in persons]).astype(np.float32))
            x = pose_vector(axis_angle_to_matrix(poses.view(-1, 24, 3)), betas)
        trans = torch.from_numpy(np.stack([p.arrays["trans"] for p in persons]).astype(np.float32))
        keypoints = torch.from_numpy(pixels.astype(np.float32))
        views = views_world = None
        if rig is not None:
            views = rig.view_keypoints(persons)
            if self.use_world:
                from .multi_view import VIEWS_WORLD_KEY

                views_world = rig.view_keypoints(persons, VIEWS_WORLD_KEY)
            trans = rig.place(self.body, x, trans, keypoints, views)  # onto the triangulated hips
        # The lift's spread per joint, where it published one: the fit's prior loosens there.
        spread = [p.arrays.get("poses_std") for p in persons]
        return {p.track_id: Observation(x=x[i], trans=trans[i], cond=cond[i], keypoints=keypoints[i],
                                        world=None if worlds is None else worlds[i],
                                        views=None if views is None else views[i],
                                        views_world=None if views_world is None else views_world[i],
                                        x_std=None if spread[i] is None else torch.as_tensor(spread[i], dtype=torch.float32),
                                        prior=priors[i])
                for i, p in enumerate(persons)}

    def prior_inputs(self, persons: list) -> tuple[list[int], int, torch.Tensor] | None:
        """For the lift of the frame that comes here next: which of its ``persons``
        (indices) continue a followed track, and the noise level and input (P, 154) of
        their fit's first denoiser call (:meth:`OnlineRefiner.next_start`,
        :meth:`KeypointFitter.first_prior_input`), so that the lift's network call can make
        those predictions beside its samples (``Lifter.lift(riders=...)``) instead of the fit
        reading the network's weights once more. None where there are none."""
        rows, starts = [], []
        for i, person in enumerate(persons):
            start = self.online.next_start(person.track_id)
            if start is not None:
                rows.append(i)
                starts.append(start)
        made = self.online.refiner.first_prior_input(torch.stack(starts)) if rows else None
        return None if made is None else (rows, made[0], made[1])

    def _release(self, step: int, frame: Frame) -> Frame:
        if self.rig is None:
            self._release_persons(step, frame.persons, self.online, self.camera_params)
            return frame
        views = [self._view_of(p) for p in frame.persons]
        for v in sorted(set(views)):
            group = [p for p, w in zip(frame.persons, views) if w == v]
            view = self._view_fit(v)
            self._release_persons(step, group, view.online, view.camera)
        for p, v in zip(frame.persons, views):
            if v:
                self.rig.finish_view_only(p)  # into the reference camera's frame
        return frame

    def _release_persons(self, step: int, persons: list, online, camera_params) -> None:
        """``persons``' bodies at ``step`` from ``online``, measured through ``camera_params``."""
        from engines.body.rotations import matrix_to_axis_angle
        from engines.diffusion.denoiser import BETAS, rotations_of

        found = [(p, online.estimate(p.track_id, step)) for p in persons if "poses" in p.arrays]
        found = [(p, e) for p, e in found if e is not None]
        if not found:
            measure_persons(self.body, camera_params, persons, self.quality)
            return
        x = torch.stack([e[0] for _, e in found])
        trans = torch.stack([e[1] for _, e in found])
        R = rotations_of(x)
        # The fit posed these bodies already (same body model): their joints and points are
        # taken as it left them; else (a frame not fitted) they are posed here.
        bodies = [online.body(p.track_id, step) for p, _ in found] if self._fit_poses_body else [None]
        if all(b is not None for b in bodies):
            joints, points = torch.stack([b[0] for b in bodies]), torch.stack([b[1] for b in bodies])
        else:
            with torch.no_grad():
                out = self.body(R, x[:, BETAS], trans, keypoints="blazepose33")
            joints, points = out.joints, out.keypoints["blazepose33"]
        poses = matrix_to_axis_angle(R).reshape(-1, 72)
        for i, (person, _) in enumerate(found):
            person.arrays.update(poses=poses[i].numpy().astype(np.float32), betas=x[i, BETAS].numpy().astype(np.float32),
                                 trans=trans[i].numpy().astype(np.float32), joints=joints[i].numpy().astype(np.float32))
        # Fitted persons are measured on the points just computed; any other body on its own.
        fitted = [i for i, (p, _) in enumerate(found) if KEYPOINTS in p.arrays]
        if fitted:
            measure_persons(self.body, camera_params, [found[i][0] for i in fitted], self.quality,
                            points=points[fitted])
        done = {id(p) for p, _ in found}
        measure_persons(self.body, camera_params, [p for p in persons if id(p) not in done], self.quality)


def world_rows(persons) -> torch.Tensor | None:
    """The persons' world landmarks (P, 33, 3), zeros for a person without; None if nobody has any."""
    worlds = [p.arrays.get(WORLD) for p in persons]
    if all(w is None for w in worlds):
        return None
    return torch.from_numpy(np.stack([np.zeros((33, 3)) if w is None else np.asarray(w) for w in worlds]).astype(np.float32))

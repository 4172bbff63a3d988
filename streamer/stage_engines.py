"""The engines a run plan asks for, built once, before the first frame: the keypoint
tracker, the lifter and the online refiner. The stages (:mod:`streamer.keypoints_stage`,
:mod:`streamer.lift_stage`, :mod:`streamer.refine_stage`) are handed them ready-built and
only move arrays between Frames and engines.

A setting that cannot run (missing weights, a backend this machine lacks) fails here, as a
ConfigError, before anything has started.

:class:`EngineSet` keeps the networks of one plan loaded for source after source (``batch``
workers); ``run`` makes a fresh one, so both go through the same builders.
"""

from __future__ import annotations

from engines.body.body_model import BodyModel
from engines.diffusion.weights import LifterWeightsError
from engines.lifting.lifter import Lifter
from engines.perception.person_keypoints import PersonKeypoints
from engines.refinement.fitting import KeypointFitter
from engines.refinement.online import OnlineRefiner
from engines.runtime.models import load_prior_denoiser

from .errors import ConfigError
from .plan import RunPlan


def build_keypoints(plan: RunPlan, fps: float = 30.0, networks: PersonKeypoints | None = None) -> PersonKeypoints:
    """Detect, track and landmarks as ``plan.keypoints`` says, for a source of ``fps``
    frames a second (the tracker keeps lost ids ``plan.reid_seconds``). ``networks``: an
    earlier one of the same plan whose detector and landmark networks are taken over (its
    tracking state is not)."""
    return PersonKeypoints(backend=plan.keypoints.backend, intra_op_threads=plan.keypoints.threads,
                           max_persons=plan.max_persons, detector_tile_size=plan.detector_tile_size,
                           background_detection=plan.background_detection,
                           dormant_frames=round(plan.reid_seconds * fps),
                           detector=None if networks is None else networks.detector,
                           landmarker=None if networks is None else networks.landmarker)


def build_lifter(plan: RunPlan, body: BodyModel) -> Lifter:
    """The lifter as ``plan.lift`` says: its backend, precision, K and N."""
    try:
        return Lifter.load(plan.weights, body=body, backend=plan.lift.backend, device=plan.lift.device, threads=plan.lift.threads,
                           precision=None if plan.lift.precision == "fp32" else plan.lift.precision,
                           num_steps=plan.lift_steps, num_samples=plan.lift_samples)
    except LifterWeightsError as exc:
        raise ConfigError(str(exc)) from None


def build_output_body(plan: RunPlan, fit_body: BodyModel | None = None):
    """The user's body model the outputs are posed on (``plan.body_model``, a
    :class:`streamer.output_body.OutputBody` fed by ``fit_body``), or None for the bundled
    one. A model that cannot be loaded is a ConfigError naming the file."""
    if plan.body_model is None:
        return None
    from engines.body.model_file import BodyModelFileError
    from engines.body.model_folder import load_user_body_model

    from .output_body import OutputBody

    try:
        return OutputBody(load_user_body_model(plan.body_model, plan.gender), fit_body)
    except BodyModelFileError as exc:
        raise ConfigError(f"--body-model: {exc}") from None


def build_refiner(plan: RunPlan, body: BodyModel, prior=None) -> OnlineRefiner:
    """The fixed-lag keypoint fit as ``plan.refine`` says: its prior's backend and precision,
    the lag and the fit's settings. ``prior``: the fit's prior network, already loaded for
    this plan (default: loaded here)."""
    if prior is None:
        prior = build_prior(plan)
    return OnlineRefiner(KeypointFitter(prior, body, plan.fit_settings()), lag=plan.refine_lag)


def build_prior(plan: RunPlan):
    """The fit's prior network as ``plan.refine`` says (backend, precision, threads)."""
    try:
        return load_prior_denoiser(plan.refine.backend, weights=plan.weights, precision=plan.refine.precision,
                                   threads=plan.refine.threads)
    except LifterWeightsError as exc:
        raise ConfigError(str(exc)) from None


class EngineSet:
    """The networks of one plan, loaded on first use and kept: each call hands out engines
    for one more source with nothing carried over from the last (fresh track ids and
    refinement windows, the lifter's random draws from its seed again), so a source gives
    what a run of it alone gives. ``body``: the bundled body model, when the caller has it."""

    def __init__(self, plan: RunPlan, body: BodyModel | None = None) -> None:
        self.plan = plan
        self._body = body
        self._keypoints: PersonKeypoints | None = None
        self._lifter: Lifter | None = None
        self._prior = None

    @property
    def body(self) -> BodyModel:
        """The body model the lift and the fit share (loaded once)."""
        if self._body is None:
            self._body = BodyModel.load()
        return self._body

    def keypoints(self, fps: float = 30.0) -> PersonKeypoints:
        """Detect, track and landmarks for a new source of ``fps`` frames a second."""
        self._keypoints = build_keypoints(self.plan, fps, networks=self._keypoints)
        return self._keypoints

    def lifter(self) -> Lifter:
        """The lifter for a new source."""
        if self._lifter is None:
            self._lifter = build_lifter(self.plan, self.body)
        return self._lifter.fresh()

    def refiner(self) -> OnlineRefiner:
        """The fixed-lag fit for a new source."""
        if self._prior is None:
            self._prior = build_prior(self.plan)
        return build_refiner(self.plan, self.body, self._prior)

"""The engines a run plan (:mod:`engines.run_plan`) asks for: the keypoint tracker, the
lifter, the fit's prior and the fixed-lag refiner. ``run``, ``bench``, ``lift``, ``batch``
and the ``evaluate-*`` commands all build theirs here, so each runs what its plan says.

A setting that cannot run (missing weights, a backend this machine lacks) fails here, as a
PlanError, before anything has started.
"""

from __future__ import annotations

from engines.body.body_model import BodyModel
from engines.diffusion.weights import LifterWeightsError
from engines.lifting.lifter import Lifter
from engines.perception.person_keypoints import PersonKeypoints
from engines.refinement.fitting import KeypointFitter
from engines.refinement.online import OnlineRefiner
from engines.run_plan import PlanError, RunPlan
from engines.runtime.models import load_prior_denoiser


def build_keypoints(plan: RunPlan, fps: float = 30.0, networks: PersonKeypoints | None = None) -> PersonKeypoints:
    """Detect, track and landmarks as ``plan.keypoints`` says, for a source of ``fps``
    frames a second (the tracker keeps lost ids ``plan.reid_seconds``). ``networks``: an
    earlier one of the same plan whose detector and landmark networks are taken over (its
    tracking state is not)."""
    return PersonKeypoints(backend=plan.keypoints.backend, intra_op_threads=plan.keypoints.threads,
                           max_persons=plan.max_persons, detector_tile_size=plan.detector_tile_size,
                           background_detection=plan.background_detection, background_nice=plan.detector_nice,
                           dormant_frames=round(plan.reid_seconds * fps),
                           # Live, several people's landmarks on both cores (docs/performance.md).
                           landmark_sessions=2 if plan.mode == "live" and plan.keypoints.backend == "onnxruntime" else 1,
                           detector_sweep_calls=plan.detector_sweep_calls,
                           detector=None if networks is None else networks.detector,
                           landmarker=None if networks is None else networks.landmarker)


def build_lifter(plan: RunPlan, body: BodyModel, *, seed: int = 0, mirror_half: bool = True,
                 spread_scale: float | None = None, antithetic: bool = True) -> Lifter:
    """The lifter as ``plan.lift`` says: its backend, precision, K and N. ``seed``,
    ``mirror_half``, ``spread_scale`` and ``antithetic`` as for :class:`Lifter` (the
    evaluations vary them)."""
    try:
        return Lifter.load(plan.weights, body=body, backend=plan.lift.backend, device=plan.lift.device,
                           threads=plan.lift.threads, precision=None if plan.lift.precision == "fp32" else plan.lift.precision,
                           num_steps=plan.lift_steps, num_samples=plan.lift_samples, seed=seed, mirror_half=mirror_half,
                           spread_scale=spread_scale, antithetic=antithetic)
    except LifterWeightsError as exc:
        raise PlanError(str(exc)) from None


def build_prior(plan: RunPlan):
    """The fit's prior network as ``plan.refine`` says (backend, precision, threads)."""
    try:
        return load_prior_denoiser(plan.refine.backend, weights=plan.weights, precision=plan.refine.precision,
                                   threads=plan.refine.threads)
    except LifterWeightsError as exc:
        raise PlanError(str(exc)) from None


def build_refiner(plan: RunPlan, body: BodyModel, prior=None, **online) -> OnlineRefiner:
    """The fixed-lag keypoint fit as ``plan.refine`` says: its prior, the lag and the fit's
    settings. ``prior``: the fit's prior network, already loaded for this plan (default:
    loaded here); ``online``: :class:`OnlineRefiner`'s other options (``context``)."""
    if prior is None:
        prior = build_prior(plan)
    return OnlineRefiner(KeypointFitter(prior, body, plan.fit_settings()), lag=plan.refine_lag, **online)

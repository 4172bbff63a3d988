"""The output body model of a run plan (``--body-model``), built once before the first
frame; the stages' engines themselves (keypoint tracker, lifter, refiner) come from
:mod:`engines.run_engines`, which the ``evaluate-*`` commands share. A model that cannot be
loaded is a ConfigError.

:class:`EngineSet` keeps the networks of one plan loaded for source after source (``batch``
workers); ``run`` makes a fresh one, so both go through the same builders.
"""

from __future__ import annotations

from engines.body.body_model import BodyModel
from engines.lifting.lifter import Lifter
from engines.perception.person_keypoints import PersonKeypoints
from engines.refinement.online import OnlineRefiner
from engines.run_engines import build_keypoints, build_lifter, build_prior, build_refiner
from engines.run_plan import RunPlan

from .errors import ConfigError


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

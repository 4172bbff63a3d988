"""The run plan: every setting of a run that depends on the mode or the machine, resolved
once from the options (the command line) and the mode's defaults, then frozen.

``run``, ``bench``, ``lift``, ``batch`` and the ``evaluate-*`` commands all call
:func:`plan_run` and build their engines from the plan (:mod:`engines.run_engines`), so
what ran is what the plan says: ``run -v`` prints it and ``--stats-json`` carries it under
``plan``. The mode defaults themselves (K, N, the lag) are in :mod:`engines.run_defaults`;
the defaults of the other options are :class:`PlanOptions`' (the run's ``RunConfig``
extends it). A setting that cannot run is a :class:`PlanError`; the streamer reports it
as its one-line ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engines.run_defaults import (BACKGROUND_DETECTOR_NICE, BACKGROUND_DETECTOR_SWEEP_CALLS, KEYPOINTS_NICE,
                                   LIFT_SAMPLES, LIFT_STEPS, LIVE_FIT_DEADLINE_S, PACED_DECODER_NICE, REFINE_LAG)

Mode = Literal["live", "offline"]

#: Live runs whose denoiser runs on ONNX Runtime take it with int8 weights (about 4 times
#: faster per call; its accuracy cost is in docs/performance.md); the rest keep float32.
LIVE_DENOISER_PRECISION = "int8"
BACKENDS = ("auto", "onnxruntime", "torch", "torch-compile", "tensorrt")
BACKEND_STAGES = ("keypoints", "lift", "refine")


class PlanError(ValueError):
    """A setting that cannot run; the message names the option and what to do."""


@dataclass(kw_only=True)
class PlanOptions:
    """What a run asks for, before the plan resolves it: the options the plan reads, with
    their defaults (written here only). ``None`` takes the mode's default."""

    perception: bool = True
    lift: bool = True  # a stage runs when it and the ones before it are on
    lift_steps: int | None = None  # None: the mode's (engines.run_defaults.LIFT_STEPS)
    lift_samples: int | None = None  # None: engines.run_defaults.LIFT_SAMPLES
    refine: bool = True
    refine_lag: int | None = None  # None: the mode's (engines.run_defaults.REFINE_LAG)
    refine_steps: int | None = None  # fit iterations per denoiser call; None: FitSettings.for_run (1 live, 2 offline)
    fit_changes: dict[str, Any] | None = None  # other FitSettings fields (evaluate-refinement --settings)
    world_landmarks: bool = True  # the landmark network's world landmarks: observed by the fit, a lifter condition
    backend: str = "auto"  # engine backend: one for every stage, or "lift=torch,refine=onnxruntime"
    max_persons: int = 6  # follow at most this many people
    reid_seconds: float = 4.0  # a lost person's id waits this long for them to come back (0: off)
    detector_tile_size: int | None = None  # also detect on tiles of this many pixels (small people)
    denoiser_precision: str | None = None  # "fp32" or "int8" (ONNX Runtime); None: the plan decides
    weights: str | None = None  # the denoiser's weights (lift and fit); None: the bundled ones
    body_model: str | None = None  # outputs posed on this SMPL/SMPL+H/SMPL-X file or smplx models folder
    gender: str | None = None  # which of the folder's models (default neutral)
    threads: int = 1  # intra-op threads of each network (batch: --threads-per-worker)
    output_frame: str = "camera"  # camera, head (needs rig) or world (streamer.output_frame, docs/head-mounted.md)


def stage_backends(spec: str) -> dict[str, str]:
    """The requested engine backend of each model stage from ``--backend``: one name for
    every stage (``onnxruntime``) or stage=name pairs (``lift=torch,refine=onnxruntime``; the
    stages not named use ``auto``). Raises PlanError naming what is wrong."""
    spec = (spec or "auto").strip()
    if "=" not in spec:
        if spec not in BACKENDS:
            raise PlanError(f"--backend {spec}: unknown backend (choose from {', '.join(BACKENDS)})")
        return dict.fromkeys(BACKEND_STAGES, spec)
    out = dict.fromkeys(BACKEND_STAGES, "auto")
    for part in spec.split(","):
        stage, _, name = part.partition("=")
        stage, name = stage.strip(), name.strip()
        if stage not in BACKEND_STAGES:
            raise PlanError(f"--backend {spec}: unknown stage {stage!r} (choose from {', '.join(BACKEND_STAGES)})")
        if name not in BACKENDS:
            raise PlanError(f"--backend {spec}: unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
        out[stage] = name
    return out


def mode_defaults(defaults: dict[str, int]) -> str:
    """A per-mode default as help text: ``2 live, 4 offline``."""
    return f"{defaults['live']} live, {defaults['offline']} offline"


@dataclass(frozen=True)
class EnginePlan:
    """Where one stage's network runs: backend and device as resolved (never ``auto``),
    the denoiser's precision, and the intra-op threads."""

    backend: str
    device: str
    precision: str = "fp32"
    threads: int = 1


@dataclass(frozen=True)
class RunPlan:
    """One run's resolved settings. ``lift`` / ``refine`` are None when the stage is off."""

    mode: Mode
    keypoints: EnginePlan | None
    max_persons: int
    reid_seconds: float  # a lost person's track waits this long to be re-identified
    detector_tile_size: int | None
    background_detection: bool  # live: the detector runs beside the landmarks, off the frame's path
    lift: EnginePlan | None
    lift_steps: int
    lift_samples: int
    refine: EnginePlan | None
    refine_lag: int
    refine_iters: int  # fit iterations after each denoiser call
    refine_prior_times: tuple[int, ...]  # noise levels of the fit's denoiser calls
    world_landmarks: bool
    weights: str | None = None  # the denoiser's weights; None: the bundled ones
    body_model: str | None = None  # the user's model file outputs are posed on; None: the bundled one
    gender: str | None = None  # the gender asked for with it
    fit_changes: tuple[tuple[str, Any], ...] = ()  # FitSettings fields changed from the mode's
    output_frame: str = "camera"  # camera, head or world (streamer.output_frame)
    fit_deadline_s: float | None = None  # live: frames this late are not fitted; None: all are
    detector_nice: int = 0  # live: the background detector's thread this many nice levels lower
    detector_sweep_calls: int = 1  # live: a look at every detector tile spread over this many calls
    keypoints_nice: int = 0  # live: the keypoints stage's threads this many levels below lift and fit
    decoder_nice: int = 0  # live: a paced file's decoding this many levels below lift and fit

    def fit_settings(self):
        """The keypoint fit of this run (:meth:`FitSettings.for_run`)."""
        from engines.refinement.fitting import FitSettings

        return FitSettings.for_run(self.refine_lag, self.mode == "live",
                                   **{**dict(self.fit_changes), "iters": self.refine_iters})

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The plan as a few lines of text (``run -v``)."""
        def engine(e: EnginePlan | None) -> str:
            return "off" if e is None else f"{e.backend} on {e.device}, {e.precision}, {e.threads} thread(s)"

        background = f", its threads nice +{self.keypoints_nice} (below lift and fit)" if self.keypoints_nice else ""
        if self.background_detection:
            background += ", detector in the background" + (
                f" (nice +{self.detector_nice} below the keypoints)" if self.detector_nice else "")
        lines = [f"mode {self.mode}",
                 f"keypoints: {engine(self.keypoints)}; at most {self.max_persons} persons"
                 + (f", detector tiles of {self.detector_tile_size} px" if self.detector_tile_size else "")
                 + (f" (each look at them spread over {self.detector_sweep_calls} calls)"
                    if self.detector_tile_size and self.detector_sweep_calls > 1 else "")
                 + f", lost ids kept {self.reid_seconds:g} s" + background]
        if self.lift is not None:
            lines.append(f"lift: {engine(self.lift)}; K = {self.lift_steps} steps, N = {self.lift_samples} samples"
                         + (", with world landmarks" if self.world_landmarks else ""))
        if self.refine is not None:
            lines.append(f"refine: {engine(self.refine)}; lag {self.refine_lag} frames, denoiser calls at "
                         f"t = {', '.join(map(str, self.refine_prior_times))}, {self.refine_iters} iteration(s) after each"
                         + (f"; frames later than {1000 * self.fit_deadline_s:g} ms keep the lift"
                            if self.fit_deadline_s is not None else "")
                         + (f"; changed: {', '.join(f'{k} = {v}' for k, v in self.fit_changes)}" if self.fit_changes else ""))
        if self.decoder_nice:
            lines.append(f"a video file played like a camera decodes at nice +{self.decoder_nice} (below lift and fit)")
        if self.output_frame != "camera":
            lines.append(f"outputs in the {self.output_frame} frame")
        if self.body_model is not None:
            lines.append(f"outputs posed on {self.body_model} ({self.gender or 'gender from the file'})")
        return "\n".join(lines)


def _resolve(requested: str):
    from engines.runtime.backends import BackendUnavailable, resolve_backend

    try:
        return resolve_backend(requested)
    except (BackendUnavailable, ValueError) as exc:
        raise PlanError(f"--backend {requested}: {exc}") from None


def _precision(asked: str | None, backend: str, live: bool) -> str:
    """The denoiser's precision: what was asked for, else int8 for a live run on ONNX
    Runtime (LIVE_DENOISER_PRECISION), else fp32."""
    if asked:
        return asked
    return LIVE_DENOISER_PRECISION if live and backend == "onnxruntime" else "fp32"


def plan_run(config: PlanOptions, mode: Mode) -> RunPlan:
    """Resolve ``config`` (:class:`PlanOptions`, e.g. the run's ``RunConfig``) for ``mode``
    on this machine. Raises PlanError for a setting that cannot run."""
    from engines.diffusion.weights import DEFAULT_WEIGHTS

    live = mode == "live"
    requested = stage_backends(config.backend)
    perception = config.perception
    lift_on = perception and config.lift
    refine_on = lift_on and config.refine
    keypoints = lift = refine = None
    threads = config.threads
    if threads < 1:
        raise PlanError(f"{threads} threads per network: give at least 1")
    if perception:
        choice = _resolve(requested["keypoints"])
        keypoints = EnginePlan(choice.backend, choice.device, threads=threads)
    if lift_on:
        choice = _resolve(requested["lift"])
        lift = EnginePlan(choice.backend, choice.device, _precision(config.denoiser_precision, choice.backend, live), threads)
    if refine_on:
        asked = requested["refine"]
        # The fit's prior is one forward call per window: auto takes ONNX Runtime; torch.compile
        # and TensorRT are built for the lift's fused sampler, so they fall back to torch.
        backend = "onnxruntime" if asked in ("auto", "onnxruntime") else "torch"
        if asked == "auto" and not Path(config.weights or DEFAULT_WEIGHTS).with_suffix(".onnx").is_file():
            backend = "torch"  # as the lift does without its ONNX file
        precision = _precision(config.denoiser_precision, backend, live)
        if precision == "int8" and backend == "torch":
            raise PlanError("--denoiser-precision int8 runs on onnxruntime; the refine stage was given torch "
                            "(use --backend refine=onnxruntime)")
        # The refine stage runs its network on the CPU whichever engine (as before the plan).
        refine = EnginePlan(backend, "cpu", precision, threads)
    lag = REFINE_LAG[mode] if config.refine_lag is None else config.refine_lag
    iters, prior_times = 0, ()
    changes = tuple(sorted((config.fit_changes or {}).items()))
    if refine_on:
        from engines.refinement.fitting import FitSettings

        try:
            fit = FitSettings.for_run(lag, live, **{"iters": config.refine_steps, **dict(changes)})
        except (TypeError, ValueError) as exc:
            raise PlanError(f"the fit's settings: {exc}") from None
        iters, prior_times = fit.iters, tuple(fit.prior_times)
    body_model = _body_model_file(config.body_model, config.gender)
    return RunPlan(mode=mode, keypoints=keypoints, max_persons=config.max_persons, reid_seconds=config.reid_seconds,
                   detector_tile_size=config.detector_tile_size, background_detection=live and perception,
                   lift=lift, lift_steps=config.lift_steps or LIFT_STEPS[mode],
                   lift_samples=config.lift_samples or LIFT_SAMPLES, refine=refine, refine_lag=lag,
                   refine_iters=iters, refine_prior_times=prior_times, world_landmarks=config.world_landmarks,
                   weights=config.weights, body_model=body_model, gender=config.gender,
                   fit_changes=changes if refine_on else (), output_frame=config.output_frame,
                   fit_deadline_s=LIVE_FIT_DEADLINE_S if live and refine_on else None,
                   detector_nice=BACKGROUND_DETECTOR_NICE if live and perception else 0,
                   detector_sweep_calls=BACKGROUND_DETECTOR_SWEEP_CALLS if live and perception else 1,
                   keypoints_nice=KEYPOINTS_NICE if live and perception else 0,
                   decoder_nice=PACED_DECODER_NICE if live else 0)


def _body_model_file(path: str | None, gender: str | None) -> str | None:
    """The model file ``--body-model`` (a file or an smplx-layout folder) and ``--gender``
    name, or None for the bundled model. Raises PlanError with the loader's one line."""
    if path is None:
        if gender is not None:
            raise PlanError("--gender needs --body-model (the bundled model has no gender)")
        return None
    from engines.body.model_file import BodyModelFileError
    from engines.body.model_folder import find_body_model_file

    try:
        return str(find_body_model_file(path, gender))
    except BodyModelFileError as exc:
        raise PlanError(f"--body-model: {exc}") from None

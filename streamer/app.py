"""Assembles and runs the pipeline for ``run_stream.py run``: source, stages, outputs,
statistics. Everything a run needs is opened here, before the first frame, so bad options
fail at once with one line and nothing half-started."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from engines.run_plan import Mode, PlanOptions, RunPlan, plan_run, stage_backends

from .errors import ConfigError, SmplstreamError
from .graph import Pipeline, RunResult, Stage
from .latency import LatencyStats, format_table
from .option_help import check_world_weight
from .outputs import OutputStage
from .publisher import DEFAULT_ENDPOINT, ZmqPublisher
from .sources import Source, open_source

log = logging.getLogger("smplstream.run")

BODY_MODEL_NAME = "anny-smpl"  # the bundled body model the lifter was trained with
LIVE_QUEUE = 1  # live: nothing waits behind the frame being worked on
OFFLINE_QUEUE = 4  # offline: enough to keep every stage busy


@dataclass(kw_only=True)
class RunConfig(PlanOptions):
    """Options of one run (the ``run`` subcommand's flags): the run plan's
    (:class:`engines.run_plan.PlanOptions`: stages, K, N, the lag, backends ...) and these."""

    source: str
    mode: Mode | None = None
    publish: str | None = DEFAULT_ENDPOINT
    curve_keys: str | None = None
    record: str | None = None
    max_frames: int | None = None
    stats_json: str | None = None
    wait_subscribers: int = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    camera: str | None = None
    preview: str | None = None
    queue_size: int | None = None
    progress: bool = True
    formats: str | None = None  # motion file formats for --record: "npz,bvh,smpl" (default npz)
    preview_skeleton: bool = False  # preview draws the 3D skeleton instead of the mesh
    viewer: str | None = None  # "spawn" or a Rerun gRPC URL: stream to a live Rerun viewer
    viewer_save: str | None = None  # write the Rerun stream to this .rrd file
    mcap_video: bool = False  # --formats mcap: also the frames as JPEG (docs/robots.md)
    foxglove: str | None = None  # HOST:PORT of a live Foxglove WebSocket server (docs/robots.md)
    vmc: str | None = None  # HOST:PORT of a VMC receiver (avatar apps, docs/animation.md)
    vmc_track: str = "largest"  # whom --vmc sends: largest, first or a track id
    rig: str | None = None  # head-mounted rig file (calibration.rig), or a multi-camera rig with more_sources
    more_sources: list[str] | None = None  # the rig's other cameras (--source again; streamer.multi_view)
    source_offsets: list[float] | None = None  # seconds per source on the common clock (streamer.multi_source)
    imu: str | None = None  # IMU orientation file or tcp:// endpoint (world frame)
    camera_pitch: float | None = None  # world frame: the first frame's pitch, degrees down (gravity hint)


@dataclass
class RunOutcome:
    result: RunResult
    summary: dict
    mode: Mode


def default_mode(source: Source) -> Mode:
    """Live for cameras and network streams, offline for files and folders."""
    return "live" if source.is_live else "offline"


def processing_stages(plan: RunPlan, camera, fps: float = 30.0, body=None, engines=None, rig=None) -> list[Stage]:
    """The stages between the grabber and the outputs, in data-flow order, as ``plan`` says,
    with their engines built (:mod:`engines.run_engines`) for a source of ``fps`` frames a
    second. ``body``: the bundled body model when the caller has it loaded already.
    ``engines``: a :class:`~streamer.stage_engines.EngineSet` of this plan whose networks are
    loaded already (``batch`` workers; default: a new one). ``rig``: a
    :class:`~streamer.multi_view.MultiViewRig` (several cameras, one fit). Raises PlanError."""
    from .stage_engines import EngineSet

    engines = engines or EngineSet(plan, body)  # one body model for the lift and the fit
    stages: list[Stage] = []
    if plan.keypoints is not None:
        from .keypoints_stage import KeypointsStage

        if rig is None:
            stages.append(KeypointsStage(engines.keypoints(fps), nice=plan.keypoints_nice))
        else:
            from .multi_view import MultiViewKeypointsStage

            stages.append(MultiViewKeypointsStage([engines.keypoints(fps) for _ in rig.cameras], rig,
                                                  nice=plan.keypoints_nice))
    if plan.lift is None:
        return stages
    from .lift_stage import LiftStage

    stages.append(LiftStage(camera, engines.lifter(), threads=plan.lift.threads,
                            measure=plan.refine is None, use_world=plan.world_landmarks, rig=rig))
    if plan.refine is not None:
        from .refine_stage import RefineStage

        refiner = engines.refiner()
        if rig is not None:
            # Each frame starts from its own lift placed on the triangulated hips, not from the
            # last estimate moved by the lift's change: that carried the first frames' depth
            # errors on (tools/multiview_depth.py: 0.87 m against 0.21 m at 8 m, docs/multi-camera.md).
            refiner.warm_start = False
        stages.append(RefineStage(camera, refiner, engines.body, threads=plan.refine.threads,
                                  fit_deadline_s=plan.fit_deadline_s,
                                  use_world=plan.world_landmarks, rig=rig))
        link_prior_calls(stages[-2], stages[-1])
    return stages


def link_prior_calls(lift, refine) -> None:
    """Let ``lift`` (a LiftStage) make the first denoiser call of ``refine``'s (a
    RefineStage's) fit in its own network call, where that pays: one camera, a lifter that
    samples step by step (live mode's one step), a keypoint fit (it says what its first call
    takes) that starts from the track's last estimate. The fit still checks each
    prediction's input against its own."""
    fitter = refine.online.refiner
    if lift.rig is None and lift.lifter.takes_riders and refine.online.warm_start and \
            hasattr(fitter, "first_prior_input"):
        lift.prior_inputs = refine.prior_inputs


def check_config(config: RunConfig) -> None:
    """Reject options that cannot work together or are out of range, before anything is
    opened (``batch`` checks them once for all its videos). Raises ConfigError."""
    if config.max_frames is not None and config.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    if config.refine_lag is not None and config.refine_lag < 0:
        raise ConfigError("--refine-lag must be 0 (causal) or more frames")
    if config.wait_subscribers < 0:
        raise ConfigError("--wait-subscribers must not be negative")
    if config.wait_subscribers and not config.publish:
        raise ConfigError("--wait-subscribers needs a publisher (drop --publish none)")
    from .security import reject_nul

    for option in ("source", "record", "stats_json", "camera", "preview", "viewer_save", "curve_keys"):
        reject_nul(getattr(config, option), "--" + option.replace("_", "-"))
    if config.stats_json and not Path(config.stats_json).resolve().parent.is_dir():
        raise ConfigError(f"--stats-json {config.stats_json}: its directory does not exist")
    if config.lift_steps is not None and config.lift_steps < 1:
        raise ConfigError("--lift-steps must be at least 1")
    if config.refine_steps is not None and config.refine_steps < 1:
        raise ConfigError("--refine-steps must be at least 1")
    if config.max_persons < 1:
        raise ConfigError("--max-persons must be at least 1")
    check_world_weight((config.fit_changes or {}).get("world_weight"))
    if not config.reid_seconds >= 0:
        raise ConfigError("--reid-seconds must be 0 (off) or more seconds")
    if config.denoiser_precision not in (None, "fp32", "int8"):
        raise ConfigError(f"--denoiser-precision {config.denoiser_precision}: choose fp32 or int8")
    if config.more_sources and config.output_frame != "camera":
        # The head and world frames follow one camera's motion; a rig's cameras stand still
        # in the rig's own frame, which the outputs are in already.
        raise ConfigError(f"--output-frame {config.output_frame} is for one camera; with several --source the "
                          "outputs are in the rig's frame (make the rig file's frame gravity-aligned to get a "
                          "world frame)")
    stage_backends(config.backend)  # a bad --backend fails before anything is opened
    from .robot_outputs import check_robot_options

    check_robot_options(config)  # --foxglove, --formats mcap: bad options and missing packages
    from .vmc_output import check_vmc_options

    check_vmc_options(config.vmc, config.vmc_track)  # --vmc, --vmc-track, python-osc
    from .multi_view import check_multi_view_options

    check_multi_view_options(config)  # several --source, --rig, --source-offset


def build_pipeline(config: RunConfig, *, extra_stages: list[Stage] | None = None, source: Source | None = None,
                   engines=None):
    """Open the source (or take ``source``, already open, e.g. a synthetic one) and the
    outputs and assemble the pipeline. Raises SmplstreamError. ``engines``: a
    :class:`~streamer.stage_engines.EngineSet` built for the plan this config resolves to,
    whose loaded networks the stages reuse (``batch``).

    The pipeline takes the source's first frame only once every stage has started (models
    loaded), so a live run neither drops frames nor counts seconds of latency while loading."""
    check_config(config)
    cv2.setNumThreads(1)  # global; stages run in parallel threads on few cores
    live_hint = None if config.mode is None else config.mode == "live"
    rig = None  # several cameras: streamer.multi_view
    if config.more_sources:
        from .multi_view import open_rig_sources

        source, rig = open_rig_sources(config, live_hint, source)
    elif source is None:
        source = open_source(config.source, live=live_hint, width=config.width, height=config.height,
                             fps=config.fps)
    publisher = recorder = preview = viewer = None
    built: list[Stage] = []  # closed again if a later option fails
    robots: list = []  # the MCAP file and the Foxglove server (streamer.robot_outputs), the VMC sender
    fps = getattr(source, "fps", None) or 30.0
    try:
        camera = run_camera(config.camera, source) if rig is None else rig.cameras[0]
        mode: Mode = config.mode or default_mode(source)
        plan = plan_run(config, mode)
        log.debug("run plan:\n%s", plan.describe())
        if engines is not None and engines.plan != plan:
            raise ValueError("build_pipeline: the engines were built for another plan")
        from .stage_engines import build_output_body

        # Before the networks load: a bad model file fails at once.
        output_body = build_output_body(plan, None if engines is None else engines.body)  # None: the bundled model
        body_model = {"body_model": BODY_MODEL_NAME, "gender": "neutral"} if output_body is None else \
            {"body_model": output_body.name, "gender": output_body.gender}
        if config.record and output_body is not None:
            from .motion_formats import parse_formats

            output_body.check_formats(parse_formats(config.formats))
        built = processing_stages(plan, camera, fps, body=None if output_body is None else output_body.fit_body,
                                  engines=engines, rig=rig)
        from .output_frame import frame_stages

        if rig is None:
            built = frame_stages(config, camera, built)  # --output-frame head/world
        elif not rig.reference_at_origin:
            from .multi_view import RigFrameStage

            built.append(RigFrameStage(rig))
        stages = built + list(extra_stages or [])
        if config.record:
            from .motion_formats import MultiFormatRecorder, parse_formats

            if output_body is None:
                recorder = MultiFormatRecorder(config.record, formats=parse_formats(config.formats),
                                               fps=fps, image_size=source.size, body_model=BODY_MODEL_NAME)
            else:
                from .output_body import BodyModelRecorder

                recorder = BodyModelRecorder(config.record, output_body=output_body, formats=parse_formats(config.formats),
                                             fps=fps, image_size=source.size)
        elif config.formats:
            raise ConfigError("--formats needs --record DIR")
        if config.publish:
            publisher_class, more = ZmqPublisher, {}
            if output_body is not None:
                from .output_body import BodyModelPublisher

                publisher_class, more = BodyModelPublisher, {"output_body": output_body}
            publisher = publisher_class(config.publish, extra_header={"source": source.name,
                                                                      "camera": camera_header(camera), **body_model},
                                        curve_keys=config.curve_keys, **more)
            log.info("publishing on %s", publisher.bound_endpoint)
        if config.preview:
            from .preview import PreviewWriter

            try:
                preview = PreviewWriter(config.preview, fps=fps, size=source.size, camera=camera,
                                        skeleton=config.preview_skeleton, live=mode == "live")
            except (ValueError, OSError) as exc:
                raise ConfigError(str(exc)) from None
        elif config.preview_skeleton:
            raise ConfigError("--preview-skeleton needs --preview OUT.mp4")
        if config.viewer or config.viewer_save:
            from .viewer import RerunViewer

            viewer = RerunViewer(spawn=config.viewer == "spawn",
                                 connect=None if config.viewer in (None, "spawn") else config.viewer,
                                 save=config.viewer_save, camera=camera)
        from .robot_outputs import open_robot_outputs

        robots = open_robot_outputs(config, camera, source_name=source.name, body_model=BODY_MODEL_NAME)
        if config.vmc:
            from .vmc_output import VmcSender

            robots.append(VmcSender(config.vmc, track=config.vmc_track))
        progress = None
        if config.progress and mode == "offline" and sys.stderr.isatty():
            progress = tqdm(total=_expected_frames(source, config.max_frames), unit="frame",
                            desc="frames", dynamic_ncols=True, leave=False)
        stages.append(OutputStage(publisher, recorder, preview=preview,
                                  wait_subscribers=config.wait_subscribers, progress=progress,
                                  viewer=viewer, outputs=robots))
    except BaseException:
        # Nothing half-opened is left behind when a later option turns out to be bad.
        source.close()
        for opened in (publisher, preview, viewer, *robots, *built):
            if opened is not None:
                opened.close()
        raise
    stats = LatencyStats()
    if mode == "live":
        queue_size, policy = config.queue_size or LIVE_QUEUE, "drop_oldest"
    else:
        queue_size, policy = config.queue_size or OFFLINE_QUEUE, "block"
    # A file played like a camera decodes the next frame while this one is in flight: that
    # work waits for the frame's own (RunPlan.decoder_nice); its frames carry their due time.
    pipeline = Pipeline(source, stages, queue_size=queue_size, policy=policy,
                        max_frames=config.max_frames, observer=stats,
                        source_nice=plan.decoder_nice if getattr(source, "paced", False) else 0)
    return pipeline, stats, plan


def run(config: RunConfig, *, extra_stages: list[Stage] | None = None, engines=None) -> RunOutcome:
    """Build and run the pipeline, print the latency table, write ``--stats-json``.
    ``engines``: networks loaded already (:func:`build_pipeline`).

    A stage failure still prints the table and writes the stats (outputs are already
    flushed), then raises :class:`~streamer.errors.PipelineError`.
    """
    pipeline, stats, plan = build_pipeline(config, extra_stages=extra_stages, engines=engines)
    mode = plan.mode
    log.info("running %s in %s mode", pipeline.source.name, mode)
    error: SmplstreamError | None = None
    try:
        result = pipeline.run()
    except SmplstreamError as exc:
        error = exc
        result = pipeline.result
    summary = stats.summary(result)
    summary["mode"] = mode
    summary["source"] = pipeline.source.name
    if hasattr(pipeline.source, "report"):  # several cameras: each view's missing steps
        summary["views"] = pipeline.source.report()
    summary["plan"] = plan.to_dict()
    quality = next((s.quality for s in pipeline.stages if getattr(s, "quality", None) is not None), None)
    fit = quality.summary() if quality is not None else {}
    if fit:
        summary["fit"] = fit
    if config.stats_json:
        Path(config.stats_json).write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(summary), file=sys.stderr)
    if fit:
        print(quality.table(), file=sys.stderr)
    if result.stopped_by:
        log.warning("stopped by %s after %d frames", result.stopped_by, result.frames_out)
    if error is not None:
        raise error
    return RunOutcome(result=result, summary=summary, mode=mode)


def run_camera(path: str | None, source: Source):
    """The run's camera: the file scaled to the source size, or the assumed pinhole."""
    from calibration.camera_file import camera_note, camera_or_assumed
    from calibration.fileio import FileFormatError

    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--camera {path}: no such file (make one with `smplstream calibrate`)")
    try:
        camera, assumed = camera_or_assumed(path, *source.size)
    except (FileFormatError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    log.info(camera_note(camera, assumed, path))
    return camera


def camera_header(camera) -> dict:
    """The camera as it appears in the wire header (``docs/wire-format.md``)."""
    return {"model": camera.model, "image_width": camera.width, "image_height": camera.height,
            "camera_matrix": camera.K.round(6).tolist(), "dist_coeffs": camera.dist.round(9).tolist()}


def _expected_frames(source: Source, max_frames: int | None) -> int | None:
    total = getattr(source, "frame_count", None)
    if max_frames is not None:
        return min(total, max_frames) if total else max_frames
    return total

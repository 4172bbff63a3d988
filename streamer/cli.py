"""The command line: ``smplstream`` / ``python run_stream.py``.

Thin by design: it parses options, sets up logging and hands over to the module that does
the work. Errors the user can fix are printed as one line (``smplstream: error: ...``) with
a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS, REFINE_LAG
from engines.run_plan import PlanError, mode_defaults

from .errors import PipelineError, SmplstreamError
from .option_help import BODY_MODEL_HELP, GENDER_HELP, WORLD_WEIGHT_HELP
from .publisher import DEFAULT_ENDPOINT

log = logging.getLogger("smplstream")


def _run(args: argparse.Namespace) -> int:
    from .app import RunConfig, run

    config = RunConfig(
        source=args.source[0],
        more_sources=args.source[1:],
        source_offsets=args.source_offset,
        mode=args.mode,
        publish=None if args.publish.lower() == "none" else args.publish,
        curve_keys=args.curve_keys,
        record=args.record,
        max_frames=args.max_frames,
        stats_json=args.stats_json,
        wait_subscribers=args.wait_subscribers,
        width=args.width,
        height=args.height,
        fps=args.fps,
        preview=args.preview,
        progress=not args.quiet,
        formats=args.formats,
        mcap_video=args.mcap_video,
        foxglove=args.foxglove,
        vmc=args.vmc,
        vmc_track=args.vmc_track,
        preview_skeleton=args.preview_skeleton,
        viewer=args.viewer,
        viewer_save=args.viewer_save,
        output_frame=args.output_frame,
        rig=args.rig,
        imu=args.imu,
        camera_pitch=args.camera_pitch,
        **processing_config(args),
    )
    outcome = run(config)
    stopped = outcome.result.stopped_by
    if stopped and outcome.mode == "offline":
        return 130 if stopped == "SIGINT" else 143  # the file was not processed to its end
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .app import RunConfig
    from .batch import BatchConfig, run_batch

    config = BatchConfig(
        inputs=args.inputs, out=args.out, address=args.address, workers=args.workers,
        threads=args.threads_per_worker, retries=args.retries, progress=not args.quiet,
        run=RunConfig(source="", formats=args.formats, mcap_video=args.mcap_video, max_frames=args.max_frames,
                      fps=args.fps, **processing_config(args)))
    report = run_batch(config)
    print(report.worker_table(), file=sys.stderr)
    for failed in report.failed:
        print(f"smplstream: {failed.video}: failed: {failed.error}", file=sys.stderr)
    return 1 if report.failed else 0


def _subscribe(args: argparse.Namespace) -> int:
    from .subscriber import Subscriber
    from .wire import person_summary

    received = 0
    with Subscriber(args.endpoint, curve_keys=args.curve_keys) as sub:
        try:
            while args.count is None or received < args.count:
                msg = sub.receive(timeout=args.timeout)
                if msg is None:
                    print(f"smplstream: no frame within {args.timeout} s from {args.endpoint} "
                          "(is the publisher running?)", file=sys.stderr)
                    return 1
                received += 1
                h = msg.frame.header
                if msg.missed:
                    print(f"gap: {msg.missed} frame(s) missed before seq {h['seq']}", file=sys.stderr)
                line = {"seq": h["seq"], "frame_index": h["frame_index"],
                        "latency_ms": round(msg.latency * 1000, 3), "missed": msg.missed,
                        "persons": [person_summary(p) for p in msg.frame.persons]}
                if args.json:
                    print(json.dumps(line), flush=True)
                else:
                    ids = ", ".join(str(p.track_id) for p in msg.frame.persons) or "-"
                    print(f"seq {h['seq']:>6}  frame {h['frame_index']:>6}  "
                          f"latency {line['latency_ms']:7.2f} ms  persons [{ids}]", flush=True)
        except KeyboardInterrupt:
            pass
        print(f"received {sub.received} frame(s), {sub.gaps} gap(s), {sub.missed} missed, "
              f"{sub.bad_messages} malformed", file=sys.stderr)
    return 0


def add_processing_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how frames are processed (models, tracking, camera, body model), shared
    by ``run`` and ``batch``; :func:`processing_config` reads them back."""
    parser.add_argument("--no-perception", action="store_true",
                        help="skip detection and keypoints (capture, timestamp and publish frames only)")
    parser.add_argument("--no-lift", action="store_true", help="stop at 2D keypoints (no SMPL)")
    parser.add_argument("--lift-steps", type=int, default=None, metavar="K",
                        help=f"denoising steps (default {mode_defaults(LIFT_STEPS)})")
    parser.add_argument("--lift-samples", type=int, default=None, metavar="N",
                        help=f"samples per person; their spread is the published uncertainty (default {LIFT_SAMPLES})")
    parser.add_argument("--refine-lag", type=int, default=None, metavar="L",
                        help="temporal refinement publishes each frame L frames late (0: causal; "
                             f"default {mode_defaults(REFINE_LAG)})")
    parser.add_argument("--refine-steps", type=int, default=None, metavar="S",
                        help="keypoint-fit iterations after each call of the diffusion prior (default 1 live, 2 offline; "
                             "live runs call it once per frame, offline runs twice per window)")
    parser.add_argument("--no-refine", action="store_true", help="publish the per-frame lifts unfitted")
    parser.add_argument("--no-world-landmarks", action="store_true",
                        help="ignore the landmark network's metric 3D landmarks: fit the 2D keypoints only "
                             "(and lift without them where the lifter takes them)")
    parser.add_argument("--world-weight", type=float, default=None, metavar="W", help=WORLD_WEIGHT_HELP)
    parser.add_argument("--backend", default="auto", metavar="SPEC",
                        help="engine backend: auto, onnxruntime, torch, torch-compile or tensorrt for every "
                             "stage, or per stage: keypoints=torch,lift=onnxruntime (default auto: TensorRT, "
                             "then torch.compile on CUDA, else ONNX Runtime on CPU)")
    parser.add_argument("--denoiser-precision", choices=("fp32", "int8"), default=None,
                        help="the lift and refinement network's weights: int8 (ONNX Runtime, about 4x faster, "
                             "slightly less accurate) or fp32 (default: int8 in live mode on CPU, else fp32)")
    parser.add_argument("--max-persons", type=int, default=6, metavar="N", help="follow at most N people (default 6)")
    parser.add_argument("--reid-seconds", type=float, default=4.0, metavar="S",
                        help="keep a lost person's id this long, to give it back when they reappear (default 4; 0: off)")
    parser.add_argument("--detector-tiles", type=int, default=None, metavar="PIXELS",
                        help="also detect on square tiles of this size: finds people under a third of the "
                             "frame height, one detector run per tile")
    parser.add_argument("--camera", metavar="CAM.yaml",
                        help="camera file (see `calibrate`); without it a 63 deg pinhole is assumed")
    parser.add_argument("--body-model", metavar="PATH", help=BODY_MODEL_HELP)
    parser.add_argument("--gender", choices=("neutral", "female", "male"), help=GENDER_HELP)


def processing_config(args: argparse.Namespace) -> dict:
    """The RunConfig fields of :func:`add_processing_options`' options."""
    return dict(
        camera=args.camera,
        perception=not args.no_perception,
        lift=not args.no_lift,
        lift_steps=args.lift_steps,
        lift_samples=args.lift_samples,
        refine=not args.no_refine,
        refine_lag=args.refine_lag,
        refine_steps=args.refine_steps,
        world_landmarks=not args.no_world_landmarks,
        fit_changes=None if args.world_weight is None else {"world_weight": args.world_weight},
        backend=args.backend,
        max_persons=args.max_persons,
        reid_seconds=args.reid_seconds,
        detector_tile_size=args.detector_tiles,
        denoiser_precision=args.denoiser_precision,
        body_model=args.body_model,
        gender=args.gender,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smplstream",
        description="Real-time 3D human motion (SMPL) from camera frames, over ZeroMQ and to motion files.")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging (run: prints the resolved run plan)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a source through the pipeline",
                         description="Run a video file, image folder, camera or network stream "
                                     "through the pipeline; publish and record the result.")
    run.add_argument("--source", required=True, action="append",
                     help="video file, image folder, camera index or /dev/videoN, or rtsp://, rtsps://, "
                          "rtmp://, http(s)://, srt://, tcp://, udp:// URL (credentials in it are never shown); "
                          "again for each further camera of a --rig (docs/multi-camera.md)")
    run.add_argument("--source-offset", type=float, action="append", metavar="SECONDS",
                     help="several --source: one per source, in order: seconds after the common start at which "
                          "that recording started (files), or added to its capture times (cameras); default 0")
    run.add_argument("--mode", choices=("live", "offline"),
                     help="live: newest frame wins, drops counted (default for cameras and streams); "
                          "offline: every frame processed (default for files and folders)")
    run.add_argument("--publish", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                     help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT}; 'none' to disable)")
    run.add_argument("--curve-keys", metavar="DIR",
                     help="encrypt the stream and admit only authorised subscribers (see `keys`)")
    run.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                     help="hold the first frame until N subscribers have joined")
    run.add_argument("--record", metavar="DIR", help="write motion files per track into DIR")
    run.add_argument("--formats", metavar="LIST",
                     help="motion file formats for --record, comma-separated: npz, bvh, smpl, glb per track, "
                          "mcap: one file per run with ROS 2 messages (default npz; keypoint .npz files are "
                          "always written)")
    run.add_argument("--mcap-video", action="store_true",
                     help="--formats mcap: also write the frames (JPEG, at most 1280 px wide)")
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument("--stats-json", metavar="FILE", help="write latency statistics as JSON")
    run.add_argument("--preview", metavar="OUT.mp4",
                     help="write a video with each person's body (its mesh, or with --preview-skeleton its "
                          "skeleton), box and id drawn over the frames")
    run.add_argument("--preview-skeleton", action="store_true",
                     help="preview: draw each body's 3D skeleton, projected, instead of its mesh")
    run.add_argument("--viewer", nargs="?", const="spawn", metavar="URL",
                     help="stream to a live Rerun viewer: spawn one (or join one on port 9876), or connect "
                          "to URL (rerun+http://HOST:9876/proxy); needs the viewer extra")
    run.add_argument("--viewer-save", metavar="FILE.rrd",
                     help="write the Rerun stream to FILE.rrd (headless; open it with `rerun FILE.rrd`)")
    run.add_argument("--foxglove", nargs="?", const="127.0.0.1:8765", metavar="HOST:PORT",
                     help="serve the people (ROS 2 TF and markers) and the image live to Foxglove on "
                          "HOST:PORT (default 127.0.0.1:8765); needs the robots extra")
    run.add_argument("--vmc", nargs="?", const="127.0.0.1:39539", metavar="HOST:PORT",
                     help="stream one person's bones live over the VMC protocol (OSC/UDP) to an avatar app "
                          "(VSeeFace, Warudo, EVMC4U) at HOST:PORT (:PORT or PORT: loopback; default "
                          "127.0.0.1:39539); needs the avatar extra")
    run.add_argument("--vmc-track", default="largest", metavar="largest|first|ID",
                     help="whom --vmc sends: the tallest box (largest, default), the first person seen "
                          "(first), or a track id")
    add_processing_options(run)
    run.add_argument("--output-frame", choices=("camera", "head", "world"), default="camera",
                     help="frame of every output: camera (default), head (needs --rig) or world: gravity-aligned, "
                          "the camera's own turning taken out (docs/head-mounted.md)")
    run.add_argument("--rig", metavar="RIG.yaml", help="head-mounted rig file: the camera's pose on the head "
                                                       "(and the IMU's on the camera); with several --source: the "
                                                       "multi-camera rig of `calibrate-rig`")
    run.add_argument("--imu", metavar="FILE|tcp://HOST:PORT",
                     help="--output-frame world: the device's orientation stream (CSV or JSON lines file, or "
                          "a ZeroMQ endpoint), fused with the video's estimate and giving gravity")
    run.add_argument("--camera-pitch", type=float, metavar="DEG",
                     help="--output-frame world without an IMU: the first frame's pitch, degrees below level "
                          "(default: gravity from the people in view)")
    run.add_argument("--width", type=int, help="camera: requested frame width")
    run.add_argument("--height", type=int, help="camera: requested frame height")
    run.add_argument("--fps", type=float, help="camera: requested rate; image folder: its frame rate")
    run.set_defaults(func=_run)

    batch = sub.add_parser("batch", help="run many videos offline on Ray, one task per video (docs/batch.md)",
                           description="Run every video of INPUT... offline, as `run --record` would, on a local "
                                       "Ray or a Ray cluster; resumable, one folder per video under --out and "
                                       "a manifest.jsonl. Needs the batch extra (Ray).")
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="video files, folders (searched for videos), globs, URLs, or .txt files of "
                            "those (one a line)")
    batch.add_argument("--out", required=True, metavar="DIR", help="write each video's motion files to DIR/NAME/")
    batch.add_argument("--address", metavar="auto|HOST:PORT|ray://HOST:10001",
                       help="join this Ray cluster (default: start a local Ray for this command and stop it after)")
    batch.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes, each with the models loaded once (default 1)")
    batch.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                       help="CPUs each worker reserves and threads each of its networks uses (default 1)")
    batch.add_argument("--retries", type=int, default=2, metavar="R",
                       help="restart a worker whose process died and retry its video up to R times (default 2)")
    batch.add_argument("--formats", metavar="LIST", help="motion file formats, as for run --formats (default npz)")
    batch.add_argument("--mcap-video", action="store_true", help="--formats mcap: also write the frames")
    batch.add_argument("--max-frames", type=int, metavar="N", help="stop each video after N frames")
    batch.add_argument("--fps", type=float, help="image folders' frame rate")
    add_processing_options(batch)
    batch.set_defaults(func=_batch)

    subscribe = sub.add_parser("subscribe", help="print the frames a publisher sends",
                               description="Connect to a publisher and print one line per frame.")
    subscribe.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                           help=f"the publisher's ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    subscribe.add_argument("--count", type=int, metavar="N", help="exit after N frames")
    subscribe.add_argument("--curve-keys", metavar="DIR", help="client key pair and the publisher's public key")
    subscribe.add_argument("--json", action="store_true", help="one JSON object per line")
    subscribe.add_argument("--timeout", type=float, default=None, metavar="S",
                           help="give up if no frame arrives for S seconds")
    subscribe.set_defaults(func=_subscribe)

    for name, target, summary in DELEGATED:
        delegate = sub.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
        delegate.add_argument("rest", nargs=argparse.REMAINDER)
        delegate.set_defaults(func=_delegate(target))
    return parser


# Subcommands whose options live with the code that does the work: "module:function"
# taking argv and returning an exit status. Run `smplstream NAME --help` for their options.
DELEGATED = (
    ("lift", "streamer.lift_file:main", "lift a keypoint file to an AMASS-style SMPL motion file"),
    ("recover", "streamer.motion_recovery:main",
     "assemble the motion files of a recording that was killed (kill -9, power cut) from its chunks; "
     "only once that process has gone"),
    ("mocap-dataset", "engines.mocap.dataset:main",
     "retarget motion capture (HDM05 ASF/AMC, CMU BVH) to SMPL training arrays"),
    ("train-lifter", "engines.training.train:main", "train the diffusion lifter (resumable)"),
    ("evaluate-refinement", "engines.refinement.evaluate:main",
     "compare temporal refinement with per-frame lifting and classic smoothers on held-out clips"),
    ("evaluate-lifter", "engines.training.evaluate:main", "evaluate the lifter on held-out actors"),
    ("average-lifter", "engines.training.soup:main",
     "average the weights of lifter runs that started from the same weights (a model soup)"),
    ("export-engines", "engines.runtime.export:main",
     "prepare every model for a backend (ONNX Runtime, torch, torch.compile, TensorRT) and check it numerically"),
    ("bench", "streamer.bench:main",
     "latency and throughput of the real pipeline per stage, on a source or synthetic people; --compare backends"),
    ("keys", "streamer.security:main", "generate CurveZMQ key pairs for an encrypted, authenticated stream"),
    ("calibrate", "calibration.cli:main",
     "calibrate a camera from checkerboard or ChArUco images or video"),
    ("calibrate-rig", "calibration.rig_cli:main",
     "calibrate several synchronised cameras (intrinsics and relative poses) from one board"),
)


def _delegate(target: str):
    def call(args: argparse.Namespace) -> int:
        import importlib

        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(args.rest)

    return call


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smplstream`` console script and ``run_stream.py``."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname).1s [%(threadName)s] %(name)s: %(message)s",
                        stream=sys.stderr)
    from .security import Redactor

    # A source URL's credentials never reach the logs or an error line (the sources show it
    # redacted already; this also catches what libraries print).
    sources = getattr(args, "source", None)
    redact = Redactor(*(sources if isinstance(sources, list) else [sources]))
    redact.install()
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"smplstream: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except (SmplstreamError, PlanError) as exc:  # PlanError: the run plan's (engines.run_plan), a ConfigError
        print(f"smplstream: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smplstream: interrupted", file=sys.stderr)
        return 130
    finally:
        redact.uninstall()

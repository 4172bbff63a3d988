"""``run_stream.py lift``: a keypoint file in, an AMASS-style motion file out.

The keypoint file (``docs/motion-files.md``; ``--record`` writes them) holds ``keypoints``
(T, J, 3: pixel x, y, confidence with 0 = missing), ``joint_set`` (``coco17`` or
``blazepose33``), ``fps`` and ``image_size`` (width, height). Frames are lifted in batches;
without ``--camera`` the intrinsics are assumed from the image size, and the command says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS, REFINE_LAG

from .errors import ConfigError, SmplstreamError
from .motion_files import motion_arrays, write_npz_atomic
from .option_help import BODY_MODEL_HELP, GENDER_HELP, WORLD_WEIGHT_HELP, check_world_weight

log = logging.getLogger("smplstream.lift")

JOINT_COUNTS = {"coco17": 17, "blazepose33": 33}


class KeypointFileError(SmplstreamError):
    """A keypoint file that cannot be lifted; the message names the file and what is wrong."""


@dataclass
class KeypointFile:
    keypoints: np.ndarray  # (T, J, 3)
    joint_set: str
    fps: float
    image_size: tuple[int, int]
    frame_index: np.ndarray
    timestamp: np.ndarray
    world: np.ndarray | None = None  # (T, 33, 3) the landmark network's metric landmarks


def read_keypoint_file(path: str | Path) -> KeypointFile:
    """Read and check a keypoint file, raising :class:`KeypointFileError` with one line."""
    path = Path(path)
    if not path.is_file():
        raise KeypointFileError(f"{path}: no such keypoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - zip, pickle and format errors all mean unreadable
        raise KeypointFileError(f"{path}: not a readable .npz keypoint file ({exc})") from None
    missing = [k for k in ("keypoints", "joint_set", "fps", "image_size") if k not in fields]
    if missing:
        raise KeypointFileError(f"{path}: missing {', '.join(missing)} (see docs/motion-files.md)")
    joint_set = str(fields["joint_set"])
    if joint_set not in JOINT_COUNTS:
        raise KeypointFileError(f"{path}: unknown joint_set {joint_set!r}; expected coco17 or blazepose33")
    kp = fields["keypoints"]
    J = JOINT_COUNTS[joint_set]
    if kp.ndim != 3 or kp.shape[1:] != (J, 3) or not np.issubdtype(kp.dtype, np.number):
        raise KeypointFileError(f"{path}: keypoints must be (T, {J}, 3) numbers for {joint_set}, "
                                f"got {kp.shape} {kp.dtype}")
    if len(kp) == 0:
        raise KeypointFileError(f"{path}: keypoints hold no frames")
    bad = ~np.isfinite(kp)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[0])
        raise KeypointFileError(f"{path}: keypoints contain NaN or infinite values in {len(frames)} frame(s), "
                                f"first at frame {frames[0]} (mark missing points with confidence 0 instead)")
    size = np.asarray(fields["image_size"]).ravel()
    if size.shape != (2,) or (size <= 0).any():
        raise KeypointFileError(f"{path}: image_size must be (width, height) in pixels, got {size.tolist()}")
    fps = float(fields["fps"])
    if not np.isfinite(fps) or fps <= 0:
        raise KeypointFileError(f"{path}: fps must be positive, got {fps}")
    T = len(kp)
    frame_index = fields.get("frame_index", np.arange(T))
    timestamp = fields.get("timestamp", np.asarray(frame_index) / fps)
    world = fields.get("world_landmarks")
    if world is not None:
        world = np.asarray(world)
        if joint_set != "blazepose33" or world.shape != (T, 33, 3) or not np.isfinite(world).all():
            raise KeypointFileError(f"{path}: world_landmarks must be (T, 33, 3) finite metres beside "
                                    f"blazepose33 keypoints, got {world.shape} for {joint_set}")
    return KeypointFile(kp.astype(np.float64), joint_set, fps, (int(size[0]), int(size[1])),
                        np.asarray(frame_index, np.int64), np.asarray(timestamp, np.float64),
                        None if world is None else world.astype(np.float32))


def fit_sequence(lifted: dict[str, np.ndarray], keep: np.ndarray, pixels: np.ndarray, normalised: np.ndarray,
                 world: np.ndarray | None, cam, body, online, frame_index: np.ndarray | None = None) -> tuple[dict, object]:
    """Fit one person's lifted frames to their keypoints over time with ``online`` (an
    :class:`engines.refinement.online.OnlineRefiner`, as the refine stage of an offline run
    has it): returns the fitted ``poses``, ``trans``, ``betas``, ``joints`` of the kept
    frames and the :class:`FitQuality` of the result. ``frame_index`` (T,) gives each row's
    source frame (default: the rows are consecutive frames). A gap of more than one frame
    (rows not kept: too few keypoints to lift; or frames the file does not hold: a track
    that was lost and found again) starts the window again."""
    from engines.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
    from engines.diffusion.denoiser import BETAS, pose_vector, rotations_of
    from engines.diffusion.features import condition_features
    from engines.refinement.guided import CameraParams
    from engines.refinement.online import Observation, refine_sequence
    from engines.refinement.quality import FitQuality

    params = CameraParams.from_camera(cam)
    idx = np.flatnonzero(keep)
    poses = torch.from_numpy(lifted["poses"][keep].astype(np.float32))
    x = pose_vector(axis_angle_to_matrix(poses.view(-1, 24, 3)), torch.from_numpy(lifted["betas"][keep].astype(np.float32)))
    trans = torch.from_numpy(lifted["trans"][keep].astype(np.float32))
    w = None if world is None else torch.from_numpy(world[idx])
    cond = condition_features(torch.from_numpy(normalised[idx]), w, world=online.refiner.model.config.world_landmarks)
    px = torch.from_numpy(pixels[idx].astype(np.float32))
    spread = torch.from_numpy(lifted["poses_std"][keep].astype(np.float32))  # the fit's prior loosens there
    # Steps are source frames, so a gap is seen as one: a track found again after a while
    # must not be pulled along the trajectory it had before it was lost.
    steps = idx if frame_index is None else np.asarray(frame_index)[idx]
    out = refine_sequence(online, [int(f) for f in steps],
                          lambda i: {0: Observation(x[i], trans[i], cond[i], px[i], None if w is None else w[i],
                                                    x_std=spread[i])}, params)
    fx, ft = torch.stack([e[0] for e in out]), torch.stack([e[1] for e in out])
    R = rotations_of(fx)
    with torch.no_grad():
        out = body(R, fx[:, BETAS], ft, keypoints="blazepose33")
    quality = FitQuality()
    per_frame = quality.measure([0] * len(idx), out.keypoints["blazepose33"], px, params)
    fitted = {"poses": matrix_to_axis_angle(R).reshape(-1, 72).numpy(), "trans": ft.numpy(),
              "betas": fx[:, BETAS].numpy(), "joints": out.joints.numpy(), "reprojection_px": per_frame}
    return fitted, quality


def lift_keypoint_file(path: str | Path, out: str | Path, *, camera: str | None = None,
                       num_steps: int | None = None, num_samples: int | None = None, batch: int = 64,
                       weights: str | None = None, refine: bool = True, refine_lag: int | None = None,
                       refine_steps: int | None = None, world_landmarks: bool = True,
                       body_model: str | None = None, gender: str | None = None,
                       world_weight: float | None = None) -> dict:
    """Lift every frame of a keypoint file, fit the result to the keypoints over time (unless
    ``refine`` is False), and write the motion file; returns a summary with the fit quality.
    The lifter and the fit are those of an offline ``run`` (its run plan: ``None`` takes the
    mode's default). ``body_model`` (a model file or smplx models folder, with ``gender``)
    poses the written motion on the user's SMPL, SMPL+H or SMPL-X model
    (:mod:`streamer.output_body`). ``world_weight``: the fit's trust in the world landmarks
    (``run --world-weight``; None: the default)."""
    from calibration.camera_file import camera_note, camera_or_assumed
    from calibration.fileio import FileFormatError
    from engines.body.body_model import BodyModel
    from engines.lifting.lifter import LiftResult
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import PlanOptions, plan_run

    from .stage_engines import build_output_body

    kf = read_keypoint_file(path)
    try:
        cam, assumed = camera_or_assumed(camera, *kf.image_size)
    except (FileFormatError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    log.info(camera_note(cam, assumed, camera))
    plan = plan_run(PlanOptions(lift_steps=num_steps, lift_samples=num_samples, refine=refine, refine_lag=refine_lag,
                                refine_steps=refine_steps, world_landmarks=world_landmarks, weights=weights,
                                body_model=body_model, gender=gender,
                                fit_changes=None if world_weight is None else {"world_weight": world_weight}),
                    "offline")
    body = BodyModel.load()
    output_body = build_output_body(plan, body)  # None: the bundled model
    lifter = build_lifter(plan, body)
    normalised = cam.normalize_keypoints(kf.keypoints).astype(np.float32)
    world = kf.world if world_landmarks else None
    parts = []
    for start in range(0, len(normalised), batch):
        parts.append(lifter.lift(torch.from_numpy(normalised[start:start + batch]),
                                 None if world is None else world[start:start + batch]))
    arrays = [p.smpl_arrays() for p in parts]
    cat = {k: np.concatenate([a[k] for a in arrays]) for k in LiftResult.SMPL_FIELDS}
    keep = torch.cat([p.valid for p in parts]).numpy()
    if not keep.any():
        raise KeypointFileError(f"{path}: no frame has enough confident keypoints to lift")

    pixels = kf.keypoints if kf.joint_set == "blazepose33" else _coco_pixels_in_blazepose(kf.keypoints)
    if refine:
        normalised33 = normalised if kf.joint_set == "blazepose33" else cam.normalize_keypoints(pixels).astype(np.float32)
        fitted, quality = fit_sequence(cat, keep, pixels, normalised33, world, cam, body,
                                       build_refiner(plan, body), kf.frame_index)
    else:
        fitted, quality = _measured_lift(cat, keep, pixels, cam, lifter.body)
    name = lifter.body_model_name
    if output_body is not None:  # the fit's bodies re-posed on the user's model
        fitted.update(output_body.convert(fitted["poses"], fitted["betas"], fitted["trans"]))
        name = output_body.name
    data = motion_arrays(poses=fitted["poses"], trans=fitted["trans"], betas=fitted["betas"],
                         joints=fitted["joints"], fps=kf.fps, body_model=name,
                         frame_index=kf.frame_index[keep], timestamp=kf.timestamp[keep],
                         poses_std=cat["poses_std"][keep], joints_std=cat["joints_std"][keep],
                         reprojection_px=fitted["reprojection_px"])
    if output_body is not None:
        from .motion_load import file_layout

        data.update(file_layout(data["poses"], data["trans"], output_body.gender))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(out, data)
    return {"frames": len(kf.keypoints), "lifted": int(keep.sum()), "out": str(out), "camera_assumed": assumed,
            "refined": refine, "fit": quality.summary(), "fit_table": quality.table()}


def _coco_pixels_in_blazepose(keypoints: np.ndarray) -> np.ndarray:
    """COCO-17 pixels (T, 17, 3) in their BlazePose-33 slots (the others missing)."""
    from engines.lifting.lifter import coco17_to_blazepose33

    return coco17_to_blazepose33(torch.from_numpy(keypoints)).numpy()


def _measured_lift(cat: dict, keep: np.ndarray, pixels: np.ndarray, cam, body) -> tuple[dict, object]:
    """The per-frame lifts as they are, with their re-projection error."""
    from engines.body.rotations import axis_angle_to_matrix
    from engines.refinement.guided import CameraParams
    from engines.refinement.quality import FitQuality

    params = CameraParams.from_camera(cam)
    with torch.no_grad():
        pts = body(axis_angle_to_matrix(torch.from_numpy(cat["poses"][keep]).view(-1, 24, 3)),
                   torch.from_numpy(cat["betas"][keep]), torch.from_numpy(cat["trans"][keep]),
                   keypoints="blazepose33").keypoints["blazepose33"]
    quality = FitQuality()
    fitted = {k: cat[k][keep] for k in ("poses", "trans", "betas", "joints")}
    fitted["reprojection_px"] = quality.measure([0] * len(pts), pts, torch.from_numpy(pixels[keep].astype(np.float32)),
                                                params)
    return fitted, quality


def main(argv: list[str] | None = None) -> int:
    # The module docstring without its reStructuredText markup.
    parser = argparse.ArgumentParser(prog="smplstream lift", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keypoints", help="keypoint .npz file")
    parser.add_argument("--out", required=True, help="motion file to write (.npz)")
    parser.add_argument("--camera", metavar="CAM.yaml", help="camera file; default: assumed from the image size")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"denoising steps K (default {LIFT_STEPS['offline']}, as offline `run`)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"samples per frame N for uncertainty (default {LIFT_SAMPLES})")
    parser.add_argument("--weights", help="denoiser weights (default: the bundled ones)")
    parser.add_argument("--refine-lag", type=int, default=None, metavar="L",
                        help=f"frames of look-ahead of the keypoint fit (default {REFINE_LAG['offline']}, as offline `run`)")
    parser.add_argument("--refine-steps", type=int, default=None, metavar="S",
                        help="keypoint-fit iterations after each call of the diffusion prior (default 2)")
    parser.add_argument("--no-refine", action="store_true", help="write the per-frame lifts unfitted")
    parser.add_argument("--no-world-landmarks", action="store_true",
                        help="ignore the file's world_landmarks (fit and lift from the 2D keypoints only)")
    parser.add_argument("--world-weight", type=float, default=None, metavar="W", help=WORLD_WEIGHT_HELP)
    parser.add_argument("--body-model", metavar="PATH", help=BODY_MODEL_HELP)
    parser.add_argument("--gender", choices=("neutral", "female", "male"), help=GENDER_HELP)
    args = parser.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or (args.samples is not None and args.samples < 1):
        raise ConfigError("--steps and --samples must be at least 1")
    if args.refine_lag is not None and args.refine_lag < 0:
        raise ConfigError("--refine-lag must be 0 (causal) or more frames")
    if args.refine_steps is not None and args.refine_steps < 1:
        raise ConfigError("--refine-steps must be at least 1")
    check_world_weight(args.world_weight)
    # One thread: the fit is many small products, which a second thread only slows down.
    torch.set_num_threads(1)
    summary = lift_keypoint_file(args.keypoints, args.out, camera=args.camera, num_steps=args.steps,
                                 num_samples=args.samples, weights=args.weights, refine=not args.no_refine,
                                 refine_lag=args.refine_lag, refine_steps=args.refine_steps,
                                 world_landmarks=not args.no_world_landmarks, body_model=args.body_model,
                                 gender=args.gender, world_weight=args.world_weight)
    print(f"lifted {summary['lifted']} of {summary['frames']} frames"
          f"{', fitted to the keypoints' if summary['refined'] else ''} -> {summary['out']}")
    if summary["fit_table"]:
        print(summary["fit_table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

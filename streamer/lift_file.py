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

from .errors import ConfigError, SmplstreamError
from .motion_files import motion_arrays, write_npz_atomic

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
    return KeypointFile(kp.astype(np.float64), joint_set, fps, (int(size[0]), int(size[1])),
                        np.asarray(frame_index, np.int64), np.asarray(timestamp, np.float64))


def lift_keypoint_file(path: str | Path, out: str | Path, *, camera: str | None = None, num_steps: int = 4,
                       num_samples: int = 8, batch: int = 64, weights: str | None = None) -> dict:
    """Lift every frame of a keypoint file and write the motion file; returns a summary."""
    from calibration.camera_file import camera_note, camera_or_assumed
    from calibration.fileio import FileFormatError
    from engines.lifting.lifter import Lifter, LifterWeightsError, LiftResult

    kf = read_keypoint_file(path)
    try:
        cam, assumed = camera_or_assumed(camera, *kf.image_size)
    except (FileFormatError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    log.info(camera_note(cam, assumed, camera))
    try:
        lifter = Lifter.load(weights, num_steps=num_steps, num_samples=num_samples)
    except LifterWeightsError as exc:
        raise ConfigError(str(exc)) from None
    normalised = cam.normalize_keypoints(kf.keypoints).astype(np.float32)
    parts = []
    for start in range(0, len(normalised), batch):
        parts.append(lifter.lift(torch.from_numpy(normalised[start:start + batch])))
    arrays = [p.smpl_arrays() for p in parts]
    cat = {k: np.concatenate([a[k] for a in arrays]) for k in LiftResult.SMPL_FIELDS}
    keep = torch.cat([p.valid for p in parts]).numpy()
    if not keep.any():
        raise KeypointFileError(f"{path}: no frame has enough confident keypoints to lift")
    data = motion_arrays(poses=cat["poses"][keep], trans=cat["trans"][keep], betas=cat["betas"][keep],
                         joints=cat["joints"][keep], fps=kf.fps, body_model=lifter.body_model_name,
                         frame_index=kf.frame_index[keep], timestamp=kf.timestamp[keep],
                         poses_std=cat["poses_std"][keep], joints_std=cat["joints_std"][keep])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(out, data)
    return {"frames": len(kf.keypoints), "lifted": int(keep.sum()), "out": str(out), "camera_assumed": assumed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smplstream lift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keypoints", help="keypoint .npz file")
    parser.add_argument("--out", required=True, help="motion file to write (.npz)")
    parser.add_argument("--camera", metavar="CAM.yaml", help="camera file; default: assumed from the image size")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps K (default 4)")
    parser.add_argument("--samples", type=int, default=8, help="samples per frame N for uncertainty (default 8)")
    parser.add_argument("--weights", help="denoiser weights (default: the bundled ones)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.samples < 1:
        raise ConfigError("--steps and --samples must be at least 1")
    torch.set_num_threads(2)
    summary = lift_keypoint_file(args.keypoints, args.out, camera=args.camera, num_steps=args.steps,
                                 num_samples=args.samples, weights=args.weights)
    print(f"lifted {summary['lifted']} of {summary['frames']} frames -> {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

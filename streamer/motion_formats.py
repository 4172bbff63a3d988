"""Motion files for animation tools, per track, beside the AMASS-style ``.npz``:

- **BVH** (``track_NNNN.bvh``): the SMPL skeleton (24 joints, SMPL names) with the body
  model's rest offsets for the track's mean shape, Euler channels ``Zrotation Xrotation
  Yrotation`` on every joint plus ``Xposition Yposition Zposition`` on the root, metres,
  one frame per recorded frame at the source's rate.
- **.smpl** (``track_NNNN.smpl``): Meshcapade's format, written through the ``smplcodec``
  package (optional extra ``smpl``).

Both are in a **Y-up world**, not the camera frame: the camera frame (OpenCV: x right,
y down, z forward) is turned 180 degrees about its x axis (x right, y up, z towards the
camera, as OpenGL and Blender's BVH importer expect), then shifted vertically so that the
track's feet stand at y = 0 (see :func:`world_motion`). ``docs/motion-files.md`` has the
details.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS
from engines.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .errors import ConfigError
from .motion_files import MotionRecorder, write_bytes_atomic


#: Camera frame (OpenCV) -> Y-up world: 180 degrees about x.
CAMERA_TO_WORLD = np.diag([1.0, -1.0, -1.0])
#: Euler order of the BVH rotation channels (intrinsic: R = Rz @ Rx @ Ry).
BVH_ORDER = "ZXY"
FORMATS = ("npz", "bvh", "smpl")
_FOOT_JOINTS = (7, 8, 10, 11)  # ankles and feet
_LEAF_END = {"head": (0.0, 0.10, 0.0)}  # End Site offsets (m) where the bone's direction is no guide


@dataclass
class WorldMotion:
    """A track's motion in the Y-up world, ready for BVH and .smpl.

    ``local_rotations`` (T, 24, 3, 3): SMPL local rotations, the root's now world-relative;
    ``root_positions`` (T, 3): pelvis joint in the world; ``trans`` (T, 3): SMPL translation in
    the world (joints = FK(rest) + trans); ``rest_joints`` (24, 3): rest joints of ``betas``;
    ``joints`` (T, 24, 3): world joints of the body model with ``betas``; ``betas`` (S,):
    the mean shape; ``floor`` the height (camera frame y, metres) removed to put the feet on
    y = 0 (0 with ``floor=False``).
    """

    local_rotations: np.ndarray
    root_positions: np.ndarray
    trans: np.ndarray
    rest_joints: np.ndarray
    joints: np.ndarray
    betas: np.ndarray
    floor: float


def world_motion(poses: np.ndarray, trans: np.ndarray, betas: np.ndarray, body, *, floor: bool = True) -> WorldMotion:
    """Convert camera-frame SMPL parameters (``poses`` (T, 72) axis-angle, ``trans`` (T, 3),
    ``betas`` (S,) or (T, S), averaged) to the Y-up world of the motion files.

    The whole body turns 180 degrees about the camera's x axis (about the origin: the camera
    ends at the world origin looking down -Z). With ``floor``, everything then moves up by
    the 5th percentile over frames of the lowest foot joint (ankles, feet), so the person
    stands on y = 0 give or take the joint's height above the sole; the camera is then at
    height -floor. The camera's pitch is not known, so a tilted camera gives a tilted floor.
    """
    poses = np.asarray(poses, np.float64).reshape(len(poses), 24, 3)
    trans = np.asarray(trans, np.float64).reshape(-1, 3)
    betas = np.asarray(betas, np.float64)
    betas = betas.mean(axis=0) if betas.ndim == 2 else betas
    T = len(poses)
    with torch.no_grad():
        b = torch.as_tensor(betas[None], dtype=body.J_template.dtype)
        rest = body.rest_joints(b)[0].double().numpy()
        R = axis_angle_to_matrix(torch.from_numpy(poses)).numpy()
        out = body(torch.from_numpy(poses.reshape(T, 72)).to(b.dtype), b.expand(T, -1),
                   torch.from_numpy(trans).to(b.dtype))
        joints_cam = out.joints.double().numpy()
    C = CAMERA_TO_WORLD
    R = R.copy()
    R[:, 0] = C @ R[:, 0]
    joints = joints_cam @ C.T
    shift = 0.0
    if floor and T:
        shift = -float(np.percentile(joints[:, _FOOT_JOINTS, 1].min(axis=1), 5))
    up = np.array([0.0, shift, 0.0])
    joints = joints + up
    # The root turns about the pelvis, so the SMPL translation moves with the pelvis.
    root = (rest[0] + trans) @ C.T + up
    return WorldMotion(local_rotations=R, root_positions=root, trans=root - rest[0], rest_joints=rest,
                       joints=joints, betas=betas, floor=-shift)


# -- BVH ---------------------------------------------------------------------------------


def bvh_text(motion: WorldMotion, fps: float, *, scale: float = 1.0, names=SMPL24_NAMES,
             parents=SMPL24_PARENTS) -> str:
    """The BVH file of ``motion``: hierarchy with rest offsets (``scale`` x metres), root
    position channels holding the pelvis position, and ``Zrotation Xrotation Yrotation``
    channels (intrinsic, R = Rz Rx Ry) on every joint, in degrees. The root's OFFSET is zero,
    so readers that add OFFSET to the position channels and readers that do not agree."""
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    offsets = motion.rest_joints - motion.rest_joints[[max(p, 0) for p in parents]]
    offsets[0] = 0.0
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    channels = f"CHANNELS 3 {' '.join(a + 'rotation' for a in BVH_ORDER)}"
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        x, y, z = offsets[j] * scale
        if parents[j] < 0:
            lines.append(f"{pad}ROOT {names[j]}")
        else:
            lines.append(f"{pad}JOINT {names[j]}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {x:.6f} {y:.6f} {z:.6f}")
        if parents[j] < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition "
                         f"{' '.join(a + 'rotation' for a in BVH_ORDER)}")
        else:
            lines.append(f"{pad}  {channels}")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            end = np.asarray(_LEAF_END.get(names[j], 0.5 * offsets[j] / max(scale, 1e-12))) * scale
            lines.append(f"{pad}  End Site")
            lines.append(pad + "  {")
            lines.append(f"{pad}    OFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}")
            lines.append(pad + "  }")
        lines.append(pad + "}")

    emit(0, 0)
    order = _depth_first(children)
    T = len(motion.local_rotations)
    euler = continuous_euler(motion.local_rotations[:, order])  # (T, J, 3) degrees
    values = np.concatenate([motion.root_positions * scale, euler.reshape(T, -1)], axis=1)
    buf = io.StringIO()
    buf.write("\n".join(lines))
    buf.write(f"\nMOTION\nFrames: {T}\nFrame Time: {1.0 / fps:.8f}\n")
    np.savetxt(buf, values, fmt="%.6f")
    return buf.getvalue()


def continuous_euler(R: np.ndarray, order: str = BVH_ORDER) -> np.ndarray:
    """Intrinsic Euler angles (degrees) of rotation matrices ``R`` (T, J, 3, 3), each frame's
    triple chosen among the equivalent ones (the other Tait-Bryan solution, multiples of
    360) to be nearest the previous frame's, so animation curves do not jump by 360."""
    T, J = R.shape[:2]
    if T == 0:
        return np.zeros((0, J, 3))
    a = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler(order, degrees=True).reshape(T, J, 3)
    # Second solution of a Tait-Bryan triple: (a + 180, 180 - b, c + 180).
    b = np.stack([a[..., 0] + 180.0, 180.0 - a[..., 1], a[..., 2] + 180.0], axis=-1)
    out = np.empty_like(a)
    out[0] = a[0]
    for t in range(1, T):
        prev = out[t - 1]
        best = None
        for cand in (a[t], b[t]):
            cand = cand + 360.0 * np.round((prev - cand) / 360.0)
            cost = np.abs(cand - prev).sum(axis=-1)
            best = (cand, cost) if best is None else (np.where((cost < best[1])[:, None], cand, best[0]),
                                                     np.minimum(cost, best[1]))
        out[t] = best[0]
    return out


def _depth_first(children: dict[int, list[int]]) -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


def bvh_joint_order(parents=SMPL24_PARENTS) -> list[int]:
    """SMPL joint indices in the order their channels appear in a BVH frame line."""
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    return _depth_first(children)


# -- .smpl (Meshcapade) -----------------------------------------------------------------------


def smpl_bytes(motion: WorldMotion, fps: float, *, include_betas: bool) -> bytes:
    """The ``.smpl`` file (smplcodec: SMPL version, neutral gender) of ``motion``: world
    axis-angle ``body_pose`` (T, 24, 3) and ``body_translation`` (T, 3) in the Y-up world.
    ``include_betas`` writes the mean shape; leave it off when the betas belong to another
    body model than Meshcapade's SMPL (they would mean a different shape there)."""
    try:
        from smplcodec import SMPLCodec, SMPLGender, SMPLVersion
    except ImportError:
        raise ConfigError("writing .smpl files needs the smplcodec package: pip install 'smplstream[smpl]'") from None
    T = len(motion.local_rotations)
    pose = matrix_to_axis_angle(torch.from_numpy(motion.local_rotations)).numpy()
    codec = SMPLCodec(smpl_version=SMPLVersion.SMPL, gender=SMPLGender.NEUTRAL,
                      shape_parameters=motion.betas.astype(np.float32) if include_betas else None,
                      frame_count=int(T), frame_rate=float(fps),
                      body_translation=motion.trans.astype(np.float32),
                      body_pose=pose.reshape(T, 24, 3).astype(np.float32))
    buf = io.BytesIO()
    codec.write_to_buffer(buf)
    return buf.getvalue()


# -- recorder ------------------------------------------------------------------------------


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``"npz,bvh,smpl"`` -> ``("npz", "bvh", "smpl")``; raises ConfigError on unknown names."""
    names = tuple(dict.fromkeys(s.strip().lower().lstrip(".") for s in (text or "npz").split(",") if s.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"--formats {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    if "smpl" in names:
        try:
            import smplcodec  # noqa: F401
        except ImportError:
            raise ConfigError("--formats smpl needs the smplcodec package: pip install 'smplstream[smpl]'") from None
    return names


class MultiFormatRecorder(MotionRecorder):
    """A :class:`~streamer.motion_files.MotionRecorder` that writes each track's SMPL motion
    in ``formats`` (``npz``, ``bvh``, ``smpl``); the keypoint ``.npz`` is always written.
    Every file is rewritten atomically on each flush, like the ``.npz``."""

    def __init__(self, directory, *, formats=("npz",), body=None, **kwargs):
        super().__init__(directory, **kwargs)
        self.formats = tuple(formats)
        self._body = body

    @property
    def body(self):
        if self._body is None:
            from engines.body.body_model import BodyModel

            self._body = BodyModel.load().double()
        return self._body

    def _save(self, path: Path, data: dict) -> None:
        if "poses" not in data:  # a keypoint file
            super()._save(path, data)
            return
        if "bvh" in self.formats or "smpl" in self.formats:
            motion = world_motion(data["poses"], data["trans"], data["betas"], self.body)
            fps = float(data["mocap_framerate"])
            if "bvh" in self.formats:
                self._save_bytes(path.with_suffix(".bvh"), bvh_text(motion, fps).encode("ascii"))
            if "smpl" in self.formats:
                self._save_bytes(path.with_suffix(".smpl"),
                                 smpl_bytes(motion, fps, include_betas=self.body_model != "anny-smpl"))
        if "npz" in self.formats:
            super()._save(path, data)

    def _save_bytes(self, path: Path, data: bytes) -> None:
        write_bytes_atomic(path, data)
        self.files_written.add(path)

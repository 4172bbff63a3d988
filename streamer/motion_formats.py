"""Motion files for animation tools, per track, beside the AMASS-style ``.npz``:

- **BVH** (``track_NNNN.bvh``): the SMPL skeleton (24 joints, SMPL names) with the body
  model's rest offsets for the track's mean shape, Euler channels ``Zrotation Xrotation
  Yrotation`` on every joint plus ``Xposition Yposition Zposition`` on the root, metres,
  one frame per recorded frame at the source's rate.
- **.smpl** (``track_NNNN.smpl``): Meshcapade's format, written through the ``smplcodec``
  package (optional extra ``smpl``).
- **GLB** (``track_NNNN.glb``): glTF 2.0 with the body's skinned mesh and the animation
  (:mod:`streamer.motion_glb`).

All are in a **Y-up world**, not the camera frame: the camera frame (OpenCV: x right,
y down, z forward) is turned 180 degrees about its x axis (x right, y up, z towards the
camera, as OpenGL and Blender's BVH importer expect), then shifted vertically so that the
track's feet stand at y = 0 (see :func:`world_motion`). ``docs/motion-files.md`` has the
details.
"""

from __future__ import annotations

import importlib.util

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS
from engines.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .errors import ConfigError
from .atomic_write import write_bytes_atomic, write_file_atomic
from .motion_files import MotionRecorder


#: Camera frame (OpenCV) -> Y-up world: 180 degrees about x.
CAMERA_TO_WORLD = np.diag([1.0, -1.0, -1.0])
#: Euler order of the BVH rotation channels (intrinsic: R = Rz @ Rx @ Ry).
BVH_ORDER = "ZXY"
FORMATS = ("npz", "bvh", "smpl", "glb", "mcap")  # mcap: one file per run, not per track (streamer.mcap_output)
#: The per-track formats written in the Y-up world (by :func:`write_world_formats`).
WORLD_FORMATS = ("bvh", "smpl", "glb")
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


def world_motion(poses: np.ndarray, trans: np.ndarray, betas: np.ndarray, body, *, floor: bool = True,
                 shift: float | None = None) -> WorldMotion:
    """Convert camera-frame SMPL parameters (``poses`` (T, 72) axis-angle, ``trans`` (T, 3),
    ``betas`` (S,) or (T, S), averaged) to the Y-up world of the motion files.

    The whole body turns 180 degrees about the camera's x axis (about the origin: the camera
    ends at the world origin looking down -Z). With ``floor``, everything then moves up by
    the 5th percentile over frames of the lowest foot joint (ankles, feet), so the person
    stands on y = 0 give or take the joint's height above the sole; the camera is then at
    height -floor. The camera's pitch is not known, so a tilted camera gives a tilted floor.
    ``shift`` gives the upward move instead (a long track converted piece by piece takes the
    whole track's :func:`floor_shift`).
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
    if shift is None:
        shift = floor_shift(lowest_feet(joints)) if floor and T else 0.0
    up = np.array([0.0, shift, 0.0])
    joints = joints + up
    # The root turns about the pelvis, so the SMPL translation moves with the pelvis.
    root = (rest[0] + trans) @ C.T + up
    return WorldMotion(local_rotations=R, root_positions=root, trans=root - rest[0], rest_joints=rest,
                       joints=joints, betas=betas, floor=-shift)


def lowest_feet(joints: np.ndarray) -> np.ndarray:
    """Per frame, the height (y) of the lowest ankle or foot joint of world ``joints`` (T, 24, 3)."""
    return joints[:, _FOOT_JOINTS, 1].min(axis=1)


def floor_shift(lowest: np.ndarray) -> float:
    """The upward move that puts the feet on y = 0, from every frame's :func:`lowest_feet`:
    minus their 5th percentile (robust to a few frames with a foot in the air or misfit)."""
    return -float(np.percentile(lowest, 5))


# -- BVH ---------------------------------------------------------------------------------


def bvh_text(motion: WorldMotion, fps: float, *, scale: float = 1.0, names=SMPL24_NAMES,
             parents=SMPL24_PARENTS) -> str:
    """The BVH file of ``motion``: hierarchy with rest offsets (``scale`` x metres), root
    position channels holding the pelvis position, and ``Zrotation Xrotation Yrotation``
    channels (intrinsic, R = Rz Rx Ry) on every joint, in degrees. The root's OFFSET is zero,
    so readers that add OFFSET to the position channels and readers that do not agree."""
    header = bvh_header(motion.rest_joints, len(motion.local_rotations), fps, scale=scale, names=names,
                        parents=parents)
    return header + bvh_frames(motion, scale=scale, parents=parents)[0]


def bvh_header(rest_joints: np.ndarray, frames: int, fps: float, *, scale: float = 1.0, names=SMPL24_NAMES,
               parents=SMPL24_PARENTS) -> str:
    """The BVH file up to its first frame line: the hierarchy with the offsets of
    ``rest_joints`` (24, 3), then ``MOTION``, the frame count and the frame time."""
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    offsets = rest_joints - rest_joints[[max(p, 0) for p in parents]]
    offsets[0] = 0.0
    children = _children(parents)
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
    return "\n".join(lines) + f"\nMOTION\nFrames: {frames}\nFrame Time: {1.0 / fps:.8f}\n"


def bvh_frames(motion: WorldMotion, *, scale: float = 1.0, parents=SMPL24_PARENTS,
               previous: np.ndarray | None = None) -> tuple[str, np.ndarray | None]:
    """The frame lines of ``motion`` and the last frame's Euler angles. ``previous``, the
    angles that :func:`bvh_frames` returned for the frames just before (a long track is
    written piece by piece), keeps the curves continuous across the pieces."""
    T = len(motion.local_rotations)
    if T == 0:
        return "", previous
    euler = continuous_euler(motion.local_rotations[:, bvh_joint_order(parents)], previous=previous)  # (T, J, 3)
    values = np.concatenate([motion.root_positions * scale, euler.reshape(T, -1)], axis=1)
    buf = io.StringIO()
    np.savetxt(buf, values, fmt="%.6f")
    return buf.getvalue(), euler[-1]


def continuous_euler(R: np.ndarray, order: str = BVH_ORDER, previous: np.ndarray | None = None) -> np.ndarray:
    """Intrinsic Euler angles (degrees) of rotation matrices ``R`` (T, J, 3, 3), each frame's
    triple chosen among the equivalent ones (the other Tait-Bryan solution, multiples of
    360) to be nearest the previous frame's, so animation curves do not jump by 360.
    ``previous`` (J, 3) is the frame before the first one, when there is one."""
    T, J = R.shape[:2]
    if T == 0:
        return np.zeros((0, J, 3))
    a = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler(order, degrees=True).reshape(T, J, 3)
    # Second solution of a Tait-Bryan triple: (a + 180, 180 - b, c + 180).
    b = np.stack([a[..., 0] + 180.0, 180.0 - a[..., 1], a[..., 2] + 180.0], axis=-1)
    out = np.empty_like(a)
    if previous is None:
        out[0] = a[0]
    for t in range(0 if previous is not None else 1, T):
        prev = out[t - 1] if t else previous
        best = None
        for cand in (a[t], b[t]):
            cand = cand + 360.0 * np.round((prev - cand) / 360.0)
            cost = np.abs(cand - prev).sum(axis=-1)
            best = (cand, cost) if best is None else (np.where((cost < best[1])[:, None], cand, best[0]),
                                                     np.minimum(cost, best[1]))
        out[t] = best[0]
    return out


def _children(parents) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    return children


def _depth_first(children: dict[int, list[int]]) -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


def bvh_joint_order(parents=SMPL24_PARENTS) -> list[int]:
    """SMPL joint indices in the order their channels appear in a BVH frame line."""
    return _depth_first(_children(parents))


# -- .smpl (Meshcapade) -----------------------------------------------------------------------


def smpl_bytes(motion: WorldMotion, fps: float, *, include_betas: bool) -> bytes:
    """The ``.smpl`` file (smplcodec: SMPL version, neutral gender) of ``motion``: world
    axis-angle ``body_pose`` (T, 24, 3) and ``body_translation`` (T, 3) in the Y-up world.
    ``include_betas`` writes the mean shape; leave it off when the betas belong to another
    body model than Meshcapade's SMPL (they would mean a different shape there)."""
    return smpl_file_bytes(axis_angles(motion), motion.trans, motion.betas, fps, include_betas=include_betas)


def axis_angles(motion: WorldMotion) -> np.ndarray:
    """``motion``'s local rotations as axis-angle (T, 24, 3) float32: the ``.smpl`` body pose."""
    T = len(motion.local_rotations)
    pose = matrix_to_axis_angle(torch.from_numpy(motion.local_rotations)).numpy()
    return pose.reshape(T, 24, 3).astype(np.float32)


def smpl_file_bytes(body_pose: np.ndarray, trans: np.ndarray, betas: np.ndarray, fps: float, *,
                    include_betas: bool) -> bytes:
    """The ``.smpl`` file of a world ``body_pose`` (T, 24, 3) axis-angle and ``trans`` (T, 3)
    (see :func:`smpl_bytes`)."""
    try:
        from smplcodec import SMPLCodec, SMPLGender, SMPLVersion
    except ImportError:
        raise ConfigError("writing .smpl files needs the smplcodec package: pip install 'smplstream[smpl]'") from None
    T = len(body_pose)
    codec = SMPLCodec(smpl_version=SMPLVersion.SMPL, gender=SMPLGender.NEUTRAL,
                      shape_parameters=np.asarray(betas, np.float32) if include_betas else None,
                      frame_count=int(T), frame_rate=float(fps),
                      body_translation=np.asarray(trans, np.float32),
                      body_pose=np.asarray(body_pose, np.float32).reshape(T, 24, 3))
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
    if "smpl" in names and importlib.util.find_spec("smplcodec") is None:
        raise ConfigError("--formats smpl needs the smplcodec package: pip install 'smplstream[smpl]'")
    return names


def write_world_formats(rows, stem: Path, formats, body, *, include_betas: bool) -> list[Path]:
    """Write ``stem.bvh``, ``stem.smpl`` and ``stem.glb`` (as ``formats`` asks) of a track's SMPL frames,
    reading them piece by piece: ``rows.blocks()`` yields (poses (n, 72), trans (n, 3)) in
    order, ``rows.frames`` counts them, ``rows.betas`` is the track's mean shape and
    ``rows.fps`` its rate. Memory holds one piece at a time, plus the ``.smpl`` arrays (its
    writer takes them whole: 300 bytes a frame). The files equal those of
    :func:`world_motion` on the whole track. Returns the files written."""
    written = []
    # Pass 1: the floor is a percentile over the whole track, needed before any frame.
    lows = [lowest_feet(world_motion(p, t, rows.betas, body, floor=False).joints) for p, t in rows.blocks()]
    shift = floor_shift(np.concatenate(lows)) if lows else 0.0
    smpl_parts: list[tuple[np.ndarray, np.ndarray]] | None = [] if "smpl" in formats else None

    def convert(out=None) -> None:
        previous = None
        for poses, trans in rows.blocks():
            motion = world_motion(poses, trans, rows.betas, body, shift=shift)
            if out is not None:
                text, previous = bvh_frames(motion, previous=previous)
                out.write(text.encode("ascii"))
            if smpl_parts is not None:
                smpl_parts.append((axis_angles(motion), motion.trans.astype(np.float32)))

    if "bvh" in formats:
        with torch.no_grad():
            b = torch.as_tensor(np.asarray(rows.betas, np.float64)[None], dtype=body.J_template.dtype)
            rest = body.rest_joints(b)[0].double().numpy()
        header = bvh_header(rest, rows.frames, rows.fps).encode("ascii")
        write_file_atomic(stem.with_suffix(".bvh"), lambda f: (f.write(header), convert(f)))
        written.append(stem.with_suffix(".bvh"))
    elif smpl_parts is not None:
        convert()
    if smpl_parts is not None:
        pose = np.concatenate([p for p, _ in smpl_parts]) if smpl_parts else np.zeros((0, 24, 3), np.float32)
        trans = np.concatenate([t for _, t in smpl_parts]) if smpl_parts else np.zeros((0, 3), np.float32)
        data = smpl_file_bytes(pose, trans, np.asarray(rows.betas, np.float64), rows.fps, include_betas=include_betas)
        write_bytes_atomic(stem.with_suffix(".smpl"), data)
        written.append(stem.with_suffix(".smpl"))
    if "glb" in formats:  # its own pass: it also reads the frames' own shapes and indices
        from .motion_glb import write_glb

        written.append(write_glb(rows, stem.with_suffix(".glb"), body, shift=shift))
    return written


def world_formats_writer(formats, body_model: str, body_loader):
    """What the recorder and ``recover`` call per track to write its BVH, ``.smpl`` and GLB
    files (``writer(rows, stem) -> paths``), or None when ``formats`` asks for none.
    ``body_loader()`` gives the body model, loaded only when a track needs it."""
    wanted = tuple(f for f in formats if f in WORLD_FORMATS)
    if not wanted:
        return None

    def write(rows, stem: Path) -> list[Path]:
        # Meshcapade's SMPL would read anny-smpl betas as another body: leave them out.
        return write_world_formats(rows, stem, wanted, body_loader(), include_betas=body_model != "anny-smpl")

    return write


class MultiFormatRecorder(MotionRecorder):
    """A :class:`~streamer.motion_files.MotionRecorder` that writes each track's SMPL motion
    in ``formats`` (``npz``, ``bvh``, ``smpl``, ``glb``); the keypoint ``.npz`` is always written.
    Like the ``.npz``, every file is assembled from the recording's chunks when its track
    ends and when the run stops, and written atomically."""

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

    def _world_writer(self):
        return world_formats_writer(self.formats, self.body_model, lambda: self.body)

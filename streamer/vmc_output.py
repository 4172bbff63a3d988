"""``--vmc HOST:PORT``: one person's body streamed live over the VMC protocol (OSC over
UDP, the ``python-osc`` package, optional extra ``avatar``) to an avatar app such as
VSeeFace, Warudo, VMagicMirror or a Unity scene with EVMC4U / VMC4UE (docs/animation.md).

Each frame is one OSC bundle: ``/VMC/Ext/Root/Pos``, one ``/VMC/Ext/Bone/Pos`` per Unity
humanoid bone mapped from SMPL's joints, ``/VMC/Ext/OK`` and ``/VMC/Ext/T``.

Conventions (:func:`retarget`):

- Unity's frame: left-handed, Y up, metres. A point in the camera frame (OpenCV: x right,
  y down, z forward) is at ``(-x, -y, -z)``: the Y-up world of the motion files (a half turn
  about the camera's x axis, :data:`streamer.motion_formats.CAMERA_TO_WORLD`) then x
  negated for the left-handed frame. The camera is at the origin, the person at negative z
  facing +z (towards the camera); the body's left side is at Unity's -x.
- Rotations are quaternions ``(x, y, z, w)``, the same reflection applied: a rotation
  matrix ``R`` becomes ``M R M`` with ``M = diag(-1, 1, 1)``, i.e. ``(x, -y, -z, w)``.
- Retargeting: SMPL's rest pose (all-zero pose) is taken as the humanoid's T-pose, where
  every normalised humanoid bone (as VRM models have) has the identity local rotation. A
  bone's local rotation is then its SMPL joint's local rotation, reflected. The two
  hierarchies match joint for joint (SMPL's collars hang from spine3 as Unity's shoulders
  from UpperChest), so no rotation needs re-parenting. Hips carries the body's global
  orientation in the Y-up world; the root transform has the identity rotation.
- Positions: the root is at the pelvis joint (camera frame converted as above); Hips is at
  the root; every other bone's position is its offset from its parent in the parent's
  rest frame (from the frame's posed joints: exact for the body's own shape).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS

from .errors import ConfigError
from .frames import Frame, Person
from .skeleton_frames import parent_frame_offsets

log = logging.getLogger("smplstream.vmc")

DEFAULT_PORT = 39539  # the VMC protocol's usual receiver port
DEFAULT_HOST = "127.0.0.1"

#: Unity humanoid bone of each SMPL joint, in SMPL order (joints 0..21; SMPL's
#: left_hand / right_hand, 22 and 23, are finger roots that Unity's Hand already ends).
BONE_OF_JOINT: dict[str, str] = {
    "pelvis": "Hips",
    "left_hip": "LeftUpperLeg",
    "right_hip": "RightUpperLeg",
    "spine1": "Spine",
    "left_knee": "LeftLowerLeg",
    "right_knee": "RightLowerLeg",
    "spine2": "Chest",
    "left_ankle": "LeftFoot",
    "right_ankle": "RightFoot",
    "spine3": "UpperChest",
    "left_foot": "LeftToes",
    "right_foot": "RightToes",
    "neck": "Neck",
    "left_collar": "LeftShoulder",
    "right_collar": "RightShoulder",
    "head": "Head",
    "left_shoulder": "LeftUpperArm",
    "right_shoulder": "RightUpperArm",
    "left_elbow": "LeftLowerArm",
    "right_elbow": "RightLowerArm",
    "left_wrist": "LeftHand",
    "right_wrist": "RightHand",
}
N_BONES = len(BONE_OF_JOINT)  # 22: SMPL joints 0..21, also the body joints of SMPL+H / SMPL-X
BONE_NAMES: tuple[str, ...] = tuple(BONE_OF_JOINT[name] for name in SMPL24_NAMES[:N_BONES])
_PARENTS = SMPL24_PARENTS[:N_BONES]
# The camera frame -> Unity for points: Y-up world (x, -y, -z), then x negated.
_CAM_TO_UNITY = np.array([-1.0, -1.0, -1.0])
# Half turn about x: the camera frame's body orientation -> the Y-up world's.
_HALF_TURN_X = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])


@dataclass
class BonePose:
    """One person's VMC pose: ``rotations`` (22, 4) local quaternions ``(x, y, z, w)`` and
    ``positions`` (22, 3) local positions (metres) of :data:`BONE_NAMES`, and the root's
    ``root_position`` (3,), all in Unity's frame."""

    rotations: np.ndarray
    positions: np.ndarray
    root_position: np.ndarray


def reflect_quaternion(q: np.ndarray) -> np.ndarray:
    """The rotation ``M R M`` for the reflection ``M = diag(-1, 1, 1)`` (x negated):
    right-handed Y-up -> Unity's left-handed frame, and the left-right mirror of a pose."""
    return np.asarray(q, np.float64) * np.array([1.0, -1.0, -1.0, 1.0])


def retarget(poses: np.ndarray, joints: np.ndarray | None = None) -> BonePose:
    """One person's SMPL parameters in the camera frame -> the VMC bones (see the module's
    conventions). ``poses``: axis-angle, SMPL order, at least 22 joints (66 values; SMPL+H
    and SMPL-X share the first 22); ``joints`` (>= 22, 3): posed joint positions in the
    camera frame, metres (None: zero positions). Pure: no state, no I/O."""
    poses = np.asarray(poses, np.float64).reshape(-1, 3)[:N_BONES]
    local = Rotation.from_rotvec(poses)
    turned = (_HALF_TURN_X * local[0]).as_quat()  # the global orientation, Y-up world
    rotations = reflect_quaternion(np.concatenate([turned[None], local[1:].as_quat()]))
    rotations *= np.where(rotations[:, 3:] < 0, -1.0, 1.0)  # q and -q are one rotation: w >= 0
    positions = np.zeros((N_BONES, 3))
    root = np.zeros(3)
    if joints is not None:
        joints = np.asarray(joints, np.float64).reshape(-1, 3)[:N_BONES]
        root = joints[0] * _CAM_TO_UNITY
        # The rest bones in their parents' frames, from the camera-frame chain.
        positions = parent_frame_offsets(joints, local.as_matrix(), _PARENTS)
        positions[:, 0] *= -1.0  # the body frame is Y-up already; only the reflection is left
    return BonePose(rotations=rotations, positions=positions, root_position=root)


# -- options -----------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (loopback) -> (host, port); raises ConfigError."""
    host, sep, port = str(text).strip().rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"--vmc {text}: give HOST:PORT, :PORT or PORT, e.g. {DEFAULT_HOST}:{DEFAULT_PORT}")
    return host, int(port)


def parse_track(text: str | int) -> str | int:
    """``--vmc-track``: ``largest``, ``first`` or a track id (int); raises ConfigError."""
    text = str(text).strip()
    if text in ("largest", "first"):
        return text
    if text.isdigit():
        return int(text)
    raise ConfigError(f"--vmc-track {text}: choose largest, first or a track id (a whole number)")


def _import_osc():
    try:
        from pythonosc import osc_bundle_builder, osc_message_builder, udp_client
    except ImportError:
        raise ConfigError("--vmc needs the python-osc package: pip install 'smplstream[avatar]'") from None
    return osc_bundle_builder, osc_message_builder, udp_client


def check_vmc_options(address: str | None, track: str | int = "largest") -> None:
    """Fail early (before the models load) on a bad ``--vmc`` / ``--vmc-track`` or a missing
    python-osc. Raises ConfigError."""
    if address is None:
        if str(track) != "largest":
            raise ConfigError("--vmc-track needs --vmc HOST:PORT")
        return
    parse_address(address)
    parse_track(track)
    _import_osc()


# -- the output --------------------------------------------------------------------------


class TrackChooser:
    """Picks the person to send: ``largest`` (tallest box this frame), ``first`` (the one
    followed since it appeared, then the oldest id still present) or a track id."""

    def __init__(self, choice: str | int = "largest"):
        self.choice = choice
        self._followed: int | None = None

    def choose(self, persons: list[Person]) -> Person | None:
        usable = [p for p in persons if "poses" in p.arrays]
        if not usable:
            return None
        if isinstance(self.choice, int):
            return next((p for p in usable if p.track_id == self.choice), None)
        if self.choice == "first":
            chosen = next((p for p in usable if p.track_id == self._followed), None)
            if chosen is None:
                chosen = min(usable, key=lambda p: p.track_id)
                self._followed = chosen.track_id
            return chosen
        return max(usable, key=_box_height)


def _box_height(person: Person) -> float:
    box = person.arrays.get("box_xyxy")
    if box is not None:
        return float(box[3] - box[1])
    joints = person.arrays.get("joints")  # no box: the body's own height
    return 0.0 if joints is None else float(np.ptp(np.asarray(joints)[:, 1]))


class VmcSender:
    """Sends each frame's chosen person to a VMC receiver at ``address`` (``HOST:PORT``,
    ``:PORT`` or ``PORT``), one OSC bundle a frame. Raises ConfigError for a bad option, a
    missing package or an address it cannot send to."""

    def __init__(self, address: str = f"{DEFAULT_HOST}:{DEFAULT_PORT}", *, track: str | int = "largest"):
        self.host, self.port = parse_address(address)
        self.chooser = TrackChooser(parse_track(track))
        self._bundle, self._message, udp_client = _import_osc()
        try:
            self.client = udp_client.UDPClient(self.host, self.port)
        except OSError as exc:  # e.g. a host name that does not resolve
            raise ConfigError(f"--vmc {address}: cannot send there: {exc}") from None
        self.start = time.monotonic()
        self.frames = 0
        self.sent_bones = 0
        self._errors = 0
        log.info("VMC: sending to %s:%d (track: %s)", self.host, self.port, self.chooser.choice)

    def bundle(self, frame: Frame):
        """The OSC bundle of ``frame`` (built, not sent)."""
        builder = self._bundle.OscBundleBuilder(self._bundle.IMMEDIATELY)
        person = self.chooser.choose(frame.persons)
        if person is not None:
            pose = retarget(person.arrays["poses"], person.arrays.get("joints"))
            builder.add_content(self._build("/VMC/Ext/Root/Pos", "root", *pose.root_position, 0.0, 0.0, 0.0, 1.0))
            for name, position, rotation in zip(BONE_NAMES, pose.positions, pose.rotations):
                builder.add_content(self._build("/VMC/Ext/Bone/Pos", name, *position, *rotation))
        # loaded, calibration state (3: calibrated), calibration mode (0: normal), tracking (1: tracked)
        builder.add_content(self._build("/VMC/Ext/OK", 1, 3, 0, int(person is not None)))
        builder.add_content(self._build("/VMC/Ext/T", time.monotonic() - self.start))
        return builder.build(), person is not None

    def _build(self, address: str, *args):
        message = self._message.OscMessageBuilder(address=address)
        for arg in args:
            # Explicit OSC types: VMC wants float32 ('f') for numbers that are not counts.
            kind = "s" if isinstance(arg, str) else "i" if isinstance(arg, int) else "f"
            message.add_arg(float(arg) if kind == "f" else arg, kind)
        return message.build()

    def write(self, frame: Frame) -> None:
        """Build and send one frame's bundle (a send error is logged, not raised: a receiver
        that is not there must not stop the run)."""
        bundle, tracked = self.bundle(frame)
        self.frames += 1
        self.sent_bones += N_BONES if tracked else 0
        try:
            self.client.send(bundle)
        except OSError as exc:
            self._errors += 1
            if self._errors == 1:
                log.warning("VMC: sending to %s:%d: %s", self.host, self.port, exc)

    def close(self) -> None:
        """Close the socket."""
        try:
            # UDPClient.close is recent in python-osc; older ones only hold the socket
            close = getattr(self.client, "close", None) or self.client._sock.close
            close()
        except Exception as exc:  # closing must not hide the run's own outcome
            log.warning("VMC: closing the socket: %s", exc)
        log.info("VMC: sent %d frame(s) to %s:%d", self.frames, self.host, self.port)

"""ROS 2 messages of a frame, as plain dicts: one place for the MCAP writer
(:mod:`streamer.mcap_output`), the Foxglove server (:mod:`streamer.foxglove_output`) and the
rclpy bridge (``examples/ros2``). Nothing here needs ROS: the dicts have the field names of
the standard messages, :func:`definition` gives each type's definition in ROS 2's
concatenated ``.msg`` form (what MCAP's ``ros2msg`` schemas and Foxglove expect), and
:class:`CdrEncoder` turns a dict into CDR bytes with ``mcap-ros2-support``.

Frames (``docs/robots.md``): ``camera`` is the camera's optical frame (OpenCV axes: x right,
y down, z forward; metres). Per track N, ``person_N`` sits at the pelvis with the camera's
axes, ``person_N/pelvis`` adds the body's global orientation, and every other joint
``person_N/<SMPL joint name>`` hangs from its parent joint (translation in the parent joint's
frame, rotation the SMPL local rotation), so composing the chain gives each joint's
camera-frame position. A static ``camera_link -> camera`` transform (REP 103: x forward,
y left, z up) lets a viewer show the scene upright.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS

from .errors import ConfigError
from .skeleton_frames import parent_frame_offsets

CAMERA_FRAME = "camera"
CAMERA_LINK_FRAME = "camera_link"

TF_MESSAGE = "tf2_msgs/msg/TFMessage"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"

TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_SKELETON = "/smplstream/skeleton"
TOPIC_IMAGE = "/camera/image/compressed"
TOPIC_CAMERA_INFO = "/camera/camera_info"

#: Every topic and its message type.
TOPICS: dict[str, str] = {
    TOPIC_TF: TF_MESSAGE,
    TOPIC_TF_STATIC: TF_MESSAGE,
    TOPIC_SKELETON: MARKER_ARRAY,
    TOPIC_IMAGE: COMPRESSED_IMAGE,
    TOPIC_CAMERA_INFO: CAMERA_INFO,
}

#: Images are published at most this wide (CameraInfo describes the published size).
MAX_IMAGE_WIDTH = 1280
JPEG_QUALITY = 80

# Marker types and actions (visualization_msgs/Marker's constants).
LINE_LIST, SPHERE_LIST, TEXT_VIEW_FACING = 5, 7, 9
ADD, DELETE = 0, 2
MARKER_IDS = {"bones": 0, "joints": 1, "label": 2}
BONE_WIDTH = 0.03  # metres
JOINT_DIAMETER = 0.06
LABEL_HEIGHT = 0.12
LABEL_ABOVE_HEAD = 0.25  # metres above the head joint (camera y points down)

# -- message definitions ------------------------------------------------------------------
# Field lists of ROS 2 Humble's standard messages (common_interfaces, geometry2), with their
# constants and default values; comments left out. Keyed by the short name ``pkg/Type`` used
# in ``MSG:`` lines; a field's type without a package is in the message's own package.
_FIELDS: dict[str, str] = {
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "builtin_interfaces/Duration": "int32 sec\nuint32 nanosec",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "std_msgs/ColorRGBA": "float32 r\nfloat32 g\nfloat32 b\nfloat32 a",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
    "geometry_msgs/Pose": "Point position\nQuaternion orientation",
    "geometry_msgs/Transform": "Vector3 translation\nQuaternion rotation",
    "geometry_msgs/TransformStamped": "std_msgs/Header header\nstring child_frame_id\nTransform transform",
    "tf2_msgs/TFMessage": "geometry_msgs/TransformStamped[] transforms",
    "sensor_msgs/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data",
    "sensor_msgs/RegionOfInterest": "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify",
    "sensor_msgs/CameraInfo": (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\nfloat64[] d\n"
        "float64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\nuint32 binning_y\nRegionOfInterest roi"),
    "visualization_msgs/UVCoordinate": "float32 u\nfloat32 v",
    "visualization_msgs/MeshFile": "string filename\nuint8[] data",
    "visualization_msgs/Marker": (
        "int32 ARROW=0\nint32 CUBE=1\nint32 SPHERE=2\nint32 CYLINDER=3\nint32 LINE_STRIP=4\nint32 LINE_LIST=5\n"
        "int32 CUBE_LIST=6\nint32 SPHERE_LIST=7\nint32 POINTS=8\nint32 TEXT_VIEW_FACING=9\nint32 MESH_RESOURCE=10\n"
        "int32 TRIANGLE_LIST=11\nint32 ADD=0\nint32 MODIFY=0\nint32 DELETE=2\nint32 DELETEALL=3\n"
        "std_msgs/Header header\nstring ns\nint32 id\nint32 type\nint32 action\ngeometry_msgs/Pose pose\n"
        "geometry_msgs/Vector3 scale\nstd_msgs/ColorRGBA color\nbuiltin_interfaces/Duration lifetime\n"
        "bool frame_locked\ngeometry_msgs/Point[] points\nstd_msgs/ColorRGBA[] colors\nstring texture_resource\n"
        "sensor_msgs/CompressedImage texture\nUVCoordinate[] uv_coordinates\nstring text\nstring mesh_resource\n"
        "MeshFile mesh_file\nbool mesh_use_embedded_materials"),
    "visualization_msgs/MarkerArray": "Marker[] markers",
}
_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring"}


def short_name(type_name: str) -> str:
    """``tf2_msgs/msg/TFMessage`` -> ``tf2_msgs/TFMessage``."""
    package, *_, name = type_name.split("/")
    return f"{package}/{name}"


def _dependencies(short: str) -> list[str]:
    package = short.split("/")[0]
    out = []
    for line in _FIELDS[short].splitlines():
        field_type = re.sub(r"\[.*\]$", "", line.split()[0])
        if "=" in line.split()[-1] or field_type in _PRIMITIVES:
            continue
        out.append(field_type if "/" in field_type else f"{package}/{field_type}")
    return out


@lru_cache(maxsize=None)
def definition(type_name: str) -> str:
    """The message definition of ``type_name`` (``pkg/msg/Type``) with the definitions it
    depends on, each once, depth first, after a line of 80 ``=`` and ``MSG: pkg/Type`` (the
    form rosbag2 writes into MCAP schemas)."""
    main = short_name(type_name)
    if main not in _FIELDS:
        raise KeyError(f"no definition of {type_name}")
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in _dependencies(name):
            if dep not in order:
                order.append(dep)
                visit(dep)

    visit(main)
    parts = [_FIELDS[main]] + [f"{'=' * 80}\nMSG: {dep}\n{_FIELDS[dep]}" for dep in order]
    return "\n".join(parts) + "\n"


def require_ros2_support(option: str):
    """``mcap_ros2``'s dynamic CDR module, or a ConfigError saying how to install it."""
    try:
        from mcap_ros2 import _dynamic
    except ImportError:
        raise ConfigError(f"{option} needs the mcap and mcap-ros2-support packages: "
                          "pip install 'smplstream[robots]'") from None
    return _dynamic


class CdrEncoder:
    """Serialises message dicts to CDR bytes (ROS 2's wire encoding), with the encoder that
    ``mcap-ros2-support`` builds from :func:`definition` (the same one its MCAP writer uses).
    Fields left out of a dict take their default (zero, empty, the definition's default)."""

    def __init__(self, option: str = "--formats mcap"):
        dynamic = require_ros2_support(option)
        self._encoders = {name: dynamic.serialize_dynamic(name, definition(name))[name]
                          for name in set(TOPICS.values())}

    def encode(self, type_name: str, message: dict) -> bytes:
        """CDR bytes of ``message`` (a dict of ``type_name``'s fields)."""
        return self._encoders[type_name](message)


# -- time ---------------------------------------------------------------------------------


def ros_time(stamp_ns: int) -> dict:
    """``builtin_interfaces/Time`` of nanoseconds since the Unix epoch."""
    return {"sec": int(stamp_ns // 1_000_000_000), "nanosec": int(stamp_ns % 1_000_000_000)}


def stamp_ns(capture_time: float, clock_offset: float) -> int:
    """A frame's capture time (the monotonic clock, seconds) on the Unix epoch, in
    nanoseconds: ``clock_offset`` is ``time.time() - time.monotonic()`` taken once per run
    (or, in a subscriber, the publisher's ``publish_wall_time - publish_time``)."""
    return int(round((capture_time + clock_offset) * 1e9))


def _header(stamp: dict, frame_id: str) -> dict:
    return {"stamp": stamp, "frame_id": frame_id}


# -- TF -----------------------------------------------------------------------------------


def track_frame(track_id: int) -> str:
    """The root frame of a track: ``person_3``."""
    return f"person_{int(track_id)}"


def joint_frame(track_id: int, joint: int) -> str:
    """A joint's frame: ``person_3/left_knee``."""
    return f"{track_frame(track_id)}/{SMPL24_NAMES[joint]}"


def _transform(stamp: dict, parent: str, child: str, t, q) -> dict:
    return {"header": _header(stamp, parent), "child_frame_id": child,
            "transform": {"translation": {"x": t[0], "y": t[1], "z": t[2]},
                          "rotation": {"x": q[0], "y": q[1], "z": q[2], "w": q[3]}}}


def joint_transforms(joints: np.ndarray, poses: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The kinematic chain of one body: ``joints`` (24, 3) camera-frame positions and
    ``poses`` (72,) axis-angle local rotations (None: no rotations, every frame keeps the
    camera's axes). Returns (translations (25, 3), quaternions (25, 4) x y z w): row 0 is
    the track root in the camera frame (the pelvis position, no rotation), row 1 the pelvis
    in the root (the global orientation), row 1 + j joint j in its parent joint's frame.
    Composed, they give ``joints`` exactly (up to rounding)."""
    joints = np.asarray(joints, np.float64).reshape(24, 3)
    if poses is None:
        local = np.broadcast_to(np.eye(3), (24, 3, 3))
    else:
        local = Rotation.from_rotvec(np.asarray(poses, np.float64).reshape(24, 3)).as_matrix()
    trans = np.zeros((25, 3))
    trans[0] = joints[0]
    trans[2:] = parent_frame_offsets(joints, local, SMPL24_PARENTS)[1:]
    quats = np.zeros((25, 4))
    quats[0] = (0.0, 0.0, 0.0, 1.0)
    quats[1:] = Rotation.from_matrix(local).as_quat() if poses is not None else (0.0, 0.0, 0.0, 1.0)
    return trans, quats


def person_transforms(person, stamp: dict) -> list[dict]:
    """The 25 ``geometry_msgs/TransformStamped`` of one person (root and 24 joints), or none
    when the person has no ``joints``."""
    joints = person.arrays.get("joints")
    if joints is None:
        return []
    tid = int(person.track_id)
    trans, quats = joint_transforms(joints, person.arrays.get("poses"))
    trans, quats = trans.tolist(), quats.tolist()
    root = track_frame(tid)
    names = [joint_frame(tid, j) for j in range(24)]
    out = [_transform(stamp, CAMERA_FRAME, root, trans[0], quats[0]),
           _transform(stamp, root, names[0], trans[1], quats[1])]
    for j in range(1, 24):
        out.append(_transform(stamp, names[SMPL24_PARENTS[j]], names[j], trans[j + 1], quats[j + 1]))
    return out


def tf_message(persons: Iterable, stamp_ns_: int) -> dict:
    """``tf2_msgs/TFMessage`` with every person's transforms at ``stamp_ns_``."""
    stamp = ros_time(stamp_ns_)
    return {"transforms": [t for p in persons for t in person_transforms(p, stamp)]}


def static_tf_message(stamp_ns_: int) -> dict:
    """``tf2_msgs/TFMessage`` for ``/tf_static``: ``camera_link`` (x forward, y left, z up)
    -> ``camera`` (the optical frame: x right, y down, z forward)."""
    optical_in_link = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: x, y, z
    q = Rotation.from_matrix(optical_in_link).as_quat()
    q = (q if q[3] >= 0 else -q).tolist()  # (-0.5, 0.5, -0.5, 0.5), as REP 103 examples write it
    return {"transforms": [_transform(ros_time(stamp_ns_), CAMERA_LINK_FRAME, CAMERA_FRAME, (0.0, 0.0, 0.0), q)]}


# -- markers ------------------------------------------------------------------------------

_BONES = [(p, j) for j, p in enumerate(SMPL24_PARENTS) if p >= 0]
_HEAD = SMPL24_NAMES.index("head")
_IDENTITY_POSE = {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}


def track_rgba(track_id: int) -> dict:
    """The track's colour (the preview's and the viewer's) as ``std_msgs/ColorRGBA``."""
    from .preview import track_colour

    b, g, r = track_colour(int(track_id))
    return {"r": r / 255.0, "g": g / 255.0, "b": b / 255.0, "a": 1.0}


def _points(xyz: np.ndarray) -> list[dict]:
    return [{"x": x, "y": y, "z": z} for x, y, z in np.asarray(xyz, np.float64).tolist()]


def _marker(stamp: dict, tid: int, kind: str, **fields) -> dict:
    return {"header": _header(stamp, CAMERA_FRAME), "ns": track_frame(tid), "id": MARKER_IDS[kind], **fields}


def person_markers(person, stamp: dict) -> list[dict]:
    """One person's markers in the camera frame: bones (``LINE_LIST``), joints
    (``SPHERE_LIST``) and the track id above the head (``TEXT_VIEW_FACING``), in the track's
    colour, namespace ``person_N``; none without ``joints``."""
    joints = person.arrays.get("joints")
    if joints is None:
        return []
    tid = int(person.track_id)
    joints = np.asarray(joints, np.float64).reshape(24, 3)
    colour = track_rgba(tid)
    head = joints[_HEAD] + (0.0, -LABEL_ABOVE_HEAD, 0.0)
    label_pose = {"position": {"x": head[0], "y": head[1], "z": head[2]}, "orientation": _IDENTITY_POSE["orientation"]}
    return [
        _marker(stamp, tid, "bones", type=LINE_LIST, action=ADD, pose=_IDENTITY_POSE,
                scale={"x": BONE_WIDTH, "y": 0.0, "z": 0.0}, color=colour,
                points=_points(joints[np.asarray(_BONES).reshape(-1)])),
        _marker(stamp, tid, "joints", type=SPHERE_LIST, action=ADD, pose=_IDENTITY_POSE,
                scale={"x": JOINT_DIAMETER, "y": JOINT_DIAMETER, "z": JOINT_DIAMETER}, color=colour,
                points=_points(joints)),
        _marker(stamp, tid, "label", type=TEXT_VIEW_FACING, action=ADD, pose=label_pose,
                scale={"x": 0.0, "y": 0.0, "z": LABEL_HEIGHT}, color=colour, text=f"person {tid}"),
    ]


def delete_markers(track_id: int, stamp: dict) -> list[dict]:
    """``DELETE`` of a track's markers (it left the picture)."""
    return [_marker(stamp, int(track_id), kind, action=DELETE) for kind in MARKER_IDS]


def skeleton_markers(persons: Sequence, stamp_ns_: int, gone: Iterable[int] = ()) -> dict:
    """``visualization_msgs/MarkerArray`` of every person, and deletions for the tracks in
    ``gone``."""
    stamp = ros_time(stamp_ns_)
    markers = [m for p in persons for m in person_markers(p, stamp)]
    markers += [m for tid in sorted(gone) for m in delete_markers(tid, stamp)]
    return {"markers": markers}


class TrackSet:
    """Remembers which tracks had markers, to delete those that left."""

    def __init__(self):
        self.shown: set[int] = set()

    def update(self, persons: Sequence) -> set[int]:
        """The tracks shown before and missing from ``persons`` (those with joints)."""
        now = {int(p.track_id) for p in persons if p.arrays.get("joints") is not None}
        gone, self.shown = self.shown - now, now
        return gone


# -- camera -------------------------------------------------------------------------------


def image_size(width: int, height: int, max_width: int = MAX_IMAGE_WIDTH) -> tuple[int, int]:
    """The size images are published at: the source's, scaled down to ``max_width``."""
    if width <= max_width:
        return int(width), int(height)
    return int(max_width), max(1, int(round(height * max_width / width)))


def jpeg_bytes(image_rgb: np.ndarray, size: tuple[int, int], quality: int = JPEG_QUALITY) -> bytes:
    """The RGB frame resized to ``size`` (width, height) as JPEG."""
    if (image_rgb.shape[1], image_rgb.shape[0]) != tuple(size):
        # Bilinear down to half size: INTER_AREA at a ratio like 1768 -> 1280 costs 24 ms a
        # frame against 2 ms, for aliasing nobody sees at that ratio.
        shrink = size[0] / image_rgb.shape[1]
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_LINEAR if shrink > 0.5 else cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def compressed_image(jpeg: bytes, stamp_ns_: int) -> dict:
    """``sensor_msgs/CompressedImage`` (JPEG) in the camera frame."""
    return {"header": _header(ros_time(stamp_ns_), CAMERA_FRAME), "format": "jpeg", "data": jpeg}


def distortion(camera) -> tuple[str, list[float]]:
    """ROS's distortion model name and coefficients for a :class:`calibration.camera.Camera`:
    ``plumb_bob`` (k1 k2 p1 p2 k3) for up to 5 OpenCV coefficients, ``rational_polynomial``
    (k1 k2 p1 p2 k3 k4 k5 k6) for 8 or more (a 12-coefficient model's thin-prism terms have
    no ROS name and are left out), ``equidistant`` (k1..k4) for fisheye."""
    d = [float(v) for v in np.asarray(camera.dist, np.float64).reshape(-1)]
    if camera.model == "fisheye":
        return "equidistant", (d + [0.0] * 4)[:4]
    if len(d) <= 5:
        return "plumb_bob", (d + [0.0] * 5)[:5]
    return "rational_polynomial", (d + [0.0] * 8)[:8]


def camera_info(camera, size: tuple[int, int], stamp_ns_: int) -> dict:
    """``sensor_msgs/CameraInfo`` of ``camera`` at the published image ``size`` (width,
    height): K scaled to it, R the identity, P = [K | 0] (a single camera, images not
    rectified)."""
    cam = camera.scaled(*size) if (camera.width, camera.height) != tuple(size) else camera
    model, d = distortion(cam)
    K = np.asarray(cam.K, np.float64)
    P = np.hstack([K, np.zeros((3, 1))])
    return {"header": _header(ros_time(stamp_ns_), CAMERA_FRAME), "height": int(size[1]), "width": int(size[0]),
            "distortion_model": model, "d": d, "k": K.reshape(-1).tolist(), "r": np.eye(3).reshape(-1).tolist(),
            "p": P.reshape(-1).tolist(), "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


def frame_messages(persons: Sequence, stamp_ns_: int, tracks: TrackSet) -> list[tuple[str, dict]]:
    """The per-frame (topic, message) pairs of the people: ``/tf`` (when anyone has joints)
    and ``/smplstream/skeleton`` (when anyone is shown or has left)."""
    out: list[tuple[str, Any]] = []
    tf = tf_message(persons, stamp_ns_)
    if tf["transforms"]:
        out.append((TOPIC_TF, tf))
    gone = tracks.update(persons)
    markers = skeleton_markers(persons, stamp_ns_, gone)
    if markers["markers"]:
        out.append((TOPIC_SKELETON, markers))
    return out


# -- from the ZeroMQ stream (the rclpy bridge, examples/ros2) -----------------------------


def wire_camera(header_camera: dict):
    """The :class:`calibration.camera.Camera` of a wire header's ``camera`` entry."""
    from calibration.camera import Camera

    return Camera(header_camera["model"], header_camera["image_width"], header_camera["image_height"],
                  header_camera["camera_matrix"], header_camera["dist_coeffs"])


def wire_stamp_ns(header: dict) -> int:
    """A received frame's capture time on the publisher's Unix epoch clock, in nanoseconds
    (the header's ``capture_time`` and ``publish_time`` are the publisher's monotonic clock,
    ``publish_wall_time`` its wall clock at the same moment)."""
    return stamp_ns(header["capture_time"], header["publish_wall_time"] - header["publish_time"])


def wire_messages(frame, tracks: TrackSet, *, camera_info_due: bool = False) -> list[tuple[str, dict]]:
    """The (topic, message) pairs of a frame received from the ZeroMQ stream (a
    :class:`streamer.wire.DecodedFrame`): ``/tf`` and ``/smplstream/skeleton`` as in the
    MCAP file, and with ``camera_info_due`` ``/camera/camera_info`` at the camera's own
    resolution (the stream carries no image)."""
    stamp = wire_stamp_ns(frame.header)
    out = frame_messages(frame.persons, stamp, tracks)
    camera = frame.header.get("camera")
    if camera_info_due and camera:
        cam = wire_camera(camera)
        out.append((TOPIC_CAMERA_INFO, camera_info(cam, (cam.width, cam.height), stamp)))
    return out

"""ROS 2 outputs (docs/robots.md): the message building shared by the MCAP file, the Foxglove
server and the rclpy bridge; the bundled clip written to MCAP and read back with mcap's
reader and the ROS 2 decoder; a live Foxglove server read by a WebSocket client."""

from __future__ import annotations

import json
import shutil
import struct
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES
from streamer import ros2_messages as rm
from streamer.cli import main
from streamer.frames import Frame, Person

pytest.importorskip("mcap_ros2")  # the robots extra (also in dev)
from mcap.exceptions import EndOfFile  # noqa: E402
from mcap.reader import NonSeekingReader, make_reader  # noqa: E402
from mcap.records import Schema  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

CLIP = str(Path(__file__).parent / "data" / "sports2d_demo.mp4")
FRAMES = 30  # the walker is fitted from frame 5 on: 25 frames with a body

# -- the standard definitions --------------------------------------------------------------

# Field lists of ROS 2 Humble (common_interfaces, geometry2), written out independently of
# streamer.ros2_messages: type and name of each field, constants left out.
STANDARD_FIELDS = {
    "tf2_msgs/TFMessage": "geometry_msgs/TransformStamped[] transforms",
    "geometry_msgs/TransformStamped": "std_msgs/Header header, string child_frame_id, Transform transform",
    "geometry_msgs/Transform": "Vector3 translation, Quaternion rotation",
    "geometry_msgs/Quaternion": "float64 x, float64 y, float64 z, float64 w",
    "std_msgs/Header": "builtin_interfaces/Time stamp, string frame_id",
    "builtin_interfaces/Time": "int32 sec, uint32 nanosec",
    "visualization_msgs/MarkerArray": "Marker[] markers",
    "visualization_msgs/Marker": (
        "std_msgs/Header header, string ns, int32 id, int32 type, int32 action, geometry_msgs/Pose pose, "
        "geometry_msgs/Vector3 scale, std_msgs/ColorRGBA color, builtin_interfaces/Duration lifetime, "
        "bool frame_locked, geometry_msgs/Point[] points, std_msgs/ColorRGBA[] colors, string texture_resource, "
        "sensor_msgs/CompressedImage texture, UVCoordinate[] uv_coordinates, string text, string mesh_resource, "
        "MeshFile mesh_file, bool mesh_use_embedded_materials"),
    "visualization_msgs/UVCoordinate": "float32 u, float32 v",
    "visualization_msgs/MeshFile": "string filename, uint8[] data",
    "sensor_msgs/CompressedImage": "std_msgs/Header header, string format, uint8[] data",
    "sensor_msgs/CameraInfo": (
        "std_msgs/Header header, uint32 height, uint32 width, string distortion_model, float64[] d, float64[9] k, "
        "float64[9] r, float64[12] p, uint32 binning_x, uint32 binning_y, RegionOfInterest roi"),
    "sensor_msgs/RegionOfInterest": "uint32 x_offset, uint32 y_offset, uint32 height, uint32 width, bool do_rectify",
}


def _blocks(text: str) -> dict[str, list[str]]:
    """``MSG:`` name -> its field lines (type and name; constants dropped)."""
    out, name = {}, None
    for chunk in text.split("=" * 80 + "\n"):
        lines = chunk.strip().splitlines()
        if lines and lines[0].startswith("MSG: "):
            name, lines = lines[0][5:], lines[1:]
        out[name] = [" ".join(line.split()[:2]) for line in lines if "=" not in line]
    return out


@pytest.mark.parametrize("type_name", sorted(set(rm.TOPICS.values())))
def test_definitions_are_the_standard_ones(type_name):
    blocks = _blocks(rm.definition(type_name))
    main_fields = blocks.pop(None)
    assert ", ".join(main_fields) == STANDARD_FIELDS[rm.short_name(type_name)]
    for dep, fields in blocks.items():
        if dep in STANDARD_FIELDS:
            assert ", ".join(fields) == STANDARD_FIELDS[dep], dep
    assert type_name in ("tf2_msgs/msg/TFMessage", "visualization_msgs/msg/MarkerArray",
                         "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo")


def test_marker_definition_has_humbles_fields():
    blocks = _blocks(rm.definition(rm.MARKER_ARRAY))
    assert {"sensor_msgs/CompressedImage", "visualization_msgs/UVCoordinate", "visualization_msgs/MeshFile",
            "geometry_msgs/Pose", "std_msgs/ColorRGBA", "builtin_interfaces/Duration"} <= set(blocks)
    assert "int32 SPHERE_LIST=7" in rm.definition(rm.MARKER_ARRAY)


# -- TF chain ------------------------------------------------------------------------------


def _compose(transforms) -> dict[str, np.ndarray]:
    """Camera-frame position of every frame in decoded (or dict) transforms."""
    def get(obj, name):
        return obj[name] if isinstance(obj, dict) else getattr(obj, name)

    edges = {}
    for t in transforms:
        tr, q = get(get(t, "transform"), "translation"), get(get(t, "transform"), "rotation")
        edges[get(t, "child_frame_id")] = (get(get(t, "header"), "frame_id"),
                                           Rotation.from_quat([get(q, k) for k in "xyzw"]).as_matrix(),
                                           np.array([get(tr, k) for k in "xyz"]))
    cache = {rm.CAMERA_FRAME: (np.eye(3), np.zeros(3))}

    def pose(frame):
        if frame not in cache:
            parent, R, t = edges[frame]
            Rp, tp = pose(parent)
            cache[frame] = (Rp @ R, Rp @ t + tp)
        return cache[frame]

    return {f: pose(f)[1] for f in edges}


def test_joint_frames_compose_to_the_joints():
    rng = np.random.default_rng(1)
    poses = rng.normal(0, 0.4, 72)
    joints = rng.normal(0, 0.3, (24, 3)) + (0, 0, 3)
    for p in (poses, None):
        msg = rm.tf_message([Person(7, 1.0, {"joints": joints.astype(np.float32)} | ({} if p is None else {"poses": p}))],
                            1_000_000_123)
        assert len(msg["transforms"]) == 25
        assert msg["transforms"][0]["header"]["stamp"] == {"sec": 1, "nanosec": 123}
        positions = _compose(msg["transforms"])
        for j, name in enumerate(SMPL24_NAMES):
            np.testing.assert_allclose(positions[f"person_7/{name}"], joints[j].astype(np.float32), atol=1e-9)
        parents = {t["child_frame_id"]: t["header"]["frame_id"] for t in msg["transforms"]}
        assert parents["person_7"] == "camera" and parents["person_7/pelvis"] == "person_7"
        assert parents["person_7/left_knee"] == "person_7/left_hip"
    # The joint frames turn with the body: a joint's local rotation is its pose.
    q = Rotation.from_rotvec(poses.reshape(24, 3)[4]).as_quat()
    knee = next(t for t in rm.tf_message([Person(7, 1, {"joints": joints, "poses": poses})], 0)["transforms"]
                if t["child_frame_id"] == "person_7/left_knee")["transform"]["rotation"]
    assert np.allclose([knee[k] for k in "xyzw"], q) or np.allclose([knee[k] for k in "xyzw"], -q)


def test_markers_and_deletions():
    joints = np.zeros((24, 3), np.float32)
    tracks = rm.TrackSet()
    first = dict(rm.frame_messages([Person(1, 1, {"joints": joints}), Person(2, 1, {"joints": joints})], 5, tracks))
    kinds = [(m["ns"], m["type"]) for m in first[rm.TOPIC_SKELETON]["markers"]]
    assert kinds == [("person_1", rm.LINE_LIST), ("person_1", rm.SPHERE_LIST), ("person_1", rm.TEXT_VIEW_FACING),
                     ("person_2", rm.LINE_LIST), ("person_2", rm.SPHERE_LIST), ("person_2", rm.TEXT_VIEW_FACING)]
    assert len(first[rm.TOPIC_SKELETON]["markers"][0]["points"]) == 2 * 23
    assert first[rm.TOPIC_SKELETON]["markers"][2]["text"] == "person 1"
    second = dict(rm.frame_messages([Person(1, 1, {"joints": joints})], 6, tracks))
    deleted = [(m["ns"], m["id"]) for m in second[rm.TOPIC_SKELETON]["markers"] if m["action"] == rm.DELETE]
    assert deleted == [("person_2", 0), ("person_2", 1), ("person_2", 2)]
    assert rm.frame_messages([], 7, rm.TrackSet()) == []


def test_camera_info_follows_the_published_image():
    from calibration.camera import Camera

    cam = Camera("pinhole", 1920, 1080, [[1000, 0, 959.5], [0, 1000, 539.5], [0, 0, 1]], [0.1, -0.05, 0, 0])
    size = rm.image_size(1920, 1080)
    assert size == (1280, 720)
    info = rm.camera_info(cam, size, 0)
    assert (info["width"], info["height"], info["distortion_model"]) == (1280, 720, "plumb_bob")
    assert info["d"] == [0.1, -0.05, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(info["k"], [1000 * 2 / 3, 0, 639.5, 0, 1000 * 2 / 3, 359.5, 0, 0, 1])
    assert info["p"][3] == 0 and info["p"][:3] == info["k"][:3]
    fisheye = Camera("fisheye", 640, 480, [[300, 0, 319.5], [0, 300, 239.5], [0, 0, 1]], [0.01, 0.002, 0, 0])
    assert rm.camera_info(fisheye, (640, 480), 0)["distortion_model"] == "equidistant"


# -- the clip in MCAP ----------------------------------------------------------------------


def _read_mcap(path: Path):
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header, summary = reader.get_header(), reader.get_summary()
        messages = [(channel.topic, schema, message, decoded)
                    for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False)]
    return header, summary, messages


def _track_rows(transforms_by_frame, track_id):
    """Per frame that holds the track, its joints composed from the TF (24, 3)."""
    rows = []
    for transforms in transforms_by_frame:
        mine = [t for t in transforms if t.child_frame_id == f"person_{track_id}"
                or t.child_frame_id.startswith(f"person_{track_id}/")]
        if mine:
            positions = _compose(mine)
            rows.append([positions[f"person_{track_id}/{n}"] for n in SMPL24_NAMES])
    return np.array(rows)


def _check_tf_against_npz(transforms_by_frame, record_dir: Path) -> int:
    """Every frame's TF of every joint of every track equals the motion npz; returns the
    number of (track, frame) rows compared."""
    compared = 0
    for npz in sorted(record_dir.glob("track_[0-9][0-9][0-9][0-9].npz")):
        d = np.load(npz)
        tf_joints = _track_rows(transforms_by_frame, int(d["track_id"]))
        assert tf_joints.shape == d["joints"].shape, npz.name
        np.testing.assert_allclose(tf_joints, d["joints"], atol=1e-5, rtol=0)
        compared += len(tf_joints)
    return compared


def test_clip_to_mcap_matches_the_motion_npz(tmp_path):
    rec = tmp_path / "rec"
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--max-frames", str(FRAMES),
                 "--record", str(rec), "--formats", "npz,mcap", "--mcap-video"]) == 0
    [path] = rec.glob("*.mcap")
    header, summary, messages = _read_mcap(path)
    assert header.profile == "ros2"
    types = {c.topic: (summary.schemas[c.schema_id].name, summary.schemas[c.schema_id].encoding, c.message_encoding)
             for c in summary.channels.values()}
    assert types == {"/tf": ("tf2_msgs/msg/TFMessage", "ros2msg", "cdr"),
                     "/tf_static": ("tf2_msgs/msg/TFMessage", "ros2msg", "cdr"),
                     "/smplstream/skeleton": ("visualization_msgs/msg/MarkerArray", "ros2msg", "cdr"),
                     "/camera/image/compressed": ("sensor_msgs/msg/CompressedImage", "ros2msg", "cdr"),
                     "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", "ros2msg", "cdr")}
    for schema in summary.schemas.values():
        assert schema.data.decode() == rm.definition(schema.name)
    assert summary.statistics.message_count == len(messages)

    # Stamps: log time = header stamp = the frame's capture time, in order, on the epoch clock.
    log_times = [m.log_time for _, _, m, _ in messages]
    assert log_times == sorted(log_times)
    assert abs(log_times[-1] / 1e9 - time.time()) < 600
    for topic, _, m, decoded in messages:
        stamps = [t.header.stamp for t in decoded.transforms] if "TFMessage" in type(decoded).__name__ else \
            [x.header.stamp for x in decoded.markers] if topic == "/smplstream/skeleton" else [decoded.header.stamp]
        assert all(s.sec * 1_000_000_000 + s.nanosec == m.log_time for s in stamps), topic

    by_topic = {}
    for topic, _, _, decoded in messages:
        by_topic.setdefault(topic, []).append(decoded)
    assert len(by_topic["/camera/image/compressed"]) == FRAMES
    image = cv2.imdecode(np.frombuffer(bytes(by_topic["/camera/image/compressed"][0].data), np.uint8), cv2.IMREAD_COLOR)
    info = by_topic["/camera/camera_info"][0]
    assert image.shape == (info.height, info.width, 3) == (720, 1280, 3)
    assert info.distortion_model == "plumb_bob" and len(info.k) == 9 and info.k[0] > 0
    [static] = by_topic["/tf_static"]
    assert (static.transforms[0].header.frame_id, static.transforms[0].child_frame_id) == ("camera_link", "camera")

    compared = _check_tf_against_npz([m.transforms for m in by_topic["/tf"]], rec)
    assert compared >= 20
    markers = by_topic["/smplstream/skeleton"]
    shown = [m for m in markers if any(x.action == rm.ADD for x in m.markers)]
    assert len(shown) == len(by_topic["/tf"])  # the others delete a track that left
    bones = next(m for m in markers[-1].markers if m.type == rm.LINE_LIST)
    assert bones.header.frame_id == "camera" and len(bones.points) == 2 * 23 and bones.color.a == 1.0


def _frames(n: int, image: bool = False):
    rng = np.random.default_rng(0)
    for i in range(n):
        person = Person(1, 0.9, {"joints": rng.normal(0, 0.3, (24, 3)).astype(np.float32),
                                 "poses": rng.normal(0, 0.2, 72).astype(np.float32)})
        yield Frame(index=i, image=np.full((48, 64, 3), 90, np.uint8) if image else None,
                    capture_time=100.0 + i / 30, source_size=(64, 48), persons=[person])


def test_a_killed_run_keeps_every_flushed_chunk(tmp_path):
    from calibration.camera import assumed_camera
    from streamer.mcap_output import McapRecorder, recover_mcap

    recorder = McapRecorder(tmp_path, camera=assumed_camera(64, 48), clock_offset=0.0)
    for frame in _frames(10):
        recorder.write(frame)
    recorder.flush()  # what the recorder does every 2 s
    killed = tmp_path / "killed.mcap"
    shutil.copy(recorder.path, killed)  # the file as a kill -9 would leave it: no summary
    for frame in _frames(5):
        recorder.write(frame)
    recorder._writer.flush()
    cut = tmp_path / "cut.mcap"  # killed while writing a chunk
    cut.write_bytes(recorder.path.read_bytes()[:killed.stat().st_size + 700])
    recorder.close()
    _, summary, messages = _read_mcap(recorder.path)
    assert [t for t, *_ in messages].count("/tf") == 15 and summary.statistics.message_count == len(messages)
    assert messages[0][2].log_time == 100 * 1_000_000_000

    with open(killed, "rb") as f:  # a streaming reader gets every message up to the end of the data
        reader, topics = NonSeekingReader(f), []
        with pytest.raises(EndOfFile):
            for _, channel, _ in reader.iter_messages(log_time_order=False):
                topics.append(channel.topic)
    assert topics.count("/tf") == 10
    for path in (killed, cut):
        assert recover_mcap(path) == 10 * 2 + 2  # /tf and markers per frame, /tf_static and camera info once
        _, summary, messages = _read_mcap(path)
        assert [t for t, *_ in messages].count("/tf") == 10 and summary.statistics.message_count == 22
        assert not list(tmp_path.glob("*.recovering"))


@pytest.mark.parametrize("argv, message", [
    (["--mcap-video"], "--mcap-video needs --record DIR --formats"),
    (["--record", "REC", "--formats", "npz", "--mcap-video"], "--mcap-video needs"),
    (["--foxglove", "localhost"], "--foxglove localhost: give HOST:PORT"),
    (["--foxglove", "127.0.0.1:99999"], "give HOST:PORT"),
])
def test_robot_option_errors(tmp_path, capsys, argv, message):
    argv = [a.replace("REC", str(tmp_path / "rec")) for a in argv]
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                 *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_packages_say_which_extra(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_robots(name, *args, **kwargs):
        if name.split(".")[0] in ("mcap", "mcap_ros2", "foxglove"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_robots)
    for extra in (["--record", str(tmp_path / "rec"), "--formats", "mcap"], ["--foxglove"]):
        assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert "pip install 'smplstream[robots]'" in err and extra[-1].lstrip("-") in err
    assert not list(tmp_path.rglob("*.mcap"))


def test_foxglove_port_in_use_is_one_line(capsys):
    pytest.importorskip("foxglove")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                     "--foxglove", f"127.0.0.1:{port}"]) == 2
    assert f"--foxglove 127.0.0.1:{port}: cannot listen there" in capsys.readouterr().err


# -- Foxglove live -------------------------------------------------------------------------


class FoxgloveClient(threading.Thread):
    """A Foxglove WebSocket client (protocol ``foxglove.sdk.v1``): takes the advertised
    channels, subscribes to ``topics`` and decodes every message of them with the ROS 2
    decoder built from the advertised schema, until the server closes."""

    def __init__(self, port: int, topics: set[str]):
        super().__init__(daemon=True)
        self.port, self.topics = port, topics
        self.subscribed = threading.Event()
        self.channels: dict[int, dict] = {}
        self.received: list[tuple[str, int, object]] = []  # topic, log time, decoded message
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            with connect(f"ws://127.0.0.1:{self.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10,
                         max_size=None) as ws:
                decoders, subscriptions = {}, {}
                while not self.subscribed.is_set():
                    msg = json.loads(ws.recv(timeout=10))
                    if msg["op"] != "advertise":
                        continue
                    for ch in msg["channels"]:
                        self.channels[ch["id"]] = ch
                    wanted = [ch for ch in self.channels.values() if ch["topic"] in self.topics]
                    if len(wanted) == len(self.topics):
                        for sub_id, ch in enumerate(wanted):
                            subscriptions[sub_id] = ch["topic"]
                            schema = Schema(id=sub_id, name=ch["schemaName"], encoding=ch["schemaEncoding"],
                                            data=ch["schema"].encode())
                            decoders[sub_id] = DecoderFactory().decoder_for(ch["encoding"], schema)
                        ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                            {"id": sub_id, "channelId": ch["id"]} for sub_id, ch in enumerate(wanted)]}))
                        self.subscribed.set()
                while True:
                    try:
                        data = ws.recv(timeout=60)
                    except (ConnectionClosed, TimeoutError):
                        return
                    if isinstance(data, bytes) and data[0] == 0x01:  # message data
                        sub_id, log_time = struct.unpack_from("<IQ", data, 1)
                        self.received.append((subscriptions[sub_id], log_time, decoders[sub_id](data[13:])))
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.subscribed.set()


def test_foxglove_serves_the_clip_to_a_websocket_client(tmp_path):
    pytest.importorskip("foxglove")
    pytest.importorskip("websockets")
    from streamer.app import RunConfig, build_pipeline
    from streamer.foxglove_output import FoxgloveServer
    from streamer.outputs import OutputStage

    rec = tmp_path / "rec"
    pipeline, _, _ = build_pipeline(RunConfig(source=CLIP, publish=None, max_frames=FRAMES, record=str(rec),
                                              foxglove="127.0.0.1:0", progress=False))
    output = next(s for s in pipeline.stages if isinstance(s, OutputStage))
    server = next(o for o in output.outputs if isinstance(o, FoxgloveServer))
    assert server.port > 0
    client = FoxgloveClient(server.port, {"/tf", "/smplstream/skeleton", "/camera/camera_info"})
    client.start()
    subscribed = client.subscribed.wait(20)
    pipeline.run(handle_signals=False)  # the server stops when the run ends, which ends the client
    assert subscribed and client.error is None, client.error
    assert {ch["topic"] for ch in client.channels.values()} == set(rm.TOPICS)
    assert {ch["topic"]: ch["schemaName"] for ch in client.channels.values()}["/tf"] == "tf2_msgs/msg/TFMessage"
    client.join(30)
    assert client.error is None, client.error
    people = [(topic, t, m) for topic, t, m in client.received if topic in ("/tf", "/smplstream/skeleton")]
    assert len(people) >= 30
    transforms = [m.transforms for topic, _, m in people if topic == "/tf"]
    assert _check_tf_against_npz(transforms, rec) >= 15
    assert [t for _, t, _ in people] == sorted(t for _, t, _ in people)
    assert any(topic == "/camera/camera_info" for topic, _, _ in client.received)


# -- the rclpy bridge's side (examples/ros2), without ROS ----------------------------------

BRIDGE = Path(__file__).parents[1] / "examples" / "ros2" / "smplstream_bridge.py"


def test_bridge_messages_from_the_wire():
    from mcap_ros2._dynamic import generate_dynamic

    from calibration.camera import assumed_camera
    from streamer.app import camera_header
    from streamer.wire import decode_message, encode_frame

    frame = next(_frames(1))
    frame.persons.append(Person(4, 0.8, {"joints": frame.persons[0].arrays["joints"] + 1.0}))
    parts = encode_frame(frame, 0, publish_time=frame.capture_time + 0.05, wall_time=1_700_000_000.25,
                         extra={"camera": camera_header(assumed_camera(64, 48))})
    received = decode_message(parts)
    messages = dict(rm.wire_messages(received, rm.TrackSet(), camera_info_due=True))
    assert set(messages) == {"/tf", "/smplstream/skeleton", "/camera/camera_info"}
    encoder = rm.CdrEncoder()
    decoded = {topic: generate_dynamic(rm.TOPICS[topic], rm.definition(rm.TOPICS[topic]))[rm.TOPICS[topic]](
        encoder.encode(rm.TOPICS[topic], m)) for topic, m in messages.items()}
    stamp = decoded["/tf"].transforms[0].header.stamp
    assert stamp.sec * 10**9 + stamp.nanosec == 1_700_000_000_200_000_000  # capture = publish - 50 ms
    positions = _compose(decoded["/tf"].transforms)
    for person in frame.persons:
        for j, name in enumerate(SMPL24_NAMES):
            np.testing.assert_allclose(positions[f"person_{person.track_id}/{name}"], person.arrays["joints"][j],
                                       atol=1e-6)
    assert (decoded["/camera/camera_info"].width, decoded["/camera/camera_info"].height) == (64, 48)
    assert [m.ns for m in decoded["/smplstream/skeleton"].markers][::3] == ["person_1", "person_4"]


def test_bridge_uses_only_what_ros2_messages_has():
    import ast

    tree = ast.parse(BRIDGE.read_text())
    compile(tree, str(BRIDGE), "exec")
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rm"}
    assert used and all(hasattr(rm, name) for name in used), sorted(n for n in used if not hasattr(rm, n))


def test_ctrl_c_leaves_a_complete_mcap(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    record = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "run_stream.py", "-q", "run", "--source", CLIP, "--mode", "live",
                             "--no-perception", "--publish", "none", "--record", str(record), "--formats", "mcap",
                             "--mcap-video"], cwd=Path(__file__).parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(record.glob("*.mcap"))
        if files and files[0].stat().st_size > 1 << 20:  # the first chunks are on disk
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # a live run stopped by Ctrl-C ends normally
    [path] = record.glob("*.mcap")
    _, summary, messages = _read_mcap(path)  # the summary is there: the file was finished
    images = [m for t, _, m, _ in messages if t == "/camera/image/compressed"]
    assert 5 < len(images) < 230 and summary.statistics.message_count == len(messages)
    assert summary.statistics.channel_message_counts


def test_missing_packages_fail_before_the_models_load(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "foxglove" else real(name, *a))
    monkeypatch.setattr("streamer.app.processing_stages", lambda *a, **k: pytest.fail("models loaded"))
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--foxglove"]) == 2
    assert "--foxglove needs foxglove-sdk: pip install 'smplstream[robots]'" in capsys.readouterr().err


def test_recover_command_completes_a_killed_runs_mcap(tmp_path, capsys):
    """`smplstream recover DIR` also gives a killed run's MCAP its summary (files written to in
    the last seconds, which a live run may still be writing, are left alone)."""
    import os

    from calibration.camera import assumed_camera
    from streamer.mcap_output import McapRecorder, mcap_is_complete
    from streamer.motion_recovery import main as recover_main

    recorder = McapRecorder(tmp_path / "live", camera=assumed_camera(64, 48), clock_offset=0.0)
    for frame in _frames(10):
        recorder.write(frame)
    recorder.flush()
    killed = tmp_path / "rec" / "run.mcap"
    killed.parent.mkdir()
    shutil.copy(recorder.path, killed)  # as a kill -9 leaves it: no summary
    recorder.close()
    assert not mcap_is_complete(killed)
    assert recover_main([str(killed.parent)]) == 0 and not mcap_is_complete(killed)  # fresh: left alone
    old = killed.stat().st_mtime - 60
    os.utime(killed, (old, old))
    assert recover_main([str(killed.parent)]) == 0
    assert "run.mcap: 22 messages kept" in capsys.readouterr().out
    _, summary, messages = _read_mcap(killed)
    assert summary.statistics.message_count == 22 and [t for t, *_ in messages].count("/tf") == 10

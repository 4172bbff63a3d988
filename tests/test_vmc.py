"""--vmc: the SMPL -> Unity humanoid retargeting on its own (rest pose, an elbow bend,
handedness, bone positions) and the live OSC stream end to end on the real clip."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS, mirror_smpl_axis_angle
from streamer.cli import main
from streamer.errors import ConfigError
from scipy.spatial.transform import Rotation

from streamer.vmc_output import BONE_NAMES, N_BONES, check_vmc_options, parse_address, parse_track, reflect_quaternion, retarget


def quaternion_to_matrix(q) -> np.ndarray:
    return Rotation.from_quat(q).as_matrix()

CLIP = str(Path(__file__).parent / "data" / "sports2d_demo.mp4")
UPRIGHT = np.array([np.pi, 0.0, 0.0])  # SMPL's global orientation of a person standing before an OpenCV camera


def _same_rotation(a, b, atol=1e-9):
    """Quaternions equal up to sign (q and -q are one rotation)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.allclose(a, b, atol=atol) or np.allclose(a, -b, atol=atol)


def _pose(**joints) -> np.ndarray:
    pose = np.zeros((24, 3))
    pose[0] = UPRIGHT
    for name, rotvec in joints.items():
        pose[SMPL24_NAMES.index(name)] = rotvec
    return pose


def test_rest_pose_gives_identity_bones():
    bones = retarget(_pose().reshape(72))
    assert bones.rotations.shape == (N_BONES, 4)
    assert np.allclose(bones.rotations, [0, 0, 0, 1], atol=1e-12)
    # The 22 mapped bones, each once; SMPL's hand joints (22, 23) have no humanoid bone.
    assert len(set(BONE_NAMES)) == N_BONES == 22
    assert BONE_NAMES[:3] == ("Hips", "LeftUpperLeg", "RightUpperLeg")
    assert BONE_NAMES[18] == "LeftLowerArm"


def test_elbow_bend_gives_the_expected_lower_arm_rotation():
    # SMPL's left forearm lies along the body's +x; -90 degrees about y swings it to +z, forward.
    bones = retarget(_pose(left_elbow=[0.0, -np.pi / 2, 0.0]))
    q = bones.rotations[BONE_NAMES.index("LeftLowerArm")]
    s = np.sqrt(0.5)
    assert _same_rotation(q, [0.0, s, 0.0, s])
    # In Unity the avatar faces +z and its left arm points to -x; the bent forearm points forward.
    assert np.allclose(quaternion_to_matrix(q) @ [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)
    others = [i for i, name in enumerate(BONE_NAMES) if name != "LeftLowerArm"]
    assert np.allclose(bones.rotations[others], [0, 0, 0, 1], atol=1e-12)


def test_turned_body_turns_the_hips():
    # Facing the camera's +x (turned 90 degrees): the Hips turn about Unity's y axis.
    turn = np.array([0.0, np.pi / 2, 0.0])
    from scipy.spatial.transform import Rotation

    pose = _pose()
    pose[0] = (Rotation.from_rotvec(UPRIGHT) * Rotation.from_rotvec(turn)).as_rotvec()
    hips = retarget(pose).rotations[0]
    # Camera-frame body forward (+z of the body) ends at the camera's +x = Unity's -x.
    assert np.allclose(quaternion_to_matrix(hips) @ [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], atol=1e-9)


def test_mirrored_pose_gives_mirrored_bones_on_the_other_side():
    rng = np.random.default_rng(3)
    pose = rng.normal(scale=0.4, size=(24, 3))
    pose[0] += UPRIGHT
    mirrored = mirror_smpl_axis_angle(pose)
    a, b = retarget(pose).rotations, retarget(mirrored).rotations
    for i, name in enumerate(BONE_NAMES):
        other = name.replace("Left", "@").replace("Right", "Left").replace("@", "Right")
        assert _same_rotation(b[i], reflect_quaternion(a[BONE_NAMES.index(other)])), name


def _forward_kinematics(pose: np.ndarray, rest: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """SMPL's joint positions (camera frame) of ``pose`` on rest joints ``rest``."""
    local = Rotation.from_rotvec(pose).as_matrix()
    glob, joints = local.copy(), np.zeros_like(rest)
    joints[0] = rest[0] + trans
    for j in range(1, 24):
        p = SMPL24_PARENTS[j]
        glob[j] = glob[p] @ local[j]
        joints[j] = joints[p] + glob[p] @ (rest[j] - rest[p])
    return joints


def test_bone_positions_are_the_rest_offsets_in_unity_axes():
    rng = np.random.default_rng(5)
    rest = rng.normal(scale=0.2, size=(24, 3))
    pose = rng.normal(scale=0.5, size=(24, 3))
    trans = np.array([0.3, -0.2, 3.0])
    joints = _forward_kinematics(pose, rest, trans)
    bones = retarget(pose, joints)
    offsets = np.array([rest[j] - rest[SMPL24_PARENTS[j]] for j in range(1, N_BONES)])
    assert np.allclose(bones.positions[1:], offsets * [-1.0, 1.0, 1.0], atol=1e-9)
    assert np.allclose(bones.positions[0], 0.0)
    assert np.allclose(bones.root_position, joints[0] * [-1.0, -1.0, -1.0])


@pytest.mark.parametrize("text, expected", [
    ("39539", ("127.0.0.1", 39539)), (":39540", ("127.0.0.1", 39540)), ("10.0.0.2:39539", ("10.0.0.2", 39539)),
    ("[::1]:39539", ("::1", 39539)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host", "host:", "host:port", ":0", "70000"])
def test_bad_address(text):
    with pytest.raises(ConfigError, match="--vmc"):
        parse_address(text)


def test_parse_track():
    assert parse_track("largest") == "largest" and parse_track("first") == "first" and parse_track("7") == 7
    with pytest.raises(ConfigError, match="--vmc-track"):
        parse_track("tallest")


def test_missing_python_osc_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_osc(name, *args, **kwargs):
        if name.startswith("pythonosc"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_osc)
    with pytest.raises(ConfigError, match=r"pip install 'smplstream\[avatar\]'"):
        check_vmc_options("39539")


@pytest.mark.parametrize("argv, message", [
    (["--vmc", "host:port"], "--vmc host:port"),
    (["--vmc", "39539", "--vmc-track", "tallest"], "--vmc-track tallest"),
    (["--vmc-track", "first"], "--vmc-track needs --vmc"),
])
def test_vmc_option_errors(capsys, argv, message):
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                 *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


class _OscReceiver:
    """A VMC receiver on a free loopback UDP port: keeps every datagram, decoded as an OSC
    bundle by python-osc."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.bundles: list[list[tuple[str, list]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        from pythonosc.osc_bundle import OscBundle

        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            bundle = OscBundle(data)
            self.bundles.append([(m.address, list(m.params)) for m in bundle])

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_vmc_streams_every_frame_of_the_clip(tmp_path):
    pytest.importorskip("pythonosc")
    receiver = _OscReceiver()
    rec = tmp_path / "rec"
    try:
        assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--max-frames", "20", "--record", str(rec),
                     "--vmc", f":{receiver.port}"]) == 0
        deadline = time.monotonic() + 5
        while len(receiver.bundles) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        receiver.close()
    assert len(receiver.bundles) == 20
    tracks = [dict(np.load(path)) for path in sorted(rec.glob("track_*.npz")) if "_" not in path.stem[6:]]
    assert tracks
    tracked = 0
    previous_t = -1.0
    for index, bundle in enumerate(receiver.bundles):
        addresses = [address for address, _ in bundle]
        assert addresses[-2:] == ["/VMC/Ext/OK", "/VMC/Ext/T"]
        t = bundle[-1][1][0]
        assert t >= previous_t
        previous_t = t
        candidates = [(track, list(track["frame_index"]).index(index)) for track in tracks
                      if index in track["frame_index"]]
        if not candidates:  # nobody at that frame: only OK (not tracked) and T
            assert addresses == ["/VMC/Ext/OK", "/VMC/Ext/T"] and bundle[0][1][3] == 0
            continue
        tracked += 1
        assert bundle[-2][1] == [1, 3, 0, 1]
        assert addresses[0] == "/VMC/Ext/Root/Pos" and bundle[0][1][0] == "root"
        bones = {params[0]: np.array(params[1:], np.float64) for address, params in bundle
                 if address == "/VMC/Ext/Bone/Pos"}
        assert list(bones) == list(BONE_NAMES)  # every mapped bone, in order
        # The bundle is the retargeting of one of the people recorded at that frame (the tallest box).
        matches = []
        for track, row in candidates:
            expected = retarget(track["poses"][row], track["joints"][row])
            got_rot = np.array([bones[name][3:] for name in BONE_NAMES])
            got_pos = np.array([bones[name][:3] for name in BONE_NAMES])
            matches.append(np.allclose(got_rot, expected.rotations, atol=1e-4)
                           and np.allclose(got_pos, expected.positions, atol=1e-4)
                           and np.allclose(bundle[0][1][1:4], expected.root_position, atol=1e-4))
        assert any(matches), index
    assert tracked >= 10  # the clip's walker is found in 15 of its first 20 frames


def test_track_choice():
    from streamer.frames import Person
    from streamer.vmc_output import TrackChooser

    def person(track_id, top, bottom):
        return Person(track_id, 1.0, {"poses": np.zeros(72, np.float32),
                                      "box_xyxy": np.array([0, top, 10, bottom], np.float32)})

    small, tall = person(4, 100, 200), person(9, 50, 400)
    assert TrackChooser("largest").choose([small, tall]) is tall
    assert TrackChooser(4).choose([small, tall]) is small
    assert TrackChooser(5).choose([small, tall]) is None
    first = TrackChooser("first")
    assert first.choose([tall, small]) is small  # the oldest id
    newcomer = person(2, 0, 500)
    assert first.choose([tall, newcomer, small]) is small  # followed while present
    assert first.choose([tall, newcomer]) is newcomer  # then the oldest id left
    assert TrackChooser("largest").choose([Person(1, 1.0, {})]) is None  # no body: nothing to send

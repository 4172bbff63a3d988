"""``run --output-frame``: people moved into the head or world frame keep their body (the SMPL
parameters moved give the joints moved), the options are checked, and a real run of the
clip seen by a turning camera publishes the camera's pose per frame."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engines.body.body_model import BodyModel
from engines.camera_motion.rotations import angle_between_deg, yaw_pitch_roll
from streamer.errors import ConfigError
from streamer.frames import Frame, Person
from streamer.output_frame import apply_pose, check_output_frame, transform_arrays


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def _posed(body, poses, betas, trans):
    with torch.no_grad():
        out = body(torch.as_tensor(poses[None], dtype=torch.float32), torch.as_tensor(betas[None], dtype=torch.float32),
                   torch.as_tensor(trans[None], dtype=torch.float32))
    return out.joints[0].double().numpy()


def test_moved_parameters_give_the_moved_body(body):
    rng = np.random.default_rng(3)
    poses = (rng.normal(scale=0.3, size=72)).astype(np.float32)
    betas = rng.normal(scale=1.0, size=10).astype(np.float32)
    trans = np.array([0.3, -0.2, 3.5], np.float32)
    joints = _posed(body, poses, betas, trans).astype(np.float32)
    R, t = yaw_pitch_roll(25.0, -12.0, 4.0), np.array([0.1, -0.05, 0.2])
    moved = transform_arrays({"poses": poses, "betas": betas, "trans": trans, "joints": joints,
                              "keypoints_blazepose33": np.ones((33, 3), np.float32)}, R, t)
    expected = joints.astype(np.float64) @ R.T + t
    assert np.abs(moved["joints"] - expected).max() < 1e-5
    again = _posed(body, moved["poses"], betas, moved["trans"])
    assert np.abs(again - expected).max() < 1e-4  # the parameters describe the moved body
    assert moved["poses"].dtype == np.float32 and moved["trans"].dtype == np.float32
    assert np.array_equal(moved["poses"][3:], poses[3:])  # only the global orientation turns
    assert np.array_equal(moved["keypoints_blazepose33"], np.ones((33, 3)))  # pixels stay pixels


def test_apply_pose_attaches_the_camera(body):
    frame = Frame(0, None, 0.0, (10, 10), persons=[Person(1, 0.9, {"poses": np.zeros(72, np.float32),
                                                                   "trans": np.zeros(3, np.float32)})])
    R = yaw_pitch_roll(10.0, 0.0)
    apply_pose(frame, R, None, {"frame": "world"})
    arrays = frame.persons[0].arrays
    assert angle_between_deg(arrays["camera_rotation"].astype(np.float64), R) < 1e-4
    assert "camera_position" not in arrays  # unknown: left out, not zero
    assert frame.camera_pose == {"frame": "world"}


def test_options_that_do_not_fit_are_refused():
    check_output_frame("camera", None, None, None)
    with pytest.raises(ConfigError, match="needs --rig"):
        check_output_frame("head", None, None, None)
    with pytest.raises(ConfigError, match="add --output-frame world"):
        check_output_frame("camera", None, "imu.csv", None)
    with pytest.raises(ConfigError, match="between -90 and 90"):
        check_output_frame("world", None, None, 120.0)
    with pytest.raises(ConfigError, match="choose one of"):
        check_output_frame("map", None, None, None)


def _write_turning_clip(path, frames: int = 45):
    """The bundled clip seen by a camera turning by the known head motion, as a video file."""
    import cv2

    from engines.camera_motion.synthetic import (HeadMotion, RotationWarp, read_frames, source_camera,
                                                 virtual_pinhole)
    from test_camera_motion import CLIP

    images, fps = read_frames(str(CLIP), frames)
    target = virtual_pinhole()
    truth = HeadMotion(yaw_period=1.5, pitch_period=1.0).rotations(np.arange(frames) / fps)  # fast: +-30 deg in 0.4 s
    warp = RotationWarp(source_camera(images[0].shape[1], images[0].shape[0]), target)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, target.size)
    for image, R in zip(images, truth):
        writer.write(cv2.cvtColor(warp(image, R), cv2.COLOR_RGB2BGR))
    writer.release()
    return target, truth


def test_world_run_publishes_the_camera_pose(tmp_path, endpoint):
    """A real run (detector on, no lift) of a turning camera's video: every frame's header
    carries the camera's rotation, within a degree of the truth (the world frame is the
    first frame's, level by --camera-pitch 0, and the fixture's source camera is level)."""
    from calibration.camera_file import save_camera
    from streamer.app import RunConfig, run
    from streamer.subscriber import Subscriber

    target, truth = _write_turning_clip(tmp_path / "turning.mp4")
    save_camera(target, tmp_path / "cam.yaml")
    received = []

    def subscribe():
        with Subscriber(endpoint) as sub:
            while len(received) < len(truth):
                msg = sub.receive(timeout=60)
                if msg is None:
                    return
                received.append(msg.frame.header)

    t = threading.Thread(target=subscribe)
    t.start()
    run(RunConfig(source=str(tmp_path / "turning.mp4"), camera=str(tmp_path / "cam.yaml"), publish=endpoint,
                  wait_subscribers=1, progress=False, lift=False, output_frame="world", camera_pitch=0.0))
    t.join(60)
    assert len(received) == len(truth)
    poses = [h["camera_pose"] for h in received]
    assert all(p["frame"] == "world" and p["gravity"] == "--camera-pitch" and p["position"] is None for p in poses)
    R = np.array([p["rotation"] for p in poses])
    err = angle_between_deg(R, truth)
    assert angle_between_deg(truth, np.eye(3)).max() > 25  # it did turn
    assert err.max() < 1.0, err.max()


def test_camera_frame_run_has_no_camera_pose(clip, endpoint):
    from streamer.app import RunConfig, run
    from streamer.subscriber import Subscriber

    received = []

    def subscribe():
        with Subscriber(endpoint) as sub:
            msg = sub.receive(timeout=30)
            if msg is not None:
                received.append(msg.frame.header)

    t = threading.Thread(target=subscribe)
    t.start()
    run(RunConfig(source=str(clip), publish=endpoint, wait_subscribers=1, progress=False, perception=False,
                  max_frames=3))
    t.join(30)
    assert received and "camera_pose" not in received[0]


def test_world_frame_needs_the_people_boxes(clip):
    from streamer.app import RunConfig, build_pipeline

    with pytest.raises(ConfigError, match="drop --no-perception"):
        build_pipeline(RunConfig(source=str(clip), publish=None, perception=False, output_frame="world",
                                 camera_pitch=0.0))


def test_head_frame_through_the_rig_file(tmp_path):
    from calibration.camera import assumed_camera
    from calibration.rig import Rig, load_rig, save_rig
    from streamer.app import RunConfig
    from streamer.output_frame import OutputFrameStage, frame_stages

    save_rig(Rig.from_angles(pitch_down_deg=35, translation=(0.0, -0.09, 0.06)), tmp_path / "rig.yaml")
    rig = load_rig(tmp_path / "rig.yaml")
    config = RunConfig(source="x", output_frame="head", rig=str(tmp_path / "rig.yaml"))
    stages = frame_stages(config, assumed_camera(640, 480), [])
    assert isinstance(stages[-1], OutputFrameStage)
    joints = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32) + [0, 0, 3]
    frame = Frame(0, None, 0.0, (640, 480), persons=[Person(1, 0.9, {"joints": joints,
                                                                    "trans": joints[0].copy(),
                                                                    "poses": np.zeros(72, np.float32)})])
    stages[-1].process(frame)
    arrays = frame.persons[0].arrays
    assert np.abs(arrays["joints"] - rig.camera_to_head(joints)).max() < 1e-5
    assert np.abs(arrays["camera_position"] - rig.translation).max() < 1e-6
    assert frame.camera_pose["frame"] == "head"


def test_gravity_from_upright_people_on_a_floor(body):
    """SMPL bodies standing upright at several places on a floor, seen by a camera pitched 20
    degrees down: once their feet have spread over the floor, the floor's normal gives the
    world's down (within 0.5 degrees); the spines of people leaning 4 degrees alone are off
    by a degree or more."""
    from engines.camera_motion.world import PeopleGravity, world_from_down

    rng = np.random.default_rng(5)
    world_from_camera = yaw_pitch_roll(0.0, 20.0)
    gravity = PeopleGravity(frames=40)
    for i in range(40):
        people = []
        for x in (-1.0, 0.5 + 0.05 * i):
            pose = np.zeros(72, np.float32)
            # upright, turned about the vertical, leaning 4 degrees forward (people are not plumb)
            lean = yaw_pitch_roll(rng.uniform(-180, 180), 0.0) @ yaw_pitch_roll(0.0, 4.0)
            flip = np.diag([1.0, -1.0, -1.0])  # SMPL's y up -> the world's y down
            pose[:3] = __import__("scipy.spatial.transform", fromlist=["Rotation"]).Rotation.from_matrix(
                lean @ flip).as_rotvec()
            joints_world = _posed(body, pose, np.zeros(10, np.float32), np.zeros(3, np.float32))
            feet = joints_world[[7, 8, 10, 11], 1].max()
            joints_world = joints_world + np.array([x, 1.6 - feet, 3.0 + 0.04 * i])  # feet on y = 1.6 (floor)
            people.append(joints_world @ world_from_camera)  # into the camera frame (world -> camera)
        gravity.add(people)
    assert gravity.settled and gravity.method == "people's feet on a common floor"
    world = world_from_down(gravity.down())
    assert angle_between_deg(world, world_from_camera) < 0.5
    spines = PeopleGravity(frames=10 ** 6, floor_span=1e9)  # never the feet: the leaning spines alone
    spines.add(people)
    assert 0.5 < angle_between_deg(world_from_down(spines.down()), world_from_camera) < 5.0

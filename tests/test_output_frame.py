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

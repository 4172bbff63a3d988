"""BVH and .smpl motion files: read back with independent readers (the ``bvh`` package,
``smplcodec``), forward kinematics of what was read must give the body model's joints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engines.body.body_model import BodyModel
from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS
from streamer.errors import ConfigError
from streamer.frames import Frame, Person
from streamer.motion_recovery import recover
from streamer.motion_formats import (CAMERA_TO_WORLD, MultiFormatRecorder, bvh_text, continuous_euler,
                                     parse_formats, world_motion)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def body():
    return BodyModel.load().double()


def walking_motion(T: int = 48, seed: int = 0):
    """A smooth, plausible motion in the camera frame: swinging legs and arms, a turning
    root, the person about 4 m in front of the camera, shape varying a little per frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 30.0
    phase = 2 * np.pi * 1.0 * t
    pose = np.zeros((T, 24, 3))
    # Root: upright person facing the camera (model +Z towards -Z camera), turning slowly.
    root = Rotation.from_euler("x", 180, degrees=True) * Rotation.from_euler("y", 180, degrees=True)
    turn = Rotation.from_euler("y", (120 * t / t[-1])[:, None], degrees=True)
    pose[:, 0] = (root * turn).as_rotvec()
    pose[:, 1, 0] = 0.5 * np.sin(phase)
    pose[:, 2, 0] = -0.5 * np.sin(phase)
    pose[:, 4, 0] = 0.6 * (1 + np.sin(phase + 1))
    pose[:, 5, 0] = 0.6 * (1 + np.sin(phase + 4))
    pose[:, 16, 2] = -1.1 + 0.2 * np.sin(phase)
    pose[:, 17, 2] = 1.1 - 0.2 * np.sin(phase)
    pose[:, 18, 1] = -1.7  # elbows bent past 90 degrees
    pose[:, 19, 1] = 1.7
    pose[:, 15] = rng.normal(0, 0.2, 3)
    pose += rng.normal(0, 0.05, pose.shape)
    trans = np.stack([0.4 * np.sin(t), 0.3 + 0.02 * np.sin(2 * phase), 4.0 - t], axis=1)
    betas = rng.normal(0, 0.8, 10) + rng.normal(0, 0.05, (T, 10))
    return pose.reshape(T, 72), trans, betas


def fk_from_bvh(mocap) -> dict[str, np.ndarray]:
    """World joint positions per frame from a parsed BVH (bvh package), computed here from
    its offsets and channels alone."""
    names = mocap.get_joints_names()
    pos, rot = {}, {}
    for name in names:
        offset = np.asarray(mocap.joint_offset(name), float)
        channels = mocap.joint_channels(name)
        values = np.asarray(mocap.frames_joint_channels(name, channels), float)
        rot_channels = [c for c in channels if c.endswith("rotation")]
        order = "".join(c[0] for c in rot_channels)
        local = Rotation.from_euler(order.upper(), values[:, [channels.index(c) for c in rot_channels]], degrees=True)
        parent = mocap.joint_parent(name)
        if parent is None:
            p = offset + values[:, [channels.index(c) for c in ("Xposition", "Yposition", "Zposition")]]
            pos[name], rot[name] = p, local
        else:
            pname = parent.name
            pos[name] = pos[pname] + rot[pname].apply(offset)
            rot[name] = rot[pname] * local
    return pos


def test_bvh_reads_back_and_matches_body_model_joints(body, tmp_path):
    bvh = pytest.importorskip("bvh")
    poses, trans, betas = walking_motion()
    motion = world_motion(poses, trans, betas, body)
    path = tmp_path / "walk.bvh"
    path.write_text(bvh_text(motion, fps=30.0))
    mocap = bvh.Bvh(path.read_text())
    assert mocap.get_joints_names() == [SMPL24_NAMES[j] for j in _dfs()]
    assert mocap.nframes == len(poses)
    assert mocap.frame_time == pytest.approx(1 / 30.0)
    fk = fk_from_bvh(mocap)
    got = np.stack([fk[n] for n in SMPL24_NAMES], axis=1)
    # Expected: the body model with the mean shape, camera frame turned to Y up, feet on y = 0.
    with torch.no_grad():
        out = body(torch.from_numpy(poses), torch.from_numpy(betas.mean(0))[None].expand(len(poses), -1),
                   torch.from_numpy(trans))
    expected = out.joints.numpy() @ CAMERA_TO_WORLD.T + np.array([0.0, -motion.floor, 0.0])
    err_mm = 1000 * np.linalg.norm(got - expected, axis=-1)
    assert err_mm.max() < 0.05, err_mm.max()
    # Y up and standing on the floor: head above pelvis above feet, feet near y = 0.
    assert (got[:, 15, 1] > got[:, 0, 1]).all() and (got[:, 0, 1] > got[:, 7, 1]).all()
    assert abs(np.percentile(got[:, [7, 8, 10, 11], 1].min(1), 5)) < 1e-6


def _dfs():
    from streamer.motion_formats import bvh_joint_order

    return bvh_joint_order(SMPL24_PARENTS)


def test_euler_angles_stay_continuous_through_a_full_turn():
    angles = np.linspace(0, 4 * np.pi, 200)
    R = Rotation.from_rotvec(np.outer(angles, [0.3, 0.9, 0.3]) / np.linalg.norm([0.3, 0.9, 0.3])).as_matrix()
    euler = continuous_euler(R[:, None])
    assert np.abs(np.diff(euler, axis=0)).max() < 20  # no 360-degree jumps
    back = Rotation.from_euler("ZXY", euler[:, 0], degrees=True).as_matrix()
    np.testing.assert_allclose(back, R, atol=1e-9)


def test_smpl_file_reads_back_with_smplcodec(body, tmp_path):
    smplcodec = pytest.importorskip("smplcodec")
    poses, trans, betas = walking_motion(T=20, seed=1)
    rec = MultiFormatRecorder(tmp_path, fps=25.0, formats=("smpl",), body=body, body_model="anny-smpl")
    for i in range(20):
        rec.write(Frame(index=i, image=None, capture_time=i / 25, source_size=(640, 480), stream_time=i / 25,
                        persons=[Person(3, 0.9, {"poses": poses[i].astype(np.float32),
                                                 "trans": trans[i].astype(np.float32),
                                                 "betas": betas[i].astype(np.float32),
                                                 "joints": np.zeros((24, 3), np.float32)})]))
    rec.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track_0003.smpl"]  # npz not asked for
    codec = smplcodec.SMPLCodec.from_file(tmp_path / "track_0003.smpl")
    assert codec.frame_count == 20 and codec.frame_rate == pytest.approx(25.0)
    assert codec.shape_parameters is None  # anny-smpl betas mean nothing to Meshcapade's SMPL
    # Joints from what was read back equal the world joints of the recorded motion.
    with torch.no_grad():
        b = torch.from_numpy(betas.mean(0))[None].expand(20, -1)
        got = body(torch.from_numpy(codec.body_pose.reshape(20, 72)).double(), b,
                   torch.from_numpy(codec.body_translation).double()).joints.numpy()
    expected = world_motion(poses, trans, betas, body).joints
    assert np.abs(got - expected).max() < 1e-4


def test_recorder_writes_all_formats_and_keypoints(body, tmp_path):
    pytest.importorskip("smplcodec")
    poses, trans, betas = walking_motion(T=6, seed=2)
    rec = MultiFormatRecorder(tmp_path, fps=30.0, formats=parse_formats("npz,bvh,smpl,glb"), body=body,
                              image_size=(640, 480))
    for i in range(6):
        rec.write(Frame(index=i, image=None, capture_time=float(i), source_size=(640, 480),
                        persons=[Person(1, 0.8, {"poses": poses[i], "trans": trans[i], "betas": betas[i],
                                                 "joints": np.zeros((24, 3)),
                                                 "keypoints_blazepose33": np.ones((33, 3), np.float32)})]))
        rec.flush()  # every flush puts the frames so far on disk: a kill now loses none of them
        snapshot = tmp_path.parent / f"{tmp_path.name}-killed-{i}"
        shutil.copytree(tmp_path, snapshot)
        recover(snapshot, body_loader=lambda: body)
        assert f"Frames: {i + 1}\n" in (snapshot / "track_0001.bvh").read_text()
        assert (snapshot / "track_0001.glb").read_bytes()[:4] == b"glTF"
    rec.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["track_0001.bvh", "track_0001.glb", "track_0001.npz", "track_0001.smpl",
                     "track_0001_blazepose33.npz"]
    assert "Frames: 6" in (tmp_path / "track_0001.bvh").read_text()


def test_parse_formats():
    assert parse_formats(None) == ("npz",)
    assert parse_formats("npz, BVH,.bvh") == ("npz", "bvh")
    with pytest.raises(ConfigError, match="fbx"):
        parse_formats("npz,fbx")


RUNNER = """
import sys
sys.path.insert(0, 'tests')
from synthetic import SyntheticPersons
from streamer.app import RunConfig, run
outcome = run(RunConfig(source=sys.argv[1], record=sys.argv[2], publish=None, mode='offline', progress=False,
                        perception=False, formats='npz,bvh,smpl'), extra_stages=[SyntheticPersons(1, delay=0.02)])
print(f'stopped_by={outcome.result.stopped_by} frames={outcome.result.frames_out}', flush=True)
"""


def test_ctrl_c_leaves_complete_bvh_and_smpl_files(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    bvh = pytest.importorskip("bvh")
    smplcodec = pytest.importorskip("smplcodec")
    root = Path(__file__).resolve().parents[1]
    record = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(root / "tests" / "data" / "sports2d_demo.mp4"),
                             str(record)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    # Wait for the first flush (a chunk on disk; the final files come at the end), then interrupt.
    while not list(record.glob(".smplstream-run-*/*.npz")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "stopped_by=SIGINT" in out, err
    frames_out = int(out.split("frames=")[1].split()[0])
    assert 0 < frames_out < 230
    assert not list(record.glob(".*tmp"))
    mocap = bvh.Bvh((record / "track_0001.bvh").read_text())
    assert mocap.nframes == frames_out and len(mocap.frames) == frames_out
    codec = smplcodec.SMPLCodec.from_file(record / "track_0001.smpl")
    assert codec.frame_count == frames_out and np.isfinite(codec.body_pose).all()

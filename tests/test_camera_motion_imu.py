"""The IMU path: a synthetic IMU for the warped clip (the known rotations, mounted turned on
the camera, with noise and its own clock) is synchronised, its mounting found and fused
with the visual estimate; files and a real ZeroMQ socket on 127.0.0.1 are read."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engines.camera_motion.imu import (ImuError, ImuFusion, ImuSubscriber, ImuTrack, estimate_imu_to_camera,
                                       estimate_time_offset, read_imu_file)
from engines.camera_motion.rotations import angle_between_deg, yaw_pitch_roll
from engines.camera_motion.synthetic import HeadMotion, RotationWarp, read_frames, source_camera, virtual_pinhole
from engines.camera_motion.visual import track_frames
from engines.camera_motion.world import down_from_imu, down_from_pitch, world_from_down

from test_camera_motion import CLIP

FRAMES = 150
OFFSET = 0.137  # the IMU's clock runs this far ahead of the video's
MOUNT = yaw_pitch_roll(10.0, -80.0, 5.0)  # camera-from-IMU: an IMU lying flat in a head-mounted camera
# the IMU's world (z up) from the source camera's frame (y down), the source camera level
IMU_WORLD_FROM_SOURCE = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])


def _synthetic_imu(truth_fn, duration: float, rng, rate: float = 100.0, noise_deg: float = 0.3) -> ImuTrack:
    """Samples at ``rate`` Hz on the IMU's clock: orientation of the IMU in its world, plus noise."""
    t_imu = np.arange(-0.5, duration + 0.5, 1.0 / rate)
    R_src_cam = truth_fn(t_imu - OFFSET)
    R = IMU_WORLD_FROM_SOURCE @ R_src_cam @ MOUNT  # imu-world-from-IMU
    noise = Rotation.from_rotvec(rng.normal(scale=np.radians(noise_deg) / np.sqrt(3), size=(len(t_imu), 3)))
    return ImuTrack(t_imu, R @ noise.as_matrix())


@pytest.fixture(scope="module")
def warped_run():
    frames, fps = read_frames(str(CLIP), FRAMES)
    target = virtual_pinhole()
    motion = HeadMotion()
    t = np.arange(len(frames)) / fps
    truth = motion.rotations(t)
    warp = RotationWarp(source_camera(frames[0].shape[1], frames[0].shape[0]), target)
    traj = track_frames([warp(f, R) for f, R in zip(frames, truth)], target)
    return t, truth, traj, motion


def test_synthetic_imu_is_synchronised_and_fused(warped_run, tmp_path):
    t, truth, traj, motion = warped_run
    imu = _synthetic_imu(motion.rotations, t[-1], np.random.default_rng(0))
    # through a file, as a user gives it
    path = tmp_path / "imu.csv"
    q = Rotation.from_matrix(imu.rotations).as_quat()  # x y z w
    rows = ["timestamp_ns,t,qw,qx,qy,qz"] + [f"0,{float(ti)!r},{float(w)!r},{float(x)!r},{float(y)!r},{float(z)!r}"
                                              for ti, (x, y, z, w) in zip(imu.times, q)]
    path.write_text("\n".join(rows) + "\n")
    imu = read_imu_file(path)

    offset, score = estimate_time_offset(t, traj.rotations, imu)
    assert abs(offset - OFFSET) < 0.010, offset  # a third of a frame
    assert score > 0.9
    mount = estimate_imu_to_camera(t, traj.rotations, imu, offset)
    assert angle_between_deg(mount, MOUNT) < 1.0

    fusion = ImuFusion(imu, mount, offset)
    fused = np.array([fusion.update(ti, R, ok) for ti, R, ok in zip(t, traj.rotations, traj.ok)])
    expected = IMU_WORLD_FROM_SOURCE @ truth  # imu-world-from-camera
    err = angle_between_deg(fused, expected)
    assert np.median(err) <= 1.0 and err.max() <= 3.0, (np.median(err), err.max())
    # the IMU alone, once synchronised, follows the known rotations too
    alone = np.array([fusion.imu_camera(ti) for ti in t])
    assert np.median(angle_between_deg(alone, expected)) <= 1.0
    # without synchronisation it would not: the offset matters
    unsynced = ImuFusion(imu, mount, 0.0)
    assert np.median(angle_between_deg(np.array([unsynced.imu_camera(ti) for ti in t]), expected)) > 2.0
    # gravity from the IMU: the source camera was level, so the world frame is its frame
    world = world_from_down(down_from_imu(fusion.alignment))
    assert angle_between_deg(world, np.eye(3)) < 1.0


def test_visual_gap_is_bridged_by_the_imu(warped_run):
    t, truth, traj, motion = warped_run
    imu = _synthetic_imu(motion.rotations, t[-1], np.random.default_rng(1))
    fusion = ImuFusion(imu, MOUNT, OFFSET)
    ok = traj.ok.copy()
    ok[60:90] = False  # the video fails for a second: the visual estimate is stale there
    stale = traj.rotations.copy()
    stale[60:90] = traj.rotations[59]
    fused = np.array([fusion.update(ti, R, o) for ti, R, o in zip(t, stale, ok)])
    err = angle_between_deg(fused, IMU_WORLD_FROM_SOURCE @ truth)
    assert err[60:90].max() <= 3.0
    assert angle_between_deg(stale[60:90], truth[60:90]).max() > 10  # the gap was real


def test_jsonl_and_bad_files(tmp_path):
    good = tmp_path / "imu.jsonl"
    good.write_text('{"t": 0.0, "q": [1, 0, 0, 0]}\n\n{"t": 0.1, "qw": 0.7071, "qx": 0, "qy": 0, "qz": 0.7071}\n')
    track = read_imu_file(good)
    assert len(track) == 2 and angle_between_deg(track.at(0.05), Rotation.from_euler("z", 45, degrees=True).as_matrix()) < 0.1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0.0, "q": [1, 0, 0]}\n')
    with pytest.raises(ImuError, match=r"bad.jsonl:1: .*4 numbers"):
        read_imu_file(bad)
    csvfile = tmp_path / "bad.csv"
    csvfile.write_text("time,qw,qx,qy,qz\n0,1,0,0,0\n")
    with pytest.raises(ImuError, match="missing t"):
        read_imu_file(csvfile)
    zero = tmp_path / "zero.csv"
    zero.write_text("t,qw,qx,qy,qz\n0,1,0,0,0\n1,0,0,0,0\n")
    with pytest.raises(ImuError, match="sample 1: .* not a rotation"):
        read_imu_file(zero)
    with pytest.raises(ImuError, match="no such IMU file"):
        read_imu_file(tmp_path / "missing.csv")


def test_a_still_camera_cannot_be_synchronised():
    t = np.arange(60) / 30.0
    imu = ImuTrack.from_quaternions(t, np.tile([1.0, 0, 0, 0], (60, 1)))
    with pytest.raises(ImuError, match="hardly turned"):
        estimate_time_offset(t, np.repeat(np.eye(3)[None], 60, 0), imu)


def test_zeromq_imu_stream_on_loopback():
    import zmq

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ImuSubscriber(f"tcp://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 5
        i = 0
        while len(sub) < 20 and time.monotonic() < deadline:  # slow joiner: send until it hears
            angle = np.radians(i)
            pub.send_multipart([b"imu", json.dumps({"t": i * 0.01, "q": [np.cos(angle / 2), 0, 0, np.sin(angle / 2)]}).encode()])
            pub.send(b"not json")
            i += 1
            time.sleep(0.01)
        track = sub.track()
        assert track is not None and len(track) >= 20
        assert sub.bad_messages > 0
        k = len(track.times) // 2
        expected = Rotation.from_euler("z", round(track.times[k] * 100), degrees=True).as_matrix()
        assert angle_between_deg(track.at(track.times[k]), expected) < 1e-3
    finally:
        sub.close()
        pub.close()


def test_pitch_hint_gives_a_level_world():
    R = yaw_pitch_roll(0.0, 25.0)  # a camera pitched 25 degrees down, as world-from-camera
    world = world_from_down(down_from_pitch(25.0))
    assert angle_between_deg(world, R) < 1e-9


def test_run_path_synchronises_the_imu_and_takes_gravity_from_it(tmp_path, monkeypatch):
    """streamer.output_frame.CameraMotion as a run drives it, frame by frame, with an IMU file:
    once synchronised (after 90 frames) the world's gravity is the IMU's and the camera's
    orientation in it is the known one."""
    import streamer.output_frame as output_frame
    from streamer.frames import Frame
    from streamer.output_frame import CameraMotion
    from test_camera_motion import _warped

    IMU_SYNC_FRAMES = 90  # the cached 4 s fixture: synchronise after 3 s (runs wait 5 s)
    monkeypatch.setattr(output_frame, "IMU_SYNC_FRAMES", IMU_SYNC_FRAMES)

    target = virtual_pinhole()
    frames, truth = _warped(target, HeadMotion())
    imu = _synthetic_imu(HeadMotion().rotations, len(frames) / 30.0, np.random.default_rng(2))
    path = tmp_path / "imu.jsonl"
    q = Rotation.from_matrix(imu.rotations).as_quat()
    path.write_text("".join(json.dumps({"t": float(t), "q": [float(w), float(x), float(y), float(z)]}) + "\n"
                            for t, (x, y, z, w) in zip(imu.times, q)))
    motion = CameraMotion(target, imu=str(path))
    poses, rotations = [], []
    try:
        for i, image in enumerate(frames):
            frame = Frame(i, image, 0.0, target.size, stream_time=i / 30.0)
            motion.submit(frame)
            R, pose = motion.pose(frame)
            poses.append(pose)
            rotations.append(R)
    finally:
        motion.close()
    assert poses[IMU_SYNC_FRAMES - 2]["gravity"] != "IMU"
    assert all(p["gravity"] == "IMU" for p in poses[IMU_SYNC_FRAMES:])
    err = angle_between_deg(np.array(rotations[IMU_SYNC_FRAMES:]), truth[IMU_SYNC_FRAMES:])
    assert err.max() < 1.0, err.max()
    assert abs(motion.fusion.offset - OFFSET) < 0.010

"""``run --output-frame camera|head|world``: the frame the outputs are written in
(``docs/head-mounted.md``).

- ``camera`` (default): nothing here runs; outputs are as they always were.
- ``head``: a fixed change of frame through the rig file (``p_head = R p_cam + t``).
- ``world``: gravity-aligned, from the camera's rotation per frame
  (:mod:`engines.camera_motion`). :class:`CameraMotionStage` sits after ``keypoints`` (it
  needs the people's boxes, to mask them) and hands each frame to a worker thread, so the
  estimate is made while ``lift`` and ``refine`` work on the frame; :class:`OutputFrameStage`
  sits before ``publish``, collects it and moves each person into the world.

Each person then also carries ``camera_rotation`` (3, 3) (the output frame from the camera)
and, where it is known, ``camera_position`` (3,), and the frame carries ``camera_pose``
for the wire header.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import ConfigError
from .frames import Frame
from .graph import Stage

log = logging.getLogger("smplstream.output_frame")

OUTPUT_FRAMES = ("camera", "head", "world")
#: Frames of video (with motion) before the IMU's clock offset and mounting are estimated:
#: with 3 s of head motion a second correlation peak a frame away sometimes wins, with 5 s
#: it did not (tests/test_camera_motion_imu.py's synthetic IMU, three noise seeds).
IMU_SYNC_FRAMES = 150
#: Frames with people before their gravity estimate is fixed.
PEOPLE_GRAVITY_FRAMES = 60


def transform_arrays(arrays: dict, R: np.ndarray, t: np.ndarray | None = None) -> dict:
    """A person's arrays moved by ``p' = R p + t`` (camera frame to another frame):
    the global orientation (``poses[:3]``), ``trans`` (the body turns about its pelvis, so
    SMPL's translation follows the pelvis: it needs ``joints``), ``joints``, and the
    hip-centred metric landmarks (turned only). Pixel arrays and uncertainties are unchanged."""
    R = np.asarray(R, np.float64)
    t = np.zeros(3) if t is None else np.asarray(t, np.float64)
    out = dict(arrays)
    if "poses" in arrays:
        poses = np.array(arrays["poses"], copy=True)
        go = Rotation.from_rotvec(np.asarray(poses[:3], np.float64)).as_matrix()
        poses[:3] = Rotation.from_matrix(R @ go).as_rotvec().astype(poses.dtype)
        out["poses"] = poses
    joints = arrays.get("joints")
    if joints is not None:
        j = np.asarray(joints, np.float64)
        out["joints"] = (j @ R.T + t).astype(np.asarray(joints).dtype)
    if "trans" in arrays:
        trans = np.asarray(arrays["trans"], np.float64)
        if joints is not None:
            pelvis = np.asarray(joints, np.float64)[0]
            new = R @ pelvis + t - (pelvis - trans)
        else:
            new = R @ trans + t  # without joints the pelvis offset is unknown (a few cm)
        out["trans"] = new.astype(np.asarray(arrays["trans"]).dtype)
    if "world_blazepose33" in arrays:
        w = np.asarray(arrays["world_blazepose33"], np.float64)
        out["world_blazepose33"] = (w @ R.T).astype(np.asarray(arrays["world_blazepose33"]).dtype)
    return out


def apply_pose(frame: Frame, R: np.ndarray, t: np.ndarray | None, pose: dict) -> None:
    """Move every person of ``frame`` into the output frame and attach the camera's pose."""
    for person in frame.persons:
        person.arrays = transform_arrays(person.arrays, R, t)
        person.arrays["camera_rotation"] = np.asarray(R, np.float32)
        if t is not None:
            person.arrays["camera_position"] = np.asarray(t, np.float32)
    frame.camera_pose = pose


class CameraMotion:
    """One run's camera motion: the visual tracker on its own thread, the optional IMU, and
    the gravity-aligned world. Built by :func:`streamer.app.build_pipeline`."""

    def __init__(self, camera, *, imu: str | None = None, imu_to_camera: np.ndarray | None = None,
                 camera_pitch: float | None = None):
        from engines.camera_motion.visual import VisualRotationTracker
        from engines.camera_motion.world import PeopleGravity, down_from_pitch

        self.tracker = VisualRotationTracker(camera)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="camera-motion")
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.cpu_ms: deque[float] = deque(maxlen=10000)  # the tracker's CPU per frame, the latest
        self.imu = _open_imu(imu) if imu else None
        self.imu_to_camera = imu_to_camera
        self.fusion = None
        self._history: list[tuple[float, np.ndarray]] = []
        self._pitch_down = None if camera_pitch is None else down_from_pitch(camera_pitch)
        self.people = PeopleGravity(PEOPLE_GRAVITY_FRAMES)
        self.lost_frames = 0

    # -- on the camera-motion stage's thread --------------------------------------------------
    def submit(self, frame: Frame) -> None:
        """Start measuring ``frame`` (its image and people's boxes) on the worker thread."""
        boxes = [p.arrays["box_xyxy"] for p in frame.persons if "box_xyxy" in p.arrays]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        when = frame.stream_time if frame.stream_time is not None else frame.capture_time + (time.time() - time.monotonic())
        with self._lock:
            self._futures[frame.index] = self._executor.submit(self._measure, frame.image, boxes, when)

    def _measure(self, image, boxes, when):
        started = time.thread_time()
        estimate = self.tracker.update(image, boxes)
        self.cpu_ms.append(1e3 * (time.thread_time() - started))
        return estimate, when

    # -- on the output-frame stage's thread ------------------------------------------------------
    def pose(self, frame: Frame) -> tuple[np.ndarray, dict]:
        """world-from-camera for ``frame`` and the header's description of it."""
        with self._lock:
            future = self._futures.pop(frame.index, None)
            for index in [i for i in self._futures if i < frame.index]:  # dropped on the way (live)
                self._futures.pop(index)
        if future is None:
            raise RuntimeError(f"frame {frame.index} never reached the camera-motion stage")
        estimate, when = future.result()
        visual = estimate.rotation
        self.lost_frames += not estimate.ok
        world_from_ref, gravity, settled = self._world(when, visual, estimate.ok)
        if self.fusion is not None:
            fused = self.fusion.update(when, visual, estimate.ok)  # imu-world-from-camera
            R = world_from_ref @ self.fusion.alignment.T @ fused
        else:
            R = world_from_ref @ visual
        self._add_people(frame, visual)
        pose = {"frame": "world", "rotation": np.round(R, 6).tolist(), "position": None,
                "tracking": bool(estimate.ok), "gravity": gravity, "settled": settled}
        return R, pose

    def _world(self, when: float, visual: np.ndarray, ok: bool):
        from engines.camera_motion.world import world_from_down

        if self.imu is not None:
            self._sync_imu(when, visual, ok)
            if self.fusion is not None:
                return _level(self.fusion.alignment), "IMU", True
        if self._pitch_down is not None:
            return world_from_down(self._pitch_down), "--camera-pitch", True
        down = self.people.down()
        return world_from_down(down), self.people._method, self.people.settled

    def _sync_imu(self, when: float, visual: np.ndarray, ok: bool) -> None:
        from engines.camera_motion.imu import (ImuError, ImuFusion, ImuSubscriber, estimate_imu_to_camera,
                                               estimate_time_offset)

        if self.fusion is not None:
            return
        if ok:
            self._history.append((when, visual))
        if len(self._history) < IMU_SYNC_FRAMES or len(self._history) % 15:
            return
        track = self.imu.track() if isinstance(self.imu, ImuSubscriber) else self.imu
        if track is None:
            return
        times = np.array([h[0] for h in self._history])
        rotations = np.array([h[1] for h in self._history])
        try:
            offset, score = estimate_time_offset(times, rotations, track)
            mount = self.imu_to_camera if self.imu_to_camera is not None else \
                estimate_imu_to_camera(times, rotations, track, offset)
        except ImuError as exc:
            log.debug("IMU not synchronised yet: %s", exc)
            return
        log.info("IMU synchronised: its clock is %+.3f s from the video's (correlation %.2f)", offset, score)
        self.fusion = ImuFusion(self.imu, mount, offset)
        for t, R in self._history:  # the alignment from every frame so far
            self.fusion.update(t, R, True)
        self._history.clear()

    def _add_people(self, frame: Frame, visual: np.ndarray) -> None:
        if self.people.settled or self._pitch_down is not None or self.fusion is not None:
            return
        joints = [np.asarray(p.arrays["joints"], np.float64) @ visual.T for p in frame.persons if "joints" in p.arrays]
        self.people.add(joints)
        if self.people.settled:
            log.info("world frame: gravity from the %s", self.people.method)

    def summary(self) -> dict:
        cpu = np.array(self.cpu_ms) if self.cpu_ms else np.zeros(1)
        return {"frames": len(self.cpu_ms), "cpu_ms_mean": round(float(cpu.mean()), 3),
                "cpu_ms_p99": round(float(np.percentile(cpu, 99)), 3), "lost_frames": self.lost_frames}

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self.imu is not None and hasattr(self.imu, "close"):
            self.imu.close()


def _level(imu_world_from_ref: np.ndarray) -> np.ndarray:
    """world-from-reference-camera, gravity from the IMU's up."""
    from engines.camera_motion.world import down_from_imu, world_from_down

    return world_from_down(down_from_imu(imu_world_from_ref))


def _open_imu(spec: str):
    from engines.camera_motion.imu import ImuError, ImuSubscriber, read_imu_file

    try:
        if spec.startswith(("tcp://", "ipc://")):
            return ImuSubscriber(spec)
        return read_imu_file(spec)
    except ImuError as exc:
        raise ConfigError(f"--imu: {exc}") from None


class CameraMotionStage(Stage):
    """Hands each frame to the camera-motion worker and passes it on at once."""

    name = "camera-motion"

    def __init__(self, motion: CameraMotion):
        self.motion = motion

    def process(self, frame: Frame) -> Frame:
        self.motion.submit(frame)
        return frame


class OutputFrameStage(Stage):
    """Moves each frame's people into the output frame (``head`` or ``world``)."""

    name = "output-frame"

    def __init__(self, frame: str, *, motion: CameraMotion | None = None, rig=None):
        if frame not in ("head", "world"):
            raise ValueError(f"OutputFrameStage: frame must be head or world, got {frame!r}")
        self.frame, self.motion, self.rig = frame, motion, rig

    def process(self, frame: Frame) -> Frame:
        if self.frame == "head":
            R, t = self.rig.rotation, self.rig.translation
            apply_pose(frame, R, t, {"frame": "head", "rotation": np.round(R, 6).tolist(),
                                     "position": np.round(t, 6).tolist()})
            return frame
        R, pose = self.motion.pose(frame)
        apply_pose(frame, R, None, pose)
        return frame

    def close(self) -> None:
        if self.motion is not None:
            self.motion.close()
            if self.motion.cpu_ms:
                s = self.motion.summary()
                log.info("camera motion: %d frames, %.1f ms CPU a frame (p99 %.1f) on its thread, %d not measured",
                         s["frames"], s["cpu_ms_mean"], s["cpu_ms_p99"], s["lost_frames"])


def check_output_frame(name: str, rig: str | None, imu: str | None, camera_pitch: float | None) -> None:
    """Raise ConfigError for options that do not fit together."""
    if name not in OUTPUT_FRAMES:
        raise ConfigError(f"--output-frame {name}: choose one of {', '.join(OUTPUT_FRAMES)}")
    if name == "head" and rig is None:
        raise ConfigError("--output-frame head needs --rig RIG.yaml (where the camera sits on the head)")
    if name != "world" and (imu is not None or camera_pitch is not None):
        raise ConfigError("--imu and --camera-pitch set up the world frame: add --output-frame world")
    if camera_pitch is not None and not -90.0 <= camera_pitch <= 90.0:
        raise ConfigError(f"--camera-pitch {camera_pitch}: degrees below level, between -90 and 90")
    if camera_pitch is not None and imu is not None:
        raise ConfigError("--camera-pitch and --imu both give gravity: use one")
    if not math.isfinite(camera_pitch if camera_pitch is not None else 0.0):
        raise ConfigError("--camera-pitch must be a number of degrees")


def frame_stages(config, camera, stages: list[Stage]) -> list[Stage]:
    """``stages`` with what ``config.output_frame`` needs added: for ``world`` the
    camera-motion stage right after ``keypoints`` (the first stage) and, for ``head`` and
    ``world``, the output-frame stage at the end. ``camera`` output: ``stages`` unchanged."""
    name = getattr(config, "output_frame", "camera")
    check_output_frame(name, config.rig, config.imu, config.camera_pitch)
    if name == "camera":
        return stages
    rig = _load_rig(config.rig) if config.rig else None
    if name == "head":
        return [*stages, OutputFrameStage("head", rig=rig)]
    if not stages or stages[0].name != "keypoints":
        raise ConfigError("--output-frame world needs the people's boxes: drop --no-perception")
    imu_to_camera = getattr(rig, "imu_rotation", None) if rig is not None else None
    motion = CameraMotion(camera, imu=config.imu, imu_to_camera=imu_to_camera, camera_pitch=config.camera_pitch)
    return [stages[0], CameraMotionStage(motion), *stages[1:], OutputFrameStage("world", motion=motion)]


def _load_rig(path: str):
    from calibration.fileio import FileFormatError
    from calibration.rig import load_rig

    try:
        return load_rig(path)
    except (FileFormatError, OSError, ValueError) as exc:
        raise ConfigError(f"--rig {path}: {exc}") from None

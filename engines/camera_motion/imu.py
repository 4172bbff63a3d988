"""An IMU's orientation stream: reading it (a CSV or JSON-lines file, or a ZeroMQ SUB
endpoint), putting it on the video's clock, and fusing it with the visual estimate.

A sample is a time in seconds and a unit quaternion ``w x y z``: the IMU's orientation in
its own gravity-aligned frame (``imu-world``: z up, as Android's rotation vector, iOS's
``CMAttitude`` and most AHRS filters give it), i.e. imu-world-from-IMU. Formats
(``docs/head-mounted.md``):

- CSV with a header naming the columns ``t, qw, qx, qy, qz`` (any order, more columns allowed);
- JSON lines: ``{"t": 12.345, "q": [w, x, y, z]}`` per line (or ``qw``, ``qx``, ... keys);
- ZeroMQ: the same JSON object as each message (one part, or the last part of a multipart).

The IMU's clock need not be the video's: :func:`estimate_time_offset` finds the offset by
correlating the angular speed of both (a quantity that needs no knowledge of how the IMU
sits on the camera), and :func:`estimate_imu_to_camera` finds that mounting rotation from
the angular velocities when no rig file gives it.
"""

from __future__ import annotations

import csv
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from .rotations import angle_deg, fit_rotation, orthonormalize

#: Up in the IMU's world frame.
IMU_WORLD_UP = np.array([0.0, 0.0, 1.0])


class ImuError(ValueError):
    """An IMU stream or file that cannot be used; the message says what and where."""


@dataclass
class ImuTrack:
    """Samples of an IMU's orientation, sorted by time: ``times`` (N,) s and ``rotations``
    (N, 3, 3) imu-world-from-IMU."""

    times: np.ndarray
    rotations: np.ndarray

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.rotations = np.asarray(self.rotations, dtype=np.float64).reshape(-1, 3, 3)
        if len(self.times) != len(self.rotations):
            raise ImuError(f"{len(self.times)} times but {len(self.rotations)} orientations")
        order = np.argsort(self.times, kind="stable")
        self.times, self.rotations = self.times[order], self.rotations[order]
        keep = np.concatenate([[True], np.diff(self.times) > 0])  # repeated stamps: the first
        self.times, self.rotations = self.times[keep], self.rotations[keep]

    @staticmethod
    def from_quaternions(times, wxyz) -> ImuTrack:
        """From ``(N,)`` times and ``(N, 4)`` quaternions ``w x y z`` (normalised here)."""
        q = np.asarray(wxyz, dtype=np.float64).reshape(-1, 4)
        norm = np.linalg.norm(q, axis=1)
        if not np.isfinite(q).all() or (norm < 1e-6).any():
            bad = int(np.argmax(~np.isfinite(q).all(axis=1) | (norm < 1e-6)))
            raise ImuError(f"sample {bad}: quaternion {q[bad].tolist()} is not a rotation")
        return ImuTrack(times, Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix())

    def __len__(self) -> int:
        return len(self.times)

    def at(self, t) -> np.ndarray:
        """Orientations at times ``t`` (slerp between samples; held at the ends)."""
        t = np.clip(np.asarray(t, dtype=np.float64), self.times[0], self.times[-1])
        if len(self.times) == 1:
            return np.broadcast_to(self.rotations[0], t.shape + (3, 3)).copy()
        return Slerp(self.times, Rotation.from_matrix(self.rotations))(t).as_matrix()

    def angular_velocity(self, t: np.ndarray, dt: float = 0.01) -> np.ndarray:
        """Angular velocity in the IMU's own frame at times ``t``, rad/s (central differences)."""
        a, b = self.at(np.asarray(t) - dt / 2), self.at(np.asarray(t) + dt / 2)
        return Rotation.from_matrix(np.swapaxes(a, -1, -2) @ b).as_rotvec() / dt


def read_imu_file(path: str | Path) -> ImuTrack:
    """An :class:`ImuTrack` from a ``.csv`` or ``.jsonl``/``.json`` file (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ImuError(f"{path}: no such IMU file")
    times, quats = [], []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip().lower() for n in (reader.fieldnames or [])]
            missing = [c for c in ("t", "qw", "qx", "qy", "qz") if c not in names]
            if missing:
                raise ImuError(f"{path}: the CSV header must name t, qw, qx, qy, qz; missing {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                row = {k.strip().lower(): v for k, v in row.items() if k is not None}
                try:
                    times.append(float(row["t"]))
                    quats.append([float(row[c]) for c in ("qw", "qx", "qy", "qz")])
                except (TypeError, ValueError):
                    raise ImuError(f"{path}:{line}: t, qw, qx, qy, qz must be numbers") from None
    else:
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            try:
                t, q = parse_sample(json.loads(text))
            except (ValueError, ImuError) as exc:
                raise ImuError(f"{path}:{line}: {exc}") from None
            times.append(t)
            quats.append(q)
    if len(times) < 2:
        raise ImuError(f"{path}: needs at least 2 samples, found {len(times)}")
    try:
        return ImuTrack.from_quaternions(times, quats)
    except ImuError as exc:
        raise ImuError(f"{path}: {exc}") from None


def parse_sample(obj) -> tuple[float, list[float]]:
    """``(t, [w, x, y, z])`` of one JSON sample; raises ImuError naming what is wrong."""
    if not isinstance(obj, dict) or "t" not in obj:
        raise ImuError('a sample is a JSON object with "t" and "q": [w, x, y, z]')
    if "q" in obj:
        q = obj["q"]
    elif all(k in obj for k in ("qw", "qx", "qy", "qz")):
        q = [obj[k] for k in ("qw", "qx", "qy", "qz")]
    else:
        raise ImuError('a sample needs "q": [w, x, y, z] (or "qw", "qx", "qy", "qz")')
    try:
        t = float(obj["t"])
        q = [float(v) for v in q]
    except (TypeError, ValueError):
        raise ImuError('"t" and the quaternion must be numbers') from None
    if len(q) != 4 or not math.isfinite(t):
        raise ImuError('"q" must hold 4 numbers w, x, y, z and "t" a finite time')
    return t, q


class ImuSubscriber:
    """Collects samples published on a ZeroMQ endpoint (``tcp://host:port``) in a thread.

    :meth:`track` returns what has arrived so far (at most ``keep`` samples, the newest).
    Malformed messages are counted in ``bad_messages`` and skipped.
    """

    def __init__(self, endpoint: str, keep: int = 20000):
        import zmq

        self.endpoint = endpoint
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.setsockopt(zmq.RCVTIMEO, 100)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise ImuError(f"--imu {endpoint}: {exc}") from None
        self._keep = keep
        self._times: list[float] = []
        self._quats: list[list[float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bad_messages = 0
        self._thread = threading.Thread(target=self._loop, name="imu", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import zmq

        while not self._stop.is_set():
            try:
                parts = self._sock.recv_multipart()
            except zmq.Again:
                continue
            except zmq.ZMQError:
                break
            try:
                t, q = parse_sample(json.loads(parts[-1]))
            except (ValueError, ImuError):
                self.bad_messages += 1
                continue
            with self._lock:
                self._times.append(t)
                self._quats.append(q)
                if len(self._times) > self._keep:
                    del self._times[: len(self._times) - self._keep]
                    del self._quats[: len(self._quats) - self._keep]

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)

    def track(self) -> ImuTrack | None:
        """The samples so far, or None before the first two."""
        with self._lock:
            if len(self._times) < 2:
                return None
            times, quats = list(self._times), list(self._quats)
        return ImuTrack.from_quaternions(times, quats)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._sock.close()


def rotation_speed(times: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angular speed (rad/s) between consecutive orientations, at the mid times."""
    times = np.asarray(times, np.float64)
    step = np.radians(angle_deg(np.swapaxes(rotations[:-1], -1, -2) @ rotations[1:]))
    return 0.5 * (times[1:] + times[:-1]), step / np.diff(times)


def estimate_time_offset(frame_times: np.ndarray, camera_rotations: np.ndarray, imu: ImuTrack,
                         max_offset: float = 1.0, step: float = 0.001) -> tuple[float, float]:
    """The offset ``d`` (s) such that the IMU's sample at ``t + d`` belongs to the frame at
    ``t``, and the correlation reached (1 is a perfect match).

    Compares the angular speed of the camera (from its per-frame rotations, any reference)
    with the IMU's over offsets in ``[-max_offset, max_offset]``, then refines the best by
    a parabola through its neighbours. Raises ImuError when the head hardly moved (there is
    nothing to correlate) or the streams barely overlap.
    """
    times = np.asarray(frame_times, np.float64)
    # turns over about 0.1 s: per-frame steps of a noisy IMU are mostly noise
    stride = max(1, int(round(0.1 / float(np.median(np.diff(times))))))
    t0, t1 = times[:-stride], times[stride:]
    speed = np.radians(angle_deg(np.swapaxes(camera_rotations[:-stride], -1, -2) @ camera_rotations[stride:])) / (t1 - t0)
    if len(speed) < 10 or np.std(speed) < math.radians(2.0):
        raise ImuError("cannot synchronise the IMU: the camera hardly turned (needs a few degrees a second)")
    a = (speed - speed.mean()) / speed.std()
    mid = t0

    def score(d: float) -> float:
        inside = (t0 + d >= imu.times[0]) & (t1 + d <= imu.times[-1])
        if inside.sum() < 0.5 * len(mid):
            return -np.inf
        # the IMU's turn over the same interval as each pair of frames
        ra, rb = imu.at(t0[inside] + d), imu.at(t1[inside] + d)
        b = np.radians(angle_deg(np.swapaxes(ra, -1, -2) @ rb)) / (t1[inside] - t0[inside])
        if b.std() < 1e-9:
            return -np.inf
        aa = a[inside]
        return float(np.mean((aa - aa.mean()) * (b - b.mean())) / (aa.std() * b.std()))

    coarse = np.arange(-max_offset, max_offset + 1e-9, 10 * step)
    scores = np.array([score(d) for d in coarse])
    if not np.isfinite(scores).any():
        raise ImuError("cannot synchronise the IMU: its samples and the video do not overlap in time "
                       f"within +-{max_offset:g} s")
    centre = coarse[int(np.argmax(scores))]
    offsets = np.arange(centre - 20 * step, centre + 20 * step + 1e-9, step)  # the coarse peak is flat
    scores = np.array([score(d) for d in offsets])
    best = int(np.argmax(scores))
    offset = offsets[best]
    if 0 < best < len(offsets) - 1 and np.isfinite(scores[best - 1]) and np.isfinite(scores[best + 1]):
        y0, y1, y2 = scores[best - 1], scores[best], scores[best + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            offset += step * 0.5 * (y0 - y2) / denom
    return float(offset), float(scores[best])


def estimate_imu_to_camera(frame_times: np.ndarray, camera_rotations: np.ndarray, imu: ImuTrack,
                           offset: float, stride: int = 5) -> np.ndarray:
    """The camera-from-IMU rotation, for a rig file that does not give it: the camera's and
    the IMU's turns over the same intervals (``stride`` frames: long enough for the turn to
    stand well above the IMU's noise) have axes related by it (``r_cam = R r_imu``)."""
    times = np.asarray(frame_times, np.float64)
    a, b = np.arange(0, len(times) - stride), np.arange(stride, len(times))
    r_cam = Rotation.from_matrix(np.swapaxes(camera_rotations[a], -1, -2) @ camera_rotations[b]).as_rotvec()
    imu_a, imu_b = imu.at(times[a] + offset), imu.at(times[b] + offset)
    r_imu = Rotation.from_matrix(np.swapaxes(imu_a, -1, -2) @ imu_b).as_rotvec()
    use = np.linalg.norm(r_cam, axis=1) > math.radians(2.0)
    if use.sum() < 5:
        raise ImuError("cannot find how the IMU sits on the camera: the camera hardly turned; give imu_rotation "
                       "in the rig file")
    return fit_rotation(r_cam[use], r_imu[use])


@dataclass
class ImuFusion:
    """Fuses the visual rotation (reference-from-camera, drift-bounded but may fail) with the
    IMU's orientation (gravity-aligned, always there).

    The IMU gives the world: the reference camera's orientation in the IMU's world is the
    rotation mean over the frames seen so far of ``imu(t) @ visual(t)^T``. While the visual
    estimate holds, the camera's orientation is that alignment applied to it; when the video
    fails (``ok`` False) the IMU carries on from the last frame measured, so there is no jump.

    ``imu_to_camera``: camera-from-IMU rotation (rig file, or :func:`estimate_imu_to_camera`);
    ``offset``: :func:`estimate_time_offset`.
    """

    imu: ImuTrack | ImuSubscriber
    imu_to_camera: np.ndarray
    offset: float = 0.0

    def __post_init__(self) -> None:
        self._sum = np.zeros((3, 3))
        self._hold: np.ndarray | None = None  # last camera orientation relative to the IMU's

    def _track(self) -> ImuTrack | None:
        return self.imu.track() if isinstance(self.imu, ImuSubscriber) else self.imu

    def imu_camera(self, t: float) -> np.ndarray | None:
        """The camera's orientation in the IMU's world by the IMU alone (imu-world-from-camera)."""
        track = self._track()
        if track is None:
            return None
        return track.at(t + self.offset) @ self.imu_to_camera.T

    def update(self, t: float, visual: np.ndarray, ok: bool = True) -> np.ndarray | None:
        """imu-world-from-camera at frame time ``t`` given the visual reference-from-camera."""
        imu_cam = self.imu_camera(t)
        if imu_cam is None:
            return None
        if ok:
            self._sum += imu_cam @ visual.T
            fused = orthonormalize(self._sum) @ visual
            self._hold = imu_cam.T @ fused
            return fused
        return imu_cam if self._hold is None else imu_cam @ self._hold

    @property
    def alignment(self) -> np.ndarray | None:
        """imu-world-from-reference-camera so far."""
        return None if not self._sum.any() else orthonormalize(self._sum)

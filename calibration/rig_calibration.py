"""Several cameras, one board: the intrinsics of each camera and where every camera sits
relative to the others (a multi-camera rig), from synchronised videos or image folders of
a board that several of them see at once.

Steps:

1. the board in every frame of every camera (:meth:`BoardSpec.detect`, the cascade of
   ``calibrate``); frame ``i`` of each source is the same instant (synchronised recordings);
2. each camera's intrinsics, as ``calibrate`` finds them (:func:`calibrate_views`), unless
   given;
3. the board's pose in each camera and frame (``cv2.solvePnP``);
4. the cameras' poses from the pairs that saw the board together: for a pair, the rotation
   mean and the median translation over their shared frames; from the reference camera
   (the first) along the pairs with the most shared frames (a maximum spanning tree);
5. a bundle adjustment of every camera pose (the reference fixed) and every frame's board
   pose, on the reprojection of every detected corner in every camera
   (``scipy.optimize.least_squares``, Huber loss of 1 px, sparse Jacobian).

The rig frame is the reference camera's (OpenCV axes, metres). A camera's pose is stored
as ``p_rig = rotation @ p_cam + translation`` (its axes' directions and its centre in the
rig frame), as for the head-mounted rigs of :mod:`calibration.rig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

from calibration.board import BoardSpec, Detection
from calibration.calibrate import (CalibrationError, View, board_sharpness, calibrate_views, iter_frames,
                                   select_views)
from calibration.camera import Camera
from calibration.fileio import FileFormatError, get_array, get_str, read_fields, write_fields

MIN_SHARED_FRAMES = 2  # frames a camera must share with the rig to be placed in it
HUBER_PX = 1.0


@dataclass
class RigCamera:
    """One camera of a rig: intrinsics, pose in the rig frame, and how well it fits."""

    name: str
    camera: Camera
    rotation: np.ndarray  # (3, 3): p_rig = rotation @ p_cam + translation
    translation: np.ndarray  # (3,) metres: the camera's centre in the rig frame
    rms: float = math.nan  # RMS reprojection of its corners after the bundle adjustment, px
    frames: int = 0  # frames in which it saw the board

    @property
    def centre(self) -> np.ndarray:
        return self.translation


@dataclass
class RigCalibration:
    cameras: list[RigCamera]
    board: BoardSpec
    rms: float  # over all corners of all cameras, px
    frames: int  # synchronised frames looked at
    shared: dict[tuple[int, int], int] = field(default_factory=dict)  # frames seen by both cameras of a pair

    def summary(self) -> str:
        lines = [f"board: {self.board.describe()}; {self.frames} synchronised frames; "
                 f"RMS reprojection over all cameras {self.rms:.3f} px"]
        for c in self.cameras:
            yaw = math.degrees(math.atan2(c.rotation[0, 2], c.rotation[2, 2]))
            lines.append(f"{c.name}: fx={c.camera.fx:.1f} fy={c.camera.fy:.1f} cx={c.camera.cx:.1f} "
                         f"cy={c.camera.cy:.1f}; board in {c.frames} frames; centre "
                         f"({', '.join(f'{v:+.3f}' for v in c.translation)}) m, optical axis yaw {yaw:+.1f} deg; "
                         f"RMS {c.rms:.3f} px")
        pairs = ", ".join(f"{self.cameras[a].name}-{self.cameras[b].name} {n}" for (a, b), n in sorted(self.shared.items()))
        lines.append(f"frames shared by pairs: {pairs}")
        return "\n".join(lines)


def _pose_matrix(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    T[:3, 3] = np.ravel(tvec)
    return T


def _rotation_mean(Rs: Sequence[np.ndarray]) -> np.ndarray:
    U, _, Vt = np.linalg.svd(np.sum(Rs, axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _board_pose(det: Detection, camera: Camera) -> np.ndarray | None:
    """Board -> camera (4, 4), or None where the pose is unreliable."""
    if len(det.ids) < 6:
        return None
    obj = det.object_points.astype(np.float64)
    img = det.image_points.astype(np.float64).reshape(-1, 1, 2)
    if camera.model == "fisheye":
        img = cv2.fisheye.undistortPoints(img, camera.K, camera.dist, P=camera.K)
        dist = None
    else:
        dist = camera.dist
    ok, rvec, tvec = cv2.solvePnP(obj, img, camera.K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        return None
    return _pose_matrix(rvec, tvec)


def _project(camera: Camera, rvec: np.ndarray, tvec: np.ndarray, points: np.ndarray) -> np.ndarray:
    if camera.model == "fisheye":
        out, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), rvec, tvec, camera.K, camera.dist)
    else:
        out, _ = cv2.projectPoints(points, rvec, tvec, camera.K, camera.dist)
    return out.reshape(-1, 2)


def detect_synchronised(sources: Sequence[str | Path], board: BoardSpec, max_frames: int = 300
                        ) -> tuple[list[list[Detection | None]], list[tuple[int, int]], list[list[View]]]:
    """The board in every frame of every source: ``detections[camera][frame]`` (None where
    not found), each camera's image size, and its views for the intrinsics."""
    detections, sizes, views = [], [], []
    for source in sources:
        found: list[Detection | None] = []
        cam_views: list[View] = []
        size = None
        for name, image in iter_frames(source, max_frames):
            gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            size = size or (gray.shape[1], gray.shape[0])
            det = board.detect(gray)
            found.append(det)
            if det is not None:
                cam_views.append(View(name, det, board_sharpness(gray, det.image_points)))
        if size is None:
            raise CalibrationError(f"{source}: no frames could be read")
        detections.append(found)
        sizes.append(size)
        views.append(cam_views)
    return detections, sizes, views


def calibrate_rig(sources: Sequence[str | Path], board: BoardSpec, *, model: str = "pinhole",
                  cameras: Sequence[Camera] | None = None, names: Sequence[str] | None = None,
                  max_frames: int = 300, max_views: int = 40) -> RigCalibration:
    """Calibrate a rig of ``len(sources)`` synchronised cameras (see the module docstring).
    ``cameras``: their intrinsics when known (else calibrated here, ``model``). Raises
    CalibrationError naming the camera that cannot be placed and why."""
    if len(sources) < 2:
        raise CalibrationError("a rig needs at least two cameras")
    names = list(names or [Path(s).stem for s in sources])
    detections, sizes, views = detect_synchronised(sources, board, max_frames)
    frames = min(len(d) for d in detections)
    if len({len(d) for d in detections}) > 1:
        # Synchronised recordings have one length; a longer one is cut to the shortest.
        detections = [d[:frames] for d in detections]
    if cameras is None:
        cams = []
        for name, cam_views, size in zip(names, views, sizes):
            try:
                cams.append(calibrate_views(select_views(cam_views, size, board, max_views), size, board, model).camera)
            except CalibrationError as exc:
                raise CalibrationError(f"{name}: {exc}") from None
    else:
        cams = list(cameras)
    n = len(cams)
    poses = [[None if d is None else _board_pose(d, cam) for d in dets] for dets, cam in zip(detections, cams)]

    # Pairs: camera b in camera a's frame, from every frame both saw the board in.
    shared: dict[tuple[int, int], int] = {}
    relative: dict[tuple[int, int], np.ndarray] = {}
    for a in range(n):
        for b in range(a + 1, n):
            both = [f for f in range(frames) if poses[a][f] is not None and poses[b][f] is not None]
            shared[(a, b)] = len(both)
            if len(both) >= MIN_SHARED_FRAMES:
                T = [poses[a][f] @ np.linalg.inv(poses[b][f]) for f in both]
                rel = np.eye(4)
                rel[:3, :3] = _rotation_mean([t[:3, :3] for t in T])
                rel[:3, 3] = np.median([t[:3, 3] for t in T], axis=0)
                relative[(a, b)], relative[(b, a)] = rel, np.linalg.inv(rel)
    # Camera poses in the reference camera's frame, along the best-shared pairs (Prim).
    cam_to_rig: dict[int, np.ndarray] = {0: np.eye(4)}
    while len(cam_to_rig) < n:
        best = max(((shared[min(a, b), max(a, b)], a, b) for a in cam_to_rig for b in range(n)
                    if b not in cam_to_rig and (a, b) in relative), default=None)
        if best is None:
            missing = [names[c] for c in range(n) if c not in cam_to_rig]
            raise CalibrationError(f"{', '.join(missing)}: never saw the board together with the other cameras "
                                   f"(need {MIN_SHARED_FRAMES} shared frames); film the board where both see it")
        _, a, b = best
        cam_to_rig[b] = cam_to_rig[a] @ relative[(a, b)]

    # The board's pose in the rig frame per frame: the mean over the cameras that saw it.
    board_to_rig: dict[int, np.ndarray] = {}
    for f in range(frames):
        seen = [cam_to_rig[c] @ poses[c][f] for c in range(n) if poses[c][f] is not None]
        if seen:
            T = np.eye(4)
            T[:3, :3] = _rotation_mean([s[:3, :3] for s in seen])
            T[:3, 3] = np.mean([s[:3, 3] for s in seen], axis=0)
            board_to_rig[f] = T

    observations = [(c, f, detections[c][f]) for c in range(n) for f in board_to_rig
                    if poses[c][f] is not None]
    board_frames = sorted(board_to_rig)
    slot = {f: i for i, f in enumerate(board_frames)}

    def pack() -> np.ndarray:
        out = []
        for c in range(1, n):
            T = np.linalg.inv(cam_to_rig[c])  # rig -> camera
            out += [cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]]
        for f in board_frames:
            T = board_to_rig[f]
            out += [cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]]
        return np.concatenate(out)

    def rig_to_camera(params, c) -> np.ndarray:
        if c == 0:
            return np.eye(4)
        k = 6 * (c - 1)
        return _pose_matrix(params[k:k + 3], params[k + 3:k + 6])

    def board_to_rig_of(params, f) -> np.ndarray:
        k = 6 * (n - 1) + 6 * slot[f]
        return _pose_matrix(params[k:k + 3], params[k + 3:k + 6])

    def residuals(params) -> np.ndarray:
        out = []
        for c, f, det in observations:
            T = rig_to_camera(params, c) @ board_to_rig_of(params, f)
            rvec = cv2.Rodrigues(T[:3, :3])[0]
            out.append((_project(cams[c], rvec, T[:3, 3], det.object_points.astype(np.float64))
                        - det.image_points).ravel())
        return np.concatenate(out)

    x0 = pack()
    rows = sum(2 * len(det.ids) for _, _, det in observations)
    sparsity = lil_matrix((rows, x0.size), dtype=np.int8)
    r = 0
    for c, f, det in observations:
        m = 2 * len(det.ids)
        if c > 0:
            sparsity[r:r + m, 6 * (c - 1):6 * c] = 1
        k = 6 * (n - 1) + 6 * slot[f]
        sparsity[r:r + m, k:k + 6] = 1
        r += m
    fit = least_squares(residuals, x0, jac_sparsity=sparsity, loss="huber", f_scale=HUBER_PX, x_scale="jac",
                        method="trf", max_nfev=200)
    res = fit.fun.reshape(-1, 2)
    per_camera_sq = np.zeros(n)
    per_camera_count = np.zeros(n)
    r = 0
    for c, f, det in observations:
        m = len(det.ids)
        per_camera_sq[c] += float((res[r:r + m] ** 2).sum())
        per_camera_count[c] += m
        r += m
    rig_cameras = []
    for c in range(n):
        T = np.linalg.inv(rig_to_camera(fit.x, c))  # camera -> rig
        rig_cameras.append(RigCamera(names[c], cams[c], T[:3, :3], T[:3, 3],
                                     rms=math.sqrt(per_camera_sq[c] / max(per_camera_count[c], 1)),
                                     frames=sum(p is not None for p in poses[c])))
    total = math.sqrt(float((res ** 2).sum(1).mean()))
    return RigCalibration(rig_cameras, board, total, frames, shared)


# --- the rig file ----------------------------------------------------------------------------
def save_multi_camera_rig(result: RigCalibration, path: str | Path) -> None:
    """Write the rig as flat fields (YAML through ``cv2.FileStorage``, or JSON):
    ``rig: multi_camera``, ``cameras: N``, and per camera ``camN_name``, ``camN_model``,
    ``camN_image_width``/``height``, ``camN_camera_matrix``, ``camN_dist_coeffs``,
    ``camN_rotation`` (3x3) and ``camN_translation`` (3, metres; ``p_rig = R p_cam + t``),
    ``camN_rms`` (px)."""
    write_multi_camera_rig(result.cameras, path, board=result.board.describe(), rms=result.rms)


def write_multi_camera_rig(cameras: Sequence[RigCamera], path: str | Path, *, board: str = "none",
                           rms: float = math.nan) -> None:
    """Write ``cameras`` as a rig file (the fields of :func:`save_multi_camera_rig`), e.g. a
    rig known by construction (a virtual one for tests and benchmarks); ``board``: what it
    was calibrated with."""
    fields: dict = {"rig": "multi_camera", "cameras": len(cameras), "board": board,
                    "rms_reprojection_error": float(rms)}
    for i, c in enumerate(cameras):
        fields.update({f"cam{i}_name": c.name, f"cam{i}_model": c.camera.model,
                       f"cam{i}_image_width": c.camera.width, f"cam{i}_image_height": c.camera.height,
                       f"cam{i}_camera_matrix": c.camera.K, f"cam{i}_dist_coeffs": c.camera.dist,
                       f"cam{i}_rotation": c.rotation, f"cam{i}_translation": c.translation,
                       f"cam{i}_rms": float(c.rms)})
    write_fields(path, fields, comment="smplstream multi-camera rig: p_rig = rotation @ p_cam + translation (metres)")


def load_multi_camera_rig(path: str | Path) -> list[RigCamera]:
    """The cameras of a rig file written by :func:`save_multi_camera_rig`."""
    fields = read_fields(path)
    where = str(path)
    if get_str(fields, "rig", where) != "multi_camera":
        raise FileFormatError(f"{path}: rig: expected multi_camera")
    count = int(fields.get("cameras", 0))
    if count < 2:
        raise FileFormatError(f"{path}: cameras: a rig needs at least 2, got {count}")
    out = []
    for i in range(count):
        p = f"cam{i}_"
        K = get_array(fields, p + "camera_matrix", where, shape=(3, 3))
        dist = np.ravel(fields.get(p + "dist_coeffs", np.zeros(0)))
        cam = Camera(get_str(fields, p + "model", where), int(fields[p + "image_width"]),
                     int(fields[p + "image_height"]), K, dist)
        out.append(RigCamera(get_str(fields, p + "name", where), cam, get_array(fields, p + "rotation", where, shape=(3, 3)),
                             np.ravel(get_array(fields, p + "translation", where)), float(fields.get(p + "rms", math.nan))))
    return out


def poses_from_first(cameras: Sequence[RigCamera]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Where each camera after the first sees a point of the first camera's frame: per
    camera ``(R, t)`` with ``p_cam = R @ p_first + t`` (metres), from the rig poses
    (``p_rig = rotation @ p_cam + translation``)."""
    R0, t0 = np.asarray(cameras[0].rotation, np.float64), np.asarray(cameras[0].translation, np.float64)
    out = []
    for c in cameras[1:]:
        Ri, ti = np.asarray(c.rotation, np.float64), np.asarray(c.translation, np.float64)
        out.append((Ri.T @ R0, Ri.T @ (t0 - ti)))
    return out

"""Multi-camera rig calibration: a known synthetic rig of three cameras is recovered from
rendered views of one board, and a rig file round-trips. (On caliscope's real four-camera
ChArUco videos, see docs/calibration.md: centres within 2 cm and orientations within 2.5
degrees of caliscope's own result.)"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec
from calibration.calibrate import CalibrationError
from calibration.rig_calibration import calibrate_rig, load_multi_camera_rig, save_multi_camera_rig
from calibration.synthetic import BoardRenderer, board_poses, reference_pinhole

BOARD = BoardSpec(9, 6, 0.03)


def _pose(yaw_deg: float, x: float, z: float = 0.0) -> np.ndarray:
    """Camera -> rig (4, 4): a camera at (x, 0, z) turned by yaw about the rig's y axis."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.0, math.radians(yaw_deg), 0.0]))[0]
    T[:3, 3] = [x, 0.0, z]
    return T


RIG = [_pose(0, 0.0), _pose(-18, 0.35, 0.05), _pose(15, -0.3, -0.04)]


@pytest.fixture(scope="module")
def rig_folders(tmp_path_factory):
    """20 synchronised frames of the board, each seen by the cameras that see it whole."""
    camera = reference_pinhole()
    rng = np.random.default_rng(3)
    renderer = BoardRenderer(camera, BOARD)
    folders = [tmp_path_factory.mktemp(f"cam{i}") for i in range(len(RIG))]
    obj = BOARD.object_points().astype(np.float64)
    frames = 0
    for rvec, tvec in board_poses(camera, BOARD, 60, rng, spacing=(0.035, 0.05), spread=0.4, max_tilt_deg=30):
        board_to_rig = np.eye(4)
        board_to_rig[:3, :3], board_to_rig[:3, 3] = cv2.Rodrigues(rvec)[0], tvec
        images = []
        for cam_to_rig in RIG:
            T = np.linalg.inv(cam_to_rig) @ board_to_rig  # board -> this camera
            pts = obj @ T[:3, :3].T + T[:3, 3]
            px = camera.project(pts) if (pts[:, 2] > 0.1).all() else None
            whole = px is not None and np.isfinite(px).all() and ((px > 10) & (px < [630, 470])).all()
            rv = cv2.Rodrigues(T[:3, :3])[0].ravel()
            images.append(renderer.render(rv, T[:3, 3], 2.0, rng=rng) if whole else np.full((480, 640), 150, np.uint8))
        for folder, image in zip(folders, images):
            cv2.imwrite(str(folder / f"frame{frames:03d}.png"), image)
        frames += 1
        if frames == 20:
            break
    return folders, camera


def test_a_known_three_camera_rig_is_recovered(rig_folders, tmp_path):
    folders, camera = rig_folders
    result = calibrate_rig(folders, BOARD, cameras=[camera] * 3)
    assert result.rms < 0.5 and all(c.frames >= 5 for c in result.cameras)
    for got, true in zip(result.cameras, RIG):
        angle = math.degrees(math.acos(np.clip((np.trace(got.rotation.T @ true[:3, :3]) - 1) / 2, -1, 1)))
        assert angle < 0.3 and np.linalg.norm(got.translation - true[:3, 3]) < 0.005, got.name
    path = tmp_path / "rig.yaml"
    save_multi_camera_rig(result, path)
    loaded = load_multi_camera_rig(path)
    assert [c.name for c in loaded] == [c.name for c in result.cameras]
    np.testing.assert_allclose(loaded[1].rotation, result.cameras[1].rotation, atol=1e-9)
    np.testing.assert_allclose(loaded[2].camera.K, camera.K, atol=1e-9)


def test_a_camera_that_never_sees_the_board_with_the_others_is_named(rig_folders, tmp_path):
    folders, camera = rig_folders
    blind = tmp_path / "blind"
    blind.mkdir()
    for path in sorted(folders[0].glob("*.png")):
        cv2.imwrite(str(blind / path.name), np.full((480, 640), 150, np.uint8))
    with pytest.raises(CalibrationError, match="blind: never saw the board together with the other cameras"):
        calibrate_rig([folders[0], blind], BOARD, cameras=[camera] * 2)

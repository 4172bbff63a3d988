"""Calibration on real footage (caliscope's recordings, BSD-2-Clause: tests/data/README.md):
webcam frames of a hand-held chessboard and a ChArUco video of a board printed inverted on a
transparent sheet, seen from behind. The detector must find every board plain OpenCV finds, at any image size;
four good views calibrate with a stated error; the ChArUco camera's intrinsics come out near
caliscope's own calibration of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec
from calibration.calibrate import CalibrationError, calibrate_images, calibrate_source, iter_frames
from calibration.cli import main

DATA = Path(__file__).parent / "data" / "calibration"
CHESSBOARD = DATA / "chessboard"
CHECKER = BoardSpec.parse("9x6", 25)
CHARUCO = BoardSpec(3, 4, 0.054, True, 0.0405, "DICT_4X4_1000")
CALISCOPE_CAM_1 = {"fx": 703.96, "fy": 706.24, "cx": 626.01, "cy": 348.86}  # its camera_array.toml


def gray(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)


def test_real_chessboard_frames_found_where_plain_opencv_finds_them():
    ours, plain = {}, {}
    for path in sorted(CHESSBOARD.glob("*.jpg")):
        image = gray(path)
        detection = CHECKER.detect(image)
        ok, corners = cv2.findChessboardCorners(image, (9, 6), flags=cv2.CALIB_CB_ADAPTIVE_THRESH
                                                | cv2.CALIB_CB_NORMALIZE_IMAGE)
        ours[path.name], plain[path.name] = detection is not None, bool(ok)
        if detection is not None and ok:
            refined = cv2.cornerSubPix(image, corners, (11, 11), (-1, -1),
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-3)).reshape(-1, 2)
            # The same corners (to the refinement windows' difference), from either end.
            err = min(np.linalg.norm(detection.image_points - refined, axis=1).mean(),
                      np.linalg.norm(detection.image_points[::-1] - refined, axis=1).mean())
            assert err < 0.2, path.name
    assert ours == plain
    assert sum(ours.values()) == 4 and not ours["cam_0_frame_000.jpg"]  # the negative frame


def test_a_small_board_in_a_large_image_is_found_by_the_full_size_tries():
    """A real board shrunk into a 4096 px frame: too small for the reduced-size tries, found
    at full size, its corners where the original frame's went."""
    image = gray(CHESSBOARD / "cam_0_frame_100.jpg")
    reference = CHECKER.detect(image)
    shrink, (x0, y0) = 0.5, (900, 300)
    canvas = np.full((2304, 4096), 128, np.uint8)
    small = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    assert CHECKER.detect(canvas, tries="fast") is None
    found = CHECKER.detect(canvas)
    assert found is not None and found.how == "SB detector at full size"
    expected = (reference.image_points + 0.5) * shrink - 0.5 + [x0, y0]
    assert min(np.abs(found.image_points - expected).max(), np.abs(found.image_points[::-1] - expected).max()) < 0.5


def test_four_real_views_calibrate_with_a_warning_and_a_per_frame_report(tmp_path, capsys):
    folder = tmp_path / "shots"
    shutil.copytree(CHESSBOARD, folder)
    out = tmp_path / "cam.yaml"
    assert main([str(folder), "--board", "9x6", "--square", "25", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in printed.splitlines() if line.startswith("cam_0_frame_")}
    assert len(lines) == 5
    assert "not found (tried SB at 1280 px" in lines["cam_0_frame_000.jpg"]
    assert all("found (" in lines[f"cam_0_frame_{n}.jpg"] and lines[f"cam_0_frame_{n}.jpg"].endswith("used")
               for n in ("100", "200", "300", "1070"))
    assert "warning: only 4 board views (5 or more recommended): expect the focal length to be off by about" in printed
    result = calibrate_images(iter_frames(folder), CHECKER)
    assert len(result.views) == 4 and 0 < result.focal_sigma[0] < 0.10 * result.camera.fx
    assert (result.camera.cx, result.camera.cy) == (639.5, 359.5)  # the few-views model: at the centre
    assert out.is_file()


def test_fisheye_from_four_views_is_refused_with_the_count():
    with pytest.raises(CalibrationError, match=r"only 4 usable board views.*board found in 4 of 5 frames"):
        calibrate_images(iter_frames(CHESSBOARD), CHECKER, "fisheye")


def test_charuco_video_of_an_inverted_board_seen_from_behind_matches_caliscope():
    result = calibrate_source(DATA / "charuco_cam_1.mp4", CHARUCO)
    assert len(result.views) >= 15
    assert {v.detection.how for v in result.views} == {"ChArUco, inverted (white markers), from behind"}
    cam, sigma = result.camera, result.focal_sigma
    # Within 3 sigma of the fit's own error and 3 % of caliscope's focal length.
    for ours, theirs, s in ((cam.fx, CALISCOPE_CAM_1["fx"], sigma[0]), (cam.fy, CALISCOPE_CAM_1["fy"], sigma[1])):
        assert abs(ours - theirs) < max(3 * s, 0.03 * theirs)
    assert abs(cam.cx - CALISCOPE_CAM_1["cx"]) < 25 and abs(cam.cy - CALISCOPE_CAM_1["cy"]) < 25
    assert result.rms < 0.5

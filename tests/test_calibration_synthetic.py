"""Calibration from synthetic board images rendered through known pinhole and fisheye cameras."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.board import BoardError, BoardSpec
from calibration.calibrate import (
    CalibrationError,
    calibrate_images,
    calibrate_source,
    detect_views,
    draw_coverage,
    select_views,
)
from calibration.camera_file import load_camera, load_camera_metadata
from calibration.cli import main
from calibration.synthetic import BoardRenderer, board_poses, reference_fisheye, reference_pinhole, synthetic_views

cv2.setNumThreads(1)

CHECKER = BoardSpec(9, 6, 0.03)
CHARUCO = BoardSpec(9, 6, 0.03, charuco=True, marker=0.022, dictionary="DICT_5X5_100")


@pytest.fixture(scope="module")
def pinhole_views():
    return synthetic_views(reference_pinhole(), CHECKER, 14, seed=11, noise_sigma=2.0)


@pytest.fixture(scope="module")
def fisheye_views():
    return synthetic_views(reference_fisheye(), CHECKER, 14, seed=12, noise_sigma=2.0)


def named(images):
    return [(f"view{i:02d}", im) for i, im in enumerate(images)]


def assert_recovers(result, true, focal_pct=1.0, pp_px=2.0):
    cam = result.camera
    assert cam.model == true.model and cam.size == true.size
    assert abs(cam.fx / true.fx - 1) * 100 < focal_pct, (cam.fx, true.fx)
    assert abs(cam.fy / true.fy - 1) * 100 < focal_pct, (cam.fy, true.fy)
    assert abs(cam.cx - true.cx) < pp_px and abs(cam.cy - true.cy) < pp_px, (cam.cx, cam.cy, true.cx, true.cy)
    # the whole model, not just K: the recovered camera images points where the true one does
    rng = np.random.default_rng(0)
    uv = rng.uniform([40, 40], [true.width - 40, true.height - 40], (200, 2))
    rays = true.unproject(uv)
    assert np.abs(cam.project(rays) - uv).max() < 2.0


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_checkerboard_calibration_recovers_intrinsics(model, pinhole_views, fisheye_views):
    true = reference_pinhole() if model == "pinhole" else reference_fisheye()
    images = pinhole_views if model == "pinhole" else fisheye_views
    res = calibrate_images(named(images), CHECKER, model)
    assert len(res.views) >= 10
    assert_recovers(res, true)
    assert res.rms < 0.3  # 2 gray levels of noise on a 200-level board
    assert res.per_view_errors.shape == (len(res.views),) and (res.per_view_errors < 0.5).all()
    assert res.coverage > 0.5


def test_wrong_model_is_visible_in_rms(fisheye_views):
    """A fisheye calibrated as a pinhole fits worse: the RMS tells the user to switch --model."""
    as_fisheye = calibrate_images(named(fisheye_views), CHECKER, "fisheye")
    as_pinhole = calibrate_images(named(fisheye_views), CHECKER, "pinhole")
    assert as_pinhole.rms > 2 * as_fisheye.rms


def test_charuco_with_partly_visible_boards():
    true = reference_pinhole()
    renderer = BoardRenderer(true, CHARUCO)
    rng = np.random.default_rng(21)
    poses = board_poses(true, CHARUCO, 8, rng) + board_poses(true, CHARUCO, 6, rng, min_inside=0.4, spread=1.0)
    images = [renderer.render(r, t, 2.0, rng=rng) for r, t in poses]
    partial = [CHARUCO.detect(im) for im in images[8:]]
    assert all(d is not None and 6 <= len(d.ids) < CHARUCO.num_corners for d in partial)
    res = calibrate_images(named(images), CHARUCO, "pinhole")
    assert any(len(v.detection.ids) < CHARUCO.num_corners for v in res.views)
    assert_recovers(res, true)


def test_blurred_and_duplicate_views_are_rejected(pinhole_views):
    images = named(pinhole_views[:8])
    images.append(("copy_of_view03", pinhole_views[3].copy()))
    noisy = np.clip(pinhole_views[5].astype(np.int16) + np.random.default_rng(0).integers(-2, 3, pinhole_views[5].shape), 0, 255)
    images.append(("noisy_view05", noisy.astype(np.uint8)))
    images.append(("blurred_view06", cv2.GaussianBlur(pinhole_views[6], (0, 0), 2.5)))
    views, rejected, size, n = detect_views(images, CHECKER)
    names = {v.name for v in views}
    assert n == 11 and size == (640, 480)
    assert rejected["blurred"] == ["blurred_view06"]  # sharp views are not rejected
    assert len([x for x in ("view03", "copy_of_view03") if x in names]) == 1
    assert len([x for x in ("view05", "noisy_view05") if x in names]) == 1
    assert len(views) == 8


def test_view_selection_keeps_coverage(pinhole_views):
    views, _, size, _ = detect_views(named(pinhole_views), CHECKER)
    chosen = select_views(views, size, CHECKER, 6)
    assert len(chosen) == 6
    all_x = np.concatenate([v.detection.image_points[:, 0] for v in chosen])
    # picks boards on both sides of the image, not six from one place
    assert all_x.min() < size[0] * 0.3 and all_x.max() > size[0] * 0.7


def test_calibration_with_more_views_than_max_views(pinhole_views):
    res = calibrate_images(named(pinhole_views), CHECKER, "pinhole", max_views=8)
    assert len(res.views) == 8 and len(res.rejected["not selected"]) == len(pinhole_views) - 8
    assert_recovers(res, reference_pinhole())


def test_too_few_views_is_a_clear_error(pinhole_views):
    with pytest.raises(CalibrationError, match="only 2 usable board views"):
        calibrate_images(named(pinhole_views[:2]), CHECKER)
    with pytest.raises(CalibrationError, match="only 3 usable board views"):
        calibrate_images(named(pinhole_views[:3]), CHECKER, "fisheye")  # no error estimate: refused
    with pytest.raises(CalibrationError, match=r"only 0 usable.*board found in 0 of 6 frames"):
        calibrate_images(named(pinhole_views[:6]), BoardSpec(7, 5, 0.03))  # wrong board size


def test_three_views_calibrate_with_a_warning_that_states_the_focal_error(pinhole_views):
    res = calibrate_images(named(pinhole_views[:3]), CHECKER)
    assert len(res.views) == 3 and len(res.warnings) == 1 and "only 3 board views" in res.warnings[0]
    assert "warning: only 3 board views" in res.summary() and "warnings" in res.metadata()
    true = reference_pinhole()
    sigma = res.focal_sigma[0]
    assert 0 < sigma < 0.05 * true.fx
    assert abs(res.camera.fx - true.fx) < 4 * sigma + 1.0  # the stated error is honest


def test_cli_folder(tmp_path, fisheye_views, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, im in enumerate(fisheye_views):
        cv2.imwrite(str(folder / f"shot{i:02d}.png"), im)
    out, cov = tmp_path / "cam.yaml", tmp_path / "coverage.png"
    rc = main([str(folder), "--board", "9x6", "--square", "30", "--model", "fisheye", "--out", str(out),
               "--coverage", str(cov)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "RMS reprojection error" in printed and "per-view RMS" in printed
    cam = load_camera(out)
    assert_recovers(type("R", (), {"camera": cam})(), reference_fisheye())
    meta = load_camera_metadata(out)
    assert meta["rms_reprojection_error"] < 0.3 and meta["num_views"] >= 10
    assert meta["per_view_errors"].size == meta["num_views"]
    pic = cv2.imread(str(cov))
    assert pic is not None and pic.shape == (480, 640, 3) and (pic > 100).any()


def test_calibrate_from_video(tmp_path, pinhole_views):
    path = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    assert writer.isOpened()
    for im in pinhole_views[:10]:
        for _ in range(3):  # a board held still for a few frames: duplicates
            writer.write(cv2.cvtColor(im, cv2.COLOR_GRAY2BGR))
    writer.release()
    res = calibrate_source(path, CHECKER, "pinhole")
    assert res.frames_read == 30
    assert len(res.views) == 10 and len(res.rejected["duplicate"]) == 20
    assert_recovers(res, reference_pinhole())
    assert draw_coverage(res).shape == (480, 640, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere", "--board", "9x6", "--square", "30"], "no such file or folder"),
        (["{folder}", "--board", "9by6", "--square", "30"], "--board: expected COLSxROWS"),
        (["{folder}", "--board", "9x6", "--square", "-3"], "square size must be positive"),
        (["{folder}", "--board", "9x6", "--square", "30", "--charuco"], "--charuco needs --marker"),
        (["{folder}", "--board", "9x6", "--square", "30", "--charuco", "--marker", "22", "--dict", "DICT_9"],
         "unknown ArUco dictionary"),
        (["{folder}", "--board", "9x6", "--square", "30", "--charuco", "--marker", "40"], "smaller than the square"),
        (["{empty}", "--board", "9x6", "--square", "30"], "no images"),
        (["{folder}", "--board", "7x5", "--square", "30"], "only 0 usable board views"),
        (["{folder}", "--board", "9x6", "--square", "30", "--coverage", "{folder}/cov"], "must end in .png"),
    ],
)
def test_cli_bad_input(tmp_path, pinhole_views, capsys, args, message):
    folder, empty = tmp_path / "imgs", tmp_path / "empty"
    folder.mkdir()
    empty.mkdir()
    for i, im in enumerate(pinhole_views[:5]):
        cv2.imwrite(str(folder / f"{i}.png"), im)
    argv = [a.format(folder=folder, empty=empty) for a in args] + ["--out", str(tmp_path / "cam.yaml")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cam.yaml").exists()


def test_board_spec_parse():
    b = BoardSpec.parse("9x6", 25)
    assert (b.cols, b.rows, b.square) == (9, 6, 0.025)
    assert b.object_points().shape == (54, 3) and b.object_points()[1, 0] == pytest.approx(0.025)
    with pytest.raises(BoardError, match="at least 2x2"):
        BoardSpec.parse("1x6", 25)


def test_detection_at_reduced_size_is_refined_at_full_resolution(pinhole_views):
    """Large frames are searched downscaled; corners must still be full-resolution accurate."""
    for im in pinhole_views[:4]:
        full = CHECKER.detect(im)
        reduced = CHECKER.detect(im, max_side=400)
        assert full is not None and reduced is not None
        a, b = full.image_points, reduced.image_points
        err = min(np.abs(a - b).max(), np.abs(a[::-1] - b).max())  # the board may be found from either end
        assert err < 0.1

"""BlazePose detector and landmark engines on real frames of the test clip."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.perception.onnx_session import ASSETS
from engines.perception.pose_detector import ANCHOR_OPTIONS, PoseDetector, ssd_anchors, weighted_nms
from engines.perception.pose_landmarks import PoseLandmarker, Roi, refine_with_heatmap

CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"


@pytest.fixture(scope="module")
def detector() -> PoseDetector:
    return PoseDetector()


@pytest.fixture(scope="module")
def landmarker() -> PoseLandmarker:
    return PoseLandmarker()


def test_assets_ship_with_licence():
    for name in ("pose_detection.onnx", "pose_landmark_full.onnx", "LICENSE", "NOTICE"):
        assert (ASSETS / name).is_file(), name
    assert "Apache License" in (ASSETS / "LICENSE").read_text()


def test_anchor_layout():
    a = ssd_anchors(**ANCHOR_OPTIONS)
    assert a.shape == (2254, 4)
    # 28x28 cells x 2 anchors (stride 8), 14x14 x 2 (16), 7x7 x 6 (three stride-32 layers).
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28, 1, 1])
    np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14, 1, 1])
    np.testing.assert_allclose(a[1568 + 392 : 1568 + 392 + 6, :2], [[0.5 / 7, 0.5 / 7]] * 6)
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7, 1, 1])


def test_weighted_nms_merges_overlaps_and_keeps_separate_people():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 4, 2), np.float32)
    kps[1] += 1.0
    out = weighted_nms(np.array([0.9, 0.6, 0.8], np.float32), boxes, kps, 0.3)
    assert len(out) == 2
    score, box, kp = out[0]
    assert score == pytest.approx(0.9)
    np.testing.assert_allclose(box[0], 0.6 / 1.5, rtol=1e-5)  # score-weighted mean of x1
    np.testing.assert_allclose(kp[0, 0], 0.6 / 1.5, rtol=1e-5)


def test_detector_finds_walker_and_maps_back_to_image(detector, frame120):
    dets = detector(frame120)
    assert dets and dets[0].score > 0.9
    # Hand-read from the frame: her hips are near (820, 715), top of the head near y=525.
    hip = dets[0].hip_center
    assert abs(hip[0] - 820) < 40 and abs(hip[1] - 715) < 50, hip
    assert 180 < dets[0].body_radius < 280  # hip to top of the head, ~225 px
    # Mirroring the frame mirrors the detection: checks the letterbox mapping
    # (a mapping error shows as hundreds of pixels; the network itself is not
    # exactly mirror-symmetric, ~20 px here).
    mirrored = detector(np.ascontiguousarray(frame120[:, ::-1]))
    w = frame120.shape[1]
    assert abs((w - 1 - mirrored[0].hip_center[0]) - hip[0]) < 35
    assert abs(mirrored[0].hip_center[1] - hip[1]) < 35


def test_detector_finds_several_people(detector, frame120):
    # Two copies of the walker side by side on a grey canvas.
    person = frame120[480:994, 620:1020]
    canvas = np.full((700, 1400, 3), 120, np.uint8)
    canvas[100:614, 150:550] = person
    canvas[100:614, 850:1250] = person
    dets = detector(canvas)
    assert len(dets) == 2, [d.score for d in dets]
    xs = sorted(d.hip_center[0] for d in dets)
    assert abs(xs[1] - xs[0] - 700) < 20


def test_roi_geometry():
    up = Roi.from_alignment([100, 200], [100, 100], scale=1.0)  # scale point straight above
    assert up.rotation == pytest.approx(0.0) and up.size == pytest.approx(200)
    m = up.crop_to_image(256)
    np.testing.assert_allclose(m @ [128, 128, 1], [100, 200])
    np.testing.assert_allclose(m @ [128, 0, 1], [100, 100])  # crop top = towards the scale point
    right = Roi.from_alignment([100, 200], [200, 200], scale=1.0)  # body lying, head to the right
    assert right.rotation == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(right.crop_to_image(256) @ [128, 0, 1], [200, 200], atol=1e-9)


def test_landmarks_follow_a_rotated_frame(detector, landmarker, frame120):
    roi = Roi.from_alignment(*detector(frame120)[0].keypoints[:2])
    (ref,) = landmarker(frame120, [roi])
    assert ref.presence > 0.9
    # Rotate the frame 90 deg clockwise and the ROI with it: same crop, so the
    # landmarks must rotate with the image.
    h, w = frame120.shape[:2]
    rot = cv2.rotate(frame120, cv2.ROTATE_90_CLOCKWISE)  # (x, y) -> (h - 1 - y, x)
    c = roi.center
    roi_r = Roi(np.array([h - 1 - c[1], c[0]]), roi.size, roi.rotation + math.pi / 2)
    (got,) = landmarker(rot, [roi_r])
    expect = np.column_stack([h - 1 - ref.image[:, 1], ref.image[:, 0]])
    err = np.linalg.norm(got.image[:, :2] - expect, axis=1)
    ok = ref.confidence > 0.5
    assert np.median(err[ok]) < 3.0 and err[ok].max() < 10.0, err[ok]
    # The world landmarks turn with the image too (the crop is the same, so the network's
    # own output is; they are brought into the image's axes by the ROI's rotation).
    expect_world = np.column_stack([-ref.world[:, 1], ref.world[:, 0], ref.world[:, 2]])
    np.testing.assert_allclose(got.world, expect_world, atol=2e-3)


def test_batch_equals_single(landmarker, detector, frame120):
    roi = Roi.from_alignment(*detector(frame120)[0].keypoints[:2])
    other = Roi(roi.center + [300, -100], roi.size * 0.8, 0.3)
    single = landmarker(frame120, [roi])[0]
    both = landmarker(frame120, [roi, other])
    np.testing.assert_allclose(both[0].image, single.image, atol=1e-2)
    np.testing.assert_allclose(both[0].world, single.world, atol=1e-4)


def test_next_roi_stays_on_the_person(landmarker, detector, frame120):
    roi = Roi.from_alignment(*detector(frame120)[0].keypoints[:2])
    (a,) = landmarker(frame120, [roi])
    (b,) = landmarker(frame120, [a.next_roi()])
    assert b.presence > 0.9
    assert np.median(np.linalg.norm(a.image[:, :2] - b.image[:, :2], axis=1)) < 5.0


def test_heatmap_refinement_moves_to_peak():
    hm = np.full((64, 64, 1), -10.0, np.float32)
    hm[20, 30, 0] = 10.0  # single confident cell at column 30, row 20
    xy = np.array([[31 * 4.0, 21 * 4.0]])  # nearby, in 256-px crop coordinates
    out = refine_with_heatmap(xy, hm)
    np.testing.assert_allclose(out[0], [30 * 4.0, 20 * 4.0], atol=0.1)
    low = refine_with_heatmap(xy, np.full((64, 64, 1), -10.0, np.float32))
    np.testing.assert_array_equal(low, xy)  # no confident cell: unchanged


def test_bad_input_is_a_clear_error(detector, landmarker):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        landmarker(np.zeros((10, 10, 3), np.float32), [Roi(np.array([5.0, 5.0]), 10.0, 0.0)])


def test_tile_grid_covers_image():
    from engines.perception.pose_detector import tile_grid

    tiles = tile_grid(768, 576, 288, 0.25)
    cover = np.zeros((576, 768), bool)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 == 288 and y1 - y0 == 288
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert tile_grid(100, 50, 288, 0.25) == [(0, 0, 100, 50)]


def test_tiles_find_a_small_person(frame120):
    # The walker shrunk to ~150 px tall in a 1600x900 frame: ~21 px in the
    # detector's 224x224 view, too small; 400-px tiles see her at ~80 px.
    person = cv2.resize(frame120[480:994, 620:1020], None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    canvas = np.full((900, 1600, 3), 120, np.uint8)
    canvas[500 : 500 + person.shape[0], 1000 : 1000 + person.shape[1]] = person
    assert PoseDetector()(canvas) == []
    dets = PoseDetector(tile_size=400)(canvas)
    assert len(dets) == 1
    hip = dets[0].hip_center
    assert 1000 < hip[0] < 1000 + person.shape[1] and 500 < hip[1] < 500 + person.shape[0]

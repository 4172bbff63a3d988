"""End to end on the real clip: detector, landmarks and tracker together.

tests/data/sports2d_demo.mp4 (1768x994, 230 frames): a man stands and jumps on
a box (upper half of the frame) and jumps down near frame 170; a woman walks in
from the right from about frame 60, across the frame under the box, and leaves
on the left near frame 200. Every second frame is processed to keep the test
short; the hand-verified points were read by eye from zoomed frames.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engines.perception.person_keypoints import PersonKeypoints

DATA = Path(__file__).parent / "data"
CLIP = DATA / "sports2d_demo.mp4"
POINTS = json.loads((DATA / "perception" / "sports2d_hand_points.json").read_text())
JOINTS = {"nose": [0], "mid_hip": [23, 24], "left_ankle": [27], "right_ankle": [28], "left_wrist": [15]}
STRIDE = 2


def _run(pk: PersonKeypoints) -> dict:
    import cv2

    cv2.setNumThreads(1)
    out = {}
    with av.open(str(CLIP)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % STRIDE:
                continue
            out[i] = pk.process(frame.to_ndarray(format="rgb24"), i // STRIDE)
    return out


@pytest.fixture(scope="module")
def clip_results():
    return _run(PersonKeypoints(detect_every=5))  # every 10 source frames at this stride


def _walker_id(results) -> int:
    # The walker is the person in the lower half of the frame at frame 120.
    lower = [p for p in results[120] if (p.box[1] + p.box[3]) / 2 > 500]
    assert len(lower) == 1, f"expected one person in the lower half at frame 120, got {len(lower)}"
    return lower[0].track_id


def test_walker_keeps_one_id_through_the_clip(clip_results):
    wid = _walker_id(clip_results)
    frames = [i for i in clip_results if 80 <= i <= 194]
    seen = [i for i in frames if any(p.track_id == wid for p in clip_results[i])]
    # Followed on (nearly) every processed frame while fully in view.
    assert len(seen) >= 0.95 * len(frames), f"walker id {wid} present in {len(seen)}/{len(frames)} frames"
    for i, persons in clip_results.items():
        for p in persons:
            cy = (p.box[1] + p.box[3]) / 2
            if i < 165:
                # Until the man jumps down, the walker is always below y=500 and
                # the man above it: an id never jumps between them.
                assert (p.track_id == wid) == (cy > 500), f"frame {i}: id {p.track_id} at centre y {cy:.0f}"


def test_both_people_found(clip_results):
    ids_upper = {p.track_id for i in range(60, 160, STRIDE) for p in clip_results[i] if (p.box[1] + p.box[3]) / 2 < 500}
    assert len(ids_upper) == 1, f"the man on the box should hold one id over frames 60-160, got {ids_upper}"
    two = [i for i in range(80, 160, STRIDE) if len(clip_results[i]) == 2]
    assert len(two) >= 0.9 * len(range(80, 160, STRIDE))


@pytest.mark.parametrize("frame", sorted(int(k) for k in POINTS["points"]))
def test_keypoints_match_hand_points(clip_results, frame):
    tol = POINTS["tolerance_px"]
    persons = clip_results[frame]
    for who, joints in POINTS["points"][str(frame)].items():
        ref_mid = np.asarray(joints["mid_hip"], float)
        # The person whose landmark hip centre is nearest the hand-marked one.
        p = min(persons, key=lambda p: np.linalg.norm(p.keypoints33[[23, 24], :2].mean(0) - ref_mid))
        for name, ref in joints.items():
            kp = p.keypoints33[JOINTS[name]]
            got = kp[:, :2].mean(0)
            err = float(np.linalg.norm(got - np.asarray(ref, float)))
            assert err <= tol, f"frame {frame} {who} {name}: {got.round(1)} vs hand {ref} ({err:.1f} px)"
            assert kp[:, 2].min() > 0.5, f"frame {frame} {who} {name}: low confidence {kp[:, 2]}"


def test_outputs_are_well_formed(clip_results):
    p = clip_results[100][0]
    assert p.keypoints33.shape == (33, 3) and p.coco17.shape == (17, 3) and p.world33.shape == (33, 3)
    np.testing.assert_array_equal(p.coco17[0], p.keypoints33[0])  # nose
    np.testing.assert_array_equal(p.coco17[15], p.keypoints33[27])  # left ankle
    # World landmarks: metres about the hip centre; a standing adult is ~1-2 m tall.
    hip = p.world33[[23, 24]].mean(0)
    assert np.linalg.norm(hip) < 0.1
    extent = p.world33[:, 1].max() - p.world33[:, 1].min()
    assert 1.0 < extent < 2.2, extent


def test_background_detection_follows_the_same_people(clip_results):
    """Live mode's detector thread: the detector runs off the caller's thread, and the people
    it finds join a frame or two later than with the detector in line, under the same ids."""
    import threading

    pk = PersonKeypoints(detect_every=5, background_detection=True, background_nice=3)
    threads = set()
    nice: dict[str, int] = {}  # each calling thread's scheduling priority
    detect, detect_single, detect_in = pk.detector.__call__, pk.detector.detect_single, pk.detector.detect_in
    tiles = pk.detector.tiles

    def record():
        threads.add(threading.current_thread().name)
        if sys.platform.startswith("linux"):
            nice[threading.current_thread().name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    class Spy:
        def __call__(self, image):
            record()
            return detect(image)

        def detect_single(self, image):
            record()
            return detect_single(image)

        def detect_in(self, image, tiles):
            record()
            return detect_in(image, tiles)

        def tiles(self, width, height):
            return tiles(width, height)

    pk.detector = Spy()
    try:
        results = _run(pk)
    finally:
        pk.close()
    main = threading.current_thread().name
    assert main in threads, "with nobody followed the detector must run in line"
    assert any(t.startswith("detector") for t in threads), f"no detector call on the background thread: {threads}"
    assert pk.background_cpu_seconds > 0
    if nice:  # Linux: the background thread yields the cores to the frame's path
        background = [v for t, v in nice.items() if t.startswith("detector")]
        assert background and all(v == min(19, nice[main] + 3) for v in background), nice

    def first_two(res):  # first frame with both people followed
        return min(i for i, persons in res.items() if len(persons) == 2)

    # The second person joins within a few processed frames of the in-line run (the
    # background call finishes while the next frames' landmarks run).
    assert 0 <= first_two(results) - first_two(clip_results) <= 4 * STRIDE, (first_two(results), first_two(clip_results))
    wid = _walker_id(results)
    frames = [i for i in results if 80 <= i <= 194]
    seen = [i for i in frames if any(p.track_id == wid for p in results[i])]
    assert len(seen) >= 0.95 * len(frames)
    two = [i for i in range(80, 160, STRIDE) if len(results[i]) == 2]
    assert len(two) >= 0.9 * len(range(80, 160, STRIDE))


def test_a_detection_inside_or_around_a_followed_person_costs_no_landmark_call():
    """The detector's region for a person already followed is often another size than the
    landmarks' own (a box inside them, or one twice their size around them, centred alike):
    such a region goes to no landmark call (its landmarks would find the followed person
    again and be dropped), while the walker, who joins apart from the man, is still taken on."""
    from engines.perception.boxes import containment_matrix
    from engines.perception.person_keypoints import NEW_PERSON_CONTAINMENT, SAME_PERSON_CENTRE, _roi_box

    pk = PersonKeypoints(detect_every=1)  # a detector run on every frame: every chance to go wrong
    landmarker = pk.landmarker
    same_person, calls, newcomers = [], [], []

    def spy(image, rois):
        carried = pk._rois
        calls.append(len(rois))
        newcomers.append(len(rois) - len(carried))
        for roi in rois[len(carried):]:
            for c in carried:
                inside = containment_matrix(_roi_box(roi)[None], _roi_box(c)[None])[0, 0]
                offset = np.linalg.norm(roi.center - c.center) / max(roi.size, c.size)
                if inside > NEW_PERSON_CONTAINMENT and offset < SAME_PERSON_CENTRE:
                    same_person.append((round(float(inside), 2), round(float(offset), 2)))
        return landmarker(image, rois)

    pk.landmarker = spy
    results = _run(pk)
    assert calls and not same_person, f"{len(same_person)} crops of a followed person's region: {same_person}"
    # Counted for the run's report: every crop of a region not followed, and those that gave
    # someone followed (the man and the walker at least).
    assert pk.newcomer_crops == sum(newcomers) and 2 <= pk.newcomer_crops_kept <= pk.newcomer_crops
    assert sum(len(results[i]) == 2 for i in range(80, 160, STRIDE)) >= 0.9 * len(range(80, 160, STRIDE))


def test_a_smaller_person_off_to_one_side_of_a_followed_one_is_still_looked_at():
    """Only a region centred like a followed person's and inside or around it is taken for
    that person: someone smaller (further away) standing to one side, inside the followed
    person's square region, still goes to the landmark network."""
    from engines.perception.pose_detector import PoseDetection
    from engines.perception.pose_landmarks import ROI_SCALE, Roi

    pk = PersonKeypoints()
    followed = Roi(np.array([600.0, 500.0]), 600.0, 0.0)

    def detection(cx, cy, size):  # alignment points giving a square region of this size
        points = np.array([[cx, cy], [cx, cy - size / (2 * ROI_SCALE)], [cx, cy], [cx, cy]])
        return PoseDetection(score=0.9, face_box=np.zeros(4), keypoints=points)

    same_inside = detection(620, 540, 300)  # half the size, centred alike: him again
    same_around = detection(560, 460, 1200)  # twice the size around him (IoU 0.25): him again
    beside = detection(800, 450, 250)  # inside his square, 0.34 of it off his centre: someone else
    kept = pk._new_rois([same_inside, same_around, beside], [followed])
    assert [tuple(np.round(r.center)) for r in kept] == [(800.0, 450.0)]


def test_at_max_persons_the_detector_rests_and_only_followed_people_are_keypointed():
    """Following one person of the two: the detector runs only while nobody (or fewer than
    max_persons) is followed, and the landmark network never sees a second person."""
    pk = PersonKeypoints(detect_every=5, max_persons=1)
    batches = []
    landmarker = pk.landmarker

    def counting(image, rois):
        batches.append(len(rois))
        return landmarker(image, rois)

    pk.landmarker = counting
    results = _run(pk)
    assert all(len(persons) <= 1 for persons in results.values())
    followed = sum(1 for persons in results.values() if persons)
    assert followed >= 0.9 * len(results)
    assert max(batches) == 1
    # In line at the start and after each loss (the clip has two), never at the cadence of 5.
    assert pk.detector_runs < len(results) / 5 / 2, (pk.detector_runs, len(results))


def test_offline_run_keeps_two_people_as_two_tracks_through_the_backflip():
    """The man on the box backflips off it (frames ~170-200) and is lost in the air; he
    lands out of reach of the box's prediction. With the run's defaults (offline plan,
    lost ids kept 4 s) he gets his id back: the clip's two people are two tracks."""
    from engines.run_engines import build_keypoints
    from engines.run_plan import plan_run
    from streamer.app import RunConfig

    pk = build_keypoints(plan_run(RunConfig(source=str(CLIP)), "offline"), fps=30.0)
    spans: dict[int, list[int]] = {}
    with av.open(str(CLIP)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            for p in pk.process(frame.to_ndarray(format="rgb24"), i):
                spans.setdefault(p.track_id, [i, i])[1] = i
    assert len(spans) == 2, spans
    man = min(spans, key=lambda t: spans[t][0])  # on the box from the first frames
    assert spans[man][0] < 150 and spans[man][1] > 205, spans


def test_two_people_crossing_in_real_pixels_never_swap_ids():
    """The clip's walker pasted twice over its empty background (the same clothes, one copy
    mirrored and nearer), walking towards each other: the nearer hides the other at the
    crossing. Whenever they stand apart, each keeps the id it started with."""
    from streamer.synthetic_source import (BACKGROUND_FRAME, CLEAR_FROM_X, PERSON_BOX, PERSON_FRAME,
                                           _clip_frames)

    frames = _clip_frames(CLIP, frozenset({BACKGROUND_FRAME, PERSON_FRAME}))
    background = frames[BACKGROUND_FRAME].copy()
    background[:, CLEAR_FROM_X:] = frames[PERSON_FRAME][:, CLEAR_FROM_X:]
    x1, y1, x2, y2 = PERSON_BOX
    person = cv2.resize(frames[PERSON_FRAME][y1:y2, x1:x2], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    H, W = background.shape[:2]
    pk = PersonKeypoints(detect_every=5, detector_tile_size=round(1.25 * ph), dormant_frames=120)
    n, y = 70, H - ph - 30
    seen: dict[str, set[int]] = {"far": set(), "near": set()}
    for f in range(n):
        image = background.copy()
        far_x = int(150 + (W - 300 - pw) * f / (n - 1))
        near_x = int(W - 150 - pw - (W - 300 - pw) * f / (n - 1))
        image[y - 20:y - 20 + ph, far_x:far_x + pw] = person
        image[y:y + ph, near_x:near_x + pw] = person[:, ::-1]
        people = pk.process(image, f)
        if abs(far_x - near_x) < 1.5 * pw:
            continue  # overlapping: who is where is not defined
        for name, x in (("far", far_x), ("near", near_x)):
            at = [p.track_id for p in people if abs((p.box[0] + p.box[2]) / 2 - (x + pw / 2)) < 0.4 * pw]
            seen[name].update(at)
    assert len(seen["far"]) == 1 and len(seen["near"]) == 1 and seen["far"] != seen["near"], seen

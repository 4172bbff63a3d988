"""Live mode under overload: --max-persons follows the largest people, a late frame's fit is
skipped, and the run's stats say what was dropped, left out and skipped."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from engines.perception.person_keypoints import PersonKeypoints

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "data" / "sports2d_demo.mp4"
TRACK = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"


def _two_sizes(small_one: bool = True) -> tuple[np.ndarray, float]:
    """The clip's walker pasted twice over its empty background: small on the left (0.6),
    full size on the right; returns the image and the x of the large copy's centre.
    ``small_one=False``: the large copy alone."""
    from streamer.synthetic_source import (BACKGROUND_FRAME, CLEAR_FROM_X, PERSON_BOX, PERSON_FRAME,
                                           _clip_frames)

    frames = _clip_frames(CLIP, frozenset({BACKGROUND_FRAME, PERSON_FRAME}))
    image = frames[BACKGROUND_FRAME].copy()
    image[:, CLEAR_FROM_X:] = frames[PERSON_FRAME][:, CLEAR_FROM_X:]
    x1, y1, x2, y2 = PERSON_BOX
    person = frames[PERSON_FRAME][y1:y2, x1:x2]
    small = cv2.resize(person, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    H = image.shape[0]
    sh, sw = small.shape[:2]
    if small_one:
        image[H - sh - 40:H - 40, 150:150 + sw] = small
    ph, pw = person.shape[:2]
    bx = 900
    image[H - ph - 20:H - 20, bx:bx + pw] = person[:, ::-1]
    return image, bx + pw / 2


def test_max_persons_follows_the_largest_and_counts_who_was_left_out():
    image, big_x = _two_sizes()
    both = PersonKeypoints(detect_every=1, detector_tile_size=400, max_persons=2)
    for i in range(3):
        found = both.process(image, i)
    assert len(found) == 2, "both copies must be found for the choice to mean anything"
    assert both.persons_left_out == 0
    one = PersonKeypoints(detect_every=1, detector_tile_size=400, max_persons=1)
    for i in range(3):
        found = one.process(image, i)
    assert len(found) == 1
    centre = (found[0].box[0] + found[0].box[2]) / 2
    assert abs(centre - big_x) < 100, f"followed the person at x {centre:.0f}, the large one is at {big_x:.0f}"
    # The first frame found both and had room for one; after that the detector rests.
    assert one.persons_left_out >= 1 and one.frames_over_cap >= 1


def test_a_tiled_look_is_spread_over_the_background_detectors_calls():
    """Live, with detector tiles, each background call looks at the whole frame and the next
    quarter of the tiles: a newcomer only a tile finds (the small copy) joins within one
    sweep of four calls, and no call costs more than 1 + a quarter of the tiles' runs."""
    alone, _ = _two_sizes(small_one=False)
    both, _ = _two_sizes()
    pk = PersonKeypoints(detect_every=1, detector_tile_size=400, max_persons=2, background_detection=True,
                         detector_sweep_calls=4)
    tiles = pk.detector.tiles(both.shape[1], both.shape[0])
    assert len(tiles) >= 8
    share = -(-len(tiles) // 4)
    runs: list[int] = []  # network runs of each background call
    seen: list[tuple] = []  # the tiles looked at, in order
    detect_in = pk.detector.detect_in

    def counted(image, tiles):
        runs.append(1 + len(tiles))
        seen.extend(tiles)
        return detect_in(image, tiles)

    pk.detector.detect_in = counted
    try:
        found = pk.process(alone, 0)  # nobody followed yet: a whole look, in line, finds the large copy
        assert runs == [1 + len(tiles)]
        runs.clear(), seen.clear()
        found = pk.process(alone, 1)
        pk._background._pending.result()
        assert len(found) == 1
        joined = None
        for i in range(2, 14):
            found = pk.process(both, i)
            if len(found) == 2:
                joined = len(runs)
                break
            pk._background._pending.result()  # let each call finish before the next frame
    finally:
        pk.close()
    assert runs and max(runs) == 1 + share, runs
    assert set(seen[: len(tiles)]) == set(tiles)  # a sweep looks at every tile once
    assert joined is not None and joined <= 4 + 2, f"the small newcomer joined after {joined} calls"


def _stages(deadline: float | None):
    from calibration.camera_file import camera_or_assumed
    from engines.body.body_model import BodyModel
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import plan_run
    from streamer.app import RunConfig
    from streamer.lift_file import read_keypoint_file
    from streamer.lift_stage import LiftStage
    from streamer.refine_stage import RefineStage

    track = read_keypoint_file(TRACK)
    camera, _ = camera_or_assumed(None, *track.image_size)
    plan = plan_run(RunConfig(source="test"), "live")
    body = BodyModel.load()
    return track, LiftStage(camera, build_lifter(plan, body)), RefineStage(camera, build_refiner(plan, body), body,
                                                                            fit_deadline_s=deadline)


def test_a_late_frame_keeps_the_lift_and_is_counted():
    """Frames captured long before they reach the fit are published with the lift's bodies
    (not fitted); the others are fitted; the stage's report counts both."""
    from streamer.frames import Frame, Person

    track, lift, refine = _stages(deadline=1.0)
    late = {3, 4, 7}
    for i in range(10):
        person = Person(0, 1.0, {"keypoints_blazepose33": track.keypoints[i].astype(np.float32),
                                 "world_blazepose33": track.world[i].astype(np.float32)})
        frame = lift.process(Frame(i, None, 0.0, tuple(track.image_size), persons=[person]))
        lifted = {k: person.arrays[k].copy() for k in ("joints", "trans")}
        # Captured just now, or 10 s ago (what a frame's age means on a busy machine is not
        # this test's business: the deadline is far from both).
        frame.capture_time = time.monotonic() - (10.0 if i in late else 0.0)
        out = refine.process(frame)  # lag 0: released at once
        assert out is frame
        moved = max(float(np.abs(lifted[k] - person.arrays[k]).max()) for k in lifted)  # metres
        if i in late:
            assert moved < 1e-4, f"frame {i} was late but its body moved {moved:.4f} m"
        else:
            assert moved > 1e-3, f"frame {i} was on time but its body stayed the lift's ({moved:.5f} m)"
    assert refine.overload_report() == {"fit_deadline_ms": 1000.0, "frames_fitted": 7, "frames_fit_skipped": 3}


def test_synthetic_overload_is_bounded_and_reported():
    """Eight people in live mode with room for three: the three largest are followed, every
    captured frame is either output or counted as dropped, and the stats and the table say
    what was left out."""
    from streamer.app import RunConfig
    from streamer.bench import bench_once, format_run

    config = RunConfig(source="synthetic", mode="live", publish=None, progress=False)
    summary = bench_once(config, synthetic=8, frames=45, warmup=0, max_persons=3)
    assert summary["persons_per_frame"]["max"] <= 3
    over = summary["overload"]
    assert over["keypoints"]["max_persons"] == 3 and over["keypoints"]["choice"] == "largest"
    assert over["keypoints"]["persons_left_out"] >= 5  # the first detection found eight
    refine = over["refine"]
    assert refine["fit_deadline_ms"] == 100.0
    assert refine["frames_fitted"] + refine["frames_fit_skipped"] == summary["stages"]["refine"]["frames"]
    assert summary["frames"] + summary["drops_total"] == summary["frames_captured"]
    assert "people left out" in format_run(summary)


def test_the_run_table_says_what_was_given_up():
    """`run`'s end table (live) carries the overload line; nothing given up, no line."""
    from streamer.graph import RunResult
    from streamer.latency import LatencyStats, format_table

    result = RunResult(frames_in=100, frames_out=60, queue_drops={"grab->keypoints": 40},
                       overload={"keypoints": {"max_persons": 2, "choice": "largest", "persons_left_out": 3,
                                               "frames_over_cap": 1},
                                 "refine": {"fit_deadline_ms": 100.0, "frames_fitted": 50, "frames_fit_skipped": 10}})
    summary = LatencyStats().summary(result)
    summary["mode"] = "live"
    assert summary["overload"]["refine"]["frames_fit_skipped"] == 10
    line = [x for x in format_table(summary).splitlines() if x.startswith("overload:")]
    assert line == ["overload: 40 frames dropped; 3 people left out in 1 frames (--max-persons 2: the largest "
                    "followed); fit skipped on 10 of 60 frames (later than 100 ms: the lift's bodies published)"]
    quiet = LatencyStats().summary(RunResult(frames_in=10, frames_out=10))
    quiet["mode"] = "live"
    assert "overload:" not in format_table(quiet)

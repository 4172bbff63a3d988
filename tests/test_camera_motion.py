"""The camera's rotation from the video: the bundled clip's real frames seen by a camera
turned by a known head motion (engines.camera_motion.synthetic), pinhole and fisheye."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from engines.camera_motion.rotations import angle_between_deg, fit_rotation, yaw_pitch_roll
from engines.camera_motion.synthetic import (HeadMotion, RotationWarp, read_frames, source_camera, virtual_fisheye,
                                             virtual_pinhole)
from engines.camera_motion.visual import TrackerSettings, VisualRotationTracker, track_frames

CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"
FRAMES = 120  # 4 s: one whole head turn (+-30 deg) and more than one nod (+-15 deg)


@lru_cache(maxsize=1)
def _clip():
    frames, fps = read_frames(str(CLIP), FRAMES)
    return frames, fps


def _warped(target, motion: HeadMotion | None):
    return _warped_cached(target.model, motion)


@lru_cache(maxsize=4)
def _warped_cached(model: str, motion: HeadMotion | None):
    target = virtual_pinhole() if model == "pinhole" else virtual_fisheye()
    frames, fps = _clip()
    warp = RotationWarp(source_camera(frames[0].shape[1], frames[0].shape[0]), target)
    t = np.arange(len(frames)) / fps
    truth = motion.rotations(t) if motion is not None else np.repeat(np.eye(3)[None], len(frames), 0)
    return [warp(f, R) for f, R in zip(frames, truth)], truth


@pytest.mark.parametrize("target", [virtual_pinhole(), virtual_fisheye()], ids=["pinhole", "fisheye"])
def test_rotation_of_a_turning_head_within_a_degree(target):
    frames, truth = _warped(target, HeadMotion())
    motion_deg = angle_between_deg(truth, truth[:1])
    assert motion_deg.max() > 30  # the fixture really turns
    traj = track_frames(frames, target)
    err = angle_between_deg(traj.rotations, truth[0].T @ truth)
    assert traj.ok.all()
    assert np.median(err) <= 1.0 and err.max() <= 3.0, (np.median(err), err.max())


def test_the_lens_model_matters():
    """Fisheye frames read as if from a pinhole of the same focal length give a wrong rotation:
    the estimate goes through the camera model."""
    fisheye = virtual_fisheye()
    frames, truth = _warped(fisheye, HeadMotion())
    wrong = virtual_pinhole(fisheye.width, fisheye.height, fisheye.fx)
    err = angle_between_deg(track_frames(frames, wrong).rotations, truth)
    assert np.median(err) > 0.5  # against 0.03 deg through the right model


def test_static_camera_stays_put_while_people_move():
    frames, _ = _warped(virtual_pinhole(), None)
    traj = track_frames(frames, virtual_pinhole())
    err = angle_between_deg(traj.rotations, np.eye(3))
    assert err.max() < 0.3


def test_people_boxes_hold_no_corners():
    frames, _ = _warped(virtual_pinhole(), None)
    box = np.array([[100.0, 50.0, 400.0, 350.0]])
    tracker = VisualRotationTracker(virtual_pinhole())
    tracker.update(frames[0], box)
    px = tracker._track.keyframe.pixels
    assert len(px) > 50
    inside = (px[:, 0] >= 100) & (px[:, 0] <= 400) & (px[:, 1] >= 50) & (px[:, 1] <= 350)
    assert not inside.any()


def test_looking_back_re_anchors_to_the_first_view():
    """Turn 40 degrees away and back, twice: the estimate on return is measured against the
    stored keyframe, so the error does not grow from one sweep to the next."""
    frames, fps = _clip()
    target = virtual_pinhole()
    warp = RotationWarp(source_camera(frames[0].shape[1], frames[0].shape[0]), target)
    n = 100
    yaw = 20 * (1 - np.cos(2 * np.pi * np.arange(n) / 50))  # 0 -> 40 -> 0 deg, twice
    truth = yaw_pitch_roll(yaw, 0.0)
    traj = track_frames([warp(frames[i % len(frames)], R) for i, R in enumerate(truth)], target)
    assert traj.reanchors, "never re-anchored"
    err = angle_between_deg(traj.rotations, truth)
    assert err[49] < 0.3 and err[99] < 0.3, (err[49], err[99])


def test_wrong_frame_size_is_a_clear_error():
    tracker = VisualRotationTracker(virtual_pinhole())
    with pytest.raises(ValueError, match="give the camera of these frames"):
        tracker.update(np.zeros((10, 10, 3), np.uint8))


def test_fit_rotation_recovers_a_rotation_from_rays():
    rng = np.random.default_rng(1)
    R = yaw_pitch_roll(20, -7, 3)
    b = rng.normal(size=(50, 3))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert angle_between_deg(fit_rotation(b @ R.T, b), R) < 1e-6


def test_settings_are_frozen():
    with pytest.raises(Exception):
        TrackerSettings().max_width = 3  # type: ignore[misc]


def test_translation_direction_only_where_the_scene_shows_parallax():
    """Rays to points 2-6 m away from two camera centres 10 cm apart give the direction of
    the move; from one centre (a pure rotation) the translation is unknown (None)."""
    rng = np.random.default_rng(4)
    X = rng.uniform([-2, -1, 2], [2, 1, 6], size=(200, 3))
    a = X / np.linalg.norm(X, axis=1, keepdims=True)
    tracker = VisualRotationTracker(virtual_pinhole())
    assert tracker._translation(a, a) is None
    t = np.array([0.08, 0.0, 0.06])
    c = (X - t) / np.linalg.norm(X - t, axis=1, keepdims=True)
    direction = tracker._translation(a, c)
    assert direction is not None
    assert np.degrees(np.arccos(np.clip(direction @ (t / np.linalg.norm(t)), -1, 1))) < 1.0

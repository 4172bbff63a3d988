"""Cross-view association (engines.perception.cross_view): people of a rig's other cameras
matched to the reference camera's by epipolar geometry, never swapped when they stand apart,
left unmatched when one camera alone sees them, and kept through a moment of doubt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix
from calibration.rig import look_from
from engines.perception.cross_view import CrossViewMatcher, epipolar_cost, essential_matrix, lift_cost

F, C = 1000.0, np.array([640.0, 360.0])


@pytest.fixture(scope="module")
def bodies():
    """Two people's BlazePose-33 points (T, 33, 3) in camera 0's frame over 60 frames: A walks
    to the left 1.6 m left of B, who walks towards the camera, arms moving."""
    body = BodyModel.load()
    T = 60
    aa = torch.zeros(T, 24, 3)
    aa[:, 0] = torch.tensor([math.pi, 0.0, 0.0])  # SMPL's y up into the camera's y down
    phase = torch.linspace(0, 2 * math.pi, T)
    aa[:, 16, 2] = -1.0 + 0.5 * torch.sin(phase)
    aa[:, 17, 2] = 1.0 - 0.5 * torch.sin(phase)
    R = axis_angle_to_matrix(aa)
    s = torch.linspace(0, 1, T)[:, None]
    trans_a = torch.tensor([-0.8, 0.1, 4.5]) + s * torch.tensor([-0.5, 0.0, 0.0])
    trans_b = torch.tensor([0.8, 0.1, 4.8]) + s * torch.tensor([0.0, 0.0, -0.8])
    betas = torch.zeros(T, 10)
    with torch.no_grad():
        a = body(R, betas, trans_a, keypoints="blazepose33").keypoints["blazepose33"].numpy()
        b = body(R, betas, trans_b, keypoints="blazepose33").keypoints["blazepose33"].numpy()
    return a, b


def _observe(points, pose, rng, noise_px=3.0):
    """Normalised keypoints (33, 3) of camera-0-frame ``points`` seen by a camera at ``pose``
    (None: camera 0), with pixel noise, detector-like confidences and a few points missing."""
    p = points if pose is None else points @ pose[0].T + pose[1]
    px = p[:, :2] / p[:, 2:] * F + C + rng.normal(0, noise_px, (len(p), 2))
    conf = rng.uniform(0.5, 1.0, len(p))
    conf[rng.random(len(p)) < 0.1] = 0.0
    return np.concatenate([(px - C) / F, conf[:, None]], 1)


def test_epipolar_cost_is_small_for_one_person_and_large_for_two(bodies):
    a, b = bodies
    rng = np.random.default_rng(0)
    pose = look_from([4.0, 0.0, 4.0])
    E = essential_matrix(*pose)
    ref = np.stack([_observe(a[0], None, rng), _observe(b[0], None, rng)])
    view = np.stack([_observe(a[0], pose, rng), _observe(b[0], pose, rng)])
    cost = epipolar_cost(ref, view, E)
    assert cost[0, 0] < 0.03 and cost[1, 1] < 0.03, cost
    assert cost[0, 1] > 5 * cost[0, 0] and cost[1, 0] > 5 * cost[1, 1], cost


@pytest.mark.parametrize("position", [[4.0, 0.0, 4.0], [-2.5, -0.5, 1.0], [0.0, -1.0, 8.5]])
def test_two_people_standing_apart_are_never_swapped(bodies, position):
    """60 frames, noisy keypoints, the other view's ids and order unrelated to the reference's:
    the same two people every frame, never swapped (nor dropped)."""
    a, b = bodies
    rng = np.random.default_rng(1)
    pose = look_from(position)
    matcher = CrossViewMatcher([pose])
    for i in range(len(a)):
        ref = {3: _observe(a[i], None, rng), 9: _observe(b[i], None, rng)}
        view_people = [(21, _observe(b[i], pose, rng)), (20, _observe(a[i], pose, rng))]
        if rng.random() < 0.5:
            view_people.reverse()
        (found,) = matcher.match(ref, [dict(view_people)])
        assert found == {20: 3, 21: 9}, f"frame {i}: {found} (costs {matcher.last_costs[0]})"


def test_a_person_seen_by_one_camera_stays_unmatched(bodies):
    """C is seen by the other camera alone, D by the reference alone: neither is matched to
    anyone, and A still is."""
    a, b = bodies
    rng = np.random.default_rng(2)
    pose = look_from([4.0, 0.0, 4.0])
    matcher = CrossViewMatcher([pose, look_from([-4.0, 0.0, 4.0])])
    for i in range(0, len(a), 5):
        ref = {1: _observe(a[i], None, rng), 4: _observe(b[i] + np.array([0.0, 0.0, 3.0]), None, rng)}  # D
        view = {5: _observe(a[i], pose, rng), 6: _observe(b[i], pose, rng)}  # C is where B was
        found, nobody = matcher.match(ref, [view, None])
        assert found == {5: 1}, f"frame {i}: {found}"
        assert nobody == {}
        # With nobody else in view either camera's one person is still no match for the other's.
        alone, _ = matcher.match({4: ref[4]}, [{6: view[6]}, {}])
        assert alone == {}, f"frame {i}: {alone} (cost {matcher.last_costs[0]})"


def test_a_kept_match_survives_a_moment_of_doubt(bodies):
    """A frame whose keypoints are off (a poor detection) by more than the gate but less than
    the keep gate keeps the match made before, but makes no new one."""
    a, _ = bodies
    rng = np.random.default_rng(3)
    pose = look_from([4.0, 0.0, 4.0])

    def poor(i):
        kp = _observe(a[i], pose, rng, noise_px=0.5)
        kp[:, 1] += 0.11 * (np.nanmax(kp[:, 1]) - np.nanmin(kp[:, 1]))  # 11 % of its size down
        return kp

    matcher = CrossViewMatcher([pose])
    assert matcher.match({1: _observe(a[0], None, rng)}, [{7: _observe(a[0], pose, rng)}]) == [{7: 1}]
    doubtful = poor(1)
    assert matcher.match({1: _observe(a[1], None, rng, noise_px=0.5)}, [{7: doubtful}]) == [{7: 1}]
    cost = matcher.last_costs[0][(1, 7)]
    assert matcher.gate < cost < matcher.keep_gate, cost
    fresh = CrossViewMatcher([pose])
    assert fresh.match({1: _observe(a[1], None, rng, noise_px=0.5)}, [{7: doubtful}]) == [{}]


def test_a_rig_without_baseline_is_refused():
    with pytest.raises(ValueError, match="zero baseline"):
        CrossViewMatcher([(np.eye(3), np.zeros(3))])


def _landmarks(points, pose, rng, noise_m=0.03):
    """A landmark network's metric landmarks (33, 3) of camera-0-frame ``points`` as the
    camera at ``pose`` (None: camera 0) sees them: hip-centred, in its axes, noisy."""
    centred = points - points[[23, 24]].mean(0)
    return (centred if pose is None else centred @ pose[0].T) + rng.normal(0, noise_m, points.shape)


def test_the_lifts_tell_apart_two_people_on_one_epipolar_line():
    """A level rig, cameras 90 degrees apart; two people of one height stand where their rays
    share epipolar planes (Z - X = 5 m for both: the planes hold the baseline). A holds the
    left arm out at camera 0 and the right arm back, B both arms out to the sides, all at
    shoulder height: differences along the baseline's direction, which epipolar geometry
    cannot see. By geometry alone every pairing passes the gate and the
    assignment is a coin toss (it swaps them in many frames); the landmarks, turned into
    camera 0's axes, disagree for the wrong pairs and decide it, in every frame."""
    body = BodyModel.load()
    aa = torch.zeros(2, 24, 3)
    aa[:, 0] = torch.tensor([math.pi, 0.0, 0.0])
    aa[0, 16] = torch.tensor([0.0, -math.pi / 2, 0.0])  # A: left arm straight ahead, towards camera 0,
    aa[0, 17] = torch.tensor([0.0, -math.pi / 2, 0.0])  # the right arm straight back; B: T-pose
    trans = torch.tensor([[-1.0, 0.0, 4.0], [1.0, 0.0, 6.0]])
    with torch.no_grad():
        a, b = body(axis_angle_to_matrix(aa), torch.zeros(2, 10), trans, keypoints="blazepose33").keypoints["blazepose33"].numpy()
    pose = look_from([4.0, 0.0, 4.0])
    rng = np.random.default_rng(4)
    swapped_by_geometry = 0
    for i in range(30):
        ref = {3: _observe(a, None, rng), 9: _observe(b, None, rng)}
        view = {21: _observe(b, pose, rng), 20: _observe(a, pose, rng)}
        geometry = CrossViewMatcher([pose])  # a fresh matcher: no earlier match to keep
        (alone,) = geometry.match(ref, [view])
        assert max(geometry.last_costs[0].values()) < geometry.gate, geometry.last_costs[0]
        swapped_by_geometry += alone != {20: 3, 21: 9}
        both = CrossViewMatcher([pose])
        (found,) = both.match(ref, [view], reference_landmarks={3: _landmarks(a, None, rng), 9: _landmarks(b, None, rng)},
                              view_landmarks=[{21: _landmarks(b, pose, rng), 20: _landmarks(a, pose, rng)}])
        assert found == {20: 3, 21: 9}, f"frame {i}: {found} (costs {both.last_costs[0]}, lifts {both.last_lift_costs[0]})"
    assert swapped_by_geometry >= 5, f"only {swapped_by_geometry} of 30 swapped: epipolar geometry alone should not tell them apart here"


def test_lift_cost_is_zero_for_one_pose_seen_from_two_cameras(bodies):
    a, _ = bodies
    pose = look_from([4.0, 0.0, 4.0])
    rng = np.random.default_rng(5)
    ref, view = _landmarks(a[0], None, rng, 0.0), _landmarks(a[0], pose, rng, 0.0) * 1.2  # another scale
    conf = np.ones((1, 33))
    assert lift_cost(ref[None], conf, view[None], conf, pose[0])[0, 0] < 1e-6
    assert np.isnan(lift_cost(ref[None], conf, view[None], np.zeros((1, 33)), pose[0])[0, 0])  # nothing to compare

"""Multi-view fitting (engines.refinement.multiview): a second calibrated camera settles the
depth one camera cannot see, its Jacobian is right, and a view that sees nothing changes
nothing."""

from __future__ import annotations

import math

import pytest
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
from engines.refinement.fitting import FitSettings, KeypointFitter
from engines.refinement.guided import CameraParams, WindowBatch
from engines.refinement.multiview import RigView, ViewTerms, project_with_jacobian, triangulate

K = torch.tensor([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def _rig():
    """Camera 1 four metres to camera 0's right, looking at the point 4 m in front of camera
    0 (90 degrees apart), its image upright: (R, t) map camera 0's frame into camera 1's."""
    position, target = torch.tensor([4.0, 0.0, 4.0]), torch.tensor([0.0, 0.0, 4.0])
    z = (target - position) / (target - position).norm()
    x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), z)  # camera 0's y is down
    R = torch.stack([x, torch.linalg.cross(z, x), z])
    return R, -R @ position


def _pose() -> torch.Tensor:
    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])  # SMPL faces +Z, Y up -> camera frame, facing it
    aa[16] = torch.tensor([0.0, 0.0, -1.0])
    aa[4] = torch.tensor([0.6, 0.0, 0.0])
    return torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])


def _points(body, x, trans):
    return body(rotation_6d_to_matrix(x[:144].view(1, 24, 6)), x[None, 144:], trans[None],
                keypoints="blazepose33").keypoints["blazepose33"][0]


def _keypoints(points, R=None, t=None):
    p = points if R is None else points @ R.T + t
    px = p[:, :2] / p[:, 2:] * 1000 + torch.tensor([640.0, 360.0])
    return torch.cat([px, torch.ones(33, 1)], -1)


def test_the_second_view_is_seen_where_it_should_be():
    R, t = _rig()
    centre = torch.tensor([0.0, 0.0, 4.0])
    assert torch.allclose(centre @ R.T + t, torch.tensor([0.0, 0.0, 4.0]), atol=1e-5)
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6) and torch.det(R) > 0


def test_view_jacobian_matches_finite_differences():
    torch.manual_seed(0)
    pts = torch.randn(2, 33, 3, dtype=torch.float64) * 0.3 + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    A = 5
    jac = torch.randn(2, 33, 3, A, dtype=torch.float64)
    for dist, model in ((None, "pinhole"), (torch.tensor([-0.2, 0.05, 0.001, 0.001], dtype=torch.float64), "fisheye")):
        px, jp = project_with_jacobian(pts, jac, K.double(), dist, model)
        eps = 1e-6
        for a in range(A):
            moved, _ = project_with_jacobian(pts + eps * jac[..., a], None, K.double(), dist, model)
            assert torch.allclose((moved - px) / eps, jp[..., a], atol=1e-3, rtol=1e-4)


def test_triangulation_recovers_a_point_seen_twice():
    R, t = _rig()
    X = torch.tensor([[0.2, -0.4, 3.7], [-0.5, 0.3, 4.4]])
    px0 = _keypoints(X.repeat(17, 1)[:33])[:2, :2]
    px1 = _keypoints(X.repeat(17, 1)[:33], R, t)[:2, :2]
    ones = torch.ones(2)
    out = triangulate([px0, px1], [(K, torch.eye(3), torch.zeros(3)), (K, R, t)], [ones, ones])
    assert torch.allclose(out, X, atol=1e-3)
    lone = triangulate([px0, px1], [(K, torch.eye(3), torch.zeros(3)), (K, R, t)], [ones, torch.zeros(2)])
    assert torch.isnan(lone).all()


def test_a_second_camera_settles_the_depth_one_camera_cannot(body):
    """The lift got the person's size wrong (a body taller than theirs) and so their depth:
    camera 0 alone sees the same picture of a larger body further away and keeps it there;
    with camera 1 the fit finds the place (and the size)."""
    R, t = _rig()
    truth_x = _pose()
    true_trans = torch.tensor([0.1, 0.2, 4.0])
    truth = _points(body, truth_x, true_trans)
    kp0, kp1 = _keypoints(truth), _keypoints(truth, R, t)
    x = truth_x.clone()
    x[144] = 2.5  # the first shape coefficient: size
    start = true_trans * 1.1

    def fit(views: bool):
        batch = WindowBatch(x=x[None, None], trans=start[None, None], cond=torch.zeros(1, 1, 102),
                            keypoints=kp0[None, None], valid=torch.ones(1, 1, dtype=torch.bool),
                            free=torch.ones(1, 1, dtype=torch.bool),
                            views=kp1[None, None, None] if views else None)
        camera = CameraParams(K=K, views=(RigView(K, None, "pinhole", R, t),) if views else ())
        fitter = KeypointFitter(None, body, FitSettings.for_lag(5, iters=8, robust_scale=1.0))
        _, tr = fitter.refine(batch, camera)
        return tr[0, 0]

    alone, both = fit(False), fit(True)
    assert (alone - true_trans).norm() > 0.15, "one camera should not know the depth"
    assert (both - true_trans).norm() < 0.03, "two cameras should"


def test_a_view_that_sees_nothing_changes_nothing(body):
    R, t = _rig()
    x = _pose()
    trans = torch.tensor([0.1, 0.2, 4.0])
    kp0 = _keypoints(_points(body, x, trans) + torch.tensor([0.02, -0.01, 0.0]))

    def fit(views):
        batch = WindowBatch(x=x[None, None], trans=trans[None, None], cond=torch.zeros(1, 1, 102), keypoints=kp0[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool), views=views)
        camera = CameraParams(K=K, views=(RigView(K, None, "pinhole", R, t),) if views is not None else ())
        return KeypointFitter(None, body, FitSettings.for_lag(5, iters=3)).refine(batch, camera)

    (xa, ta), (xb, tb) = fit(None), fit(torch.zeros(1, 1, 1, 33, 3))
    assert torch.equal(xa, xb) and torch.equal(ta, tb)
    assert not torch.equal(ta, trans[None, None]), "the fit should have moved"


def test_a_rig_fit_holds_every_joint_alike(body):
    """The lift's spread (one camera's doubt) loosens the prior per joint for one camera;
    in a rig the other views settle what it doubted, and the spread is not used."""
    R, t = _rig()
    x = _pose()
    trans = torch.tensor([0.1, 0.2, 4.0])
    # Every point a little off: the fit must bend the pose, not only move the body.
    pts = _points(body, x, trans) + 0.02 * torch.randn(33, 3, generator=torch.Generator().manual_seed(0))
    kp0, kp1 = _keypoints(pts), _keypoints(pts, R, t)
    spread = torch.linspace(0.02, 0.6, 24)

    def fit(views: bool, x_std):
        batch = WindowBatch(x=x[None, None], trans=trans[None, None], cond=torch.zeros(1, 1, 102), keypoints=kp0[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool),
                            views=kp1[None, None, None] if views else None,
                            x_std=None if x_std is None else x_std[None, None])
        camera = CameraParams(K=K, views=(RigView(K, None, "pinhole", R, t),) if views else ())
        return KeypointFitter(None, body, FitSettings.for_lag(5, iters=3, prior_spread=1.0)).refine(batch, camera)[0]

    assert torch.equal(fit(True, spread), fit(True, None))
    assert not torch.allclose(fit(False, spread), fit(False, None), atol=1e-4), "one camera: the spread counts"


def test_view_terms_have_no_energy_at_the_truth(body):
    R, t = _rig()
    x = _pose()
    pts = _points(body, x, torch.tensor([0.0, 0.1, 4.2]))
    terms = ViewTerms((RigView(K, None, "pinhole", R, t),), _keypoints(pts, R, t)[None, None], torch.full((1, 1), 0.01),
                      robust_scale=0.1, min_confidence=0.3)
    E = terms.add(pts[None], None, torch.zeros(1), None, None)
    assert E.item() < 1e-6
    E_off = terms.add(pts[None] + torch.tensor([0.05, 0.0, 0.0]), None, torch.zeros(1), None, None)
    assert E_off.item() > 1.0


def test_a_views_world_landmarks_weigh_its_own_depth(body):
    """Camera 1's world landmarks (hip-centred, turned and scaled as a network's may be) have
    no energy at the truth; a wrist moved along camera 1's depth axis costs about
    1 / world_lateral times what the same move across camera 1's image does."""
    R, t = _rig()
    x = _pose()
    pts = _points(body, x, torch.tensor([0.0, 0.1, 4.2]))
    in_view = pts @ R.T + t
    turn = axis_angle_to_matrix(torch.tensor([0.0, 0.3, 0.0]))
    landmarks = 0.9 * (in_view - in_view[[23, 24]].mean(0)) @ turn.T
    s = FitSettings(world_weight=1.0)  # the energy's size below is for this weight
    terms = ViewTerms((RigView(K, None, "pinhole", R, t),), torch.cat([_keypoints(pts, R, t)[:, :2], torch.ones(33, 1)], -1)[None, None],
                      torch.full((1, 1), 0.01), robust_scale=0.1, min_confidence=0.3, world=landmarks[None, None], settings=s)
    no_pixels = ViewTerms((RigView(K, None, "pinhole", R, t),), _keypoints(pts, R, t)[None, None], torch.full((1, 1), 0.01),
                          robust_scale=0.1, min_confidence=0.3)
    assert terms.add(pts[None], None, torch.zeros(1), None, None).item() < 1e-6

    def world_energy(move):
        moved = pts.clone()
        moved[15] += move @ R  # camera 1's axes into camera 0's frame
        return (terms.add(moved[None], None, torch.zeros(1), None, None)
                - no_pixels.add(moved[None], None, torch.zeros(1), None, None)).item()

    depth, across = world_energy(torch.tensor([0.0, 0.0, 0.05])), world_energy(torch.tensor([0.05, 0.0, 0.0]))
    assert depth > 0.1 and 5 < depth / across < 15, (depth, across)


def test_views_without_world_landmarks_change_nothing(body):
    """Zeros for the other view's landmarks (its crop had none) fit exactly as no landmarks."""
    R, t = _rig()
    x = _pose()
    trans = torch.tensor([0.1, 0.2, 4.0])
    pts = _points(body, x, trans)
    kp0, kp1 = _keypoints(pts + torch.tensor([0.02, -0.01, 0.0])), _keypoints(pts, R, t)

    def fit(views_world):
        batch = WindowBatch(x=x[None, None], trans=trans[None, None], cond=torch.zeros(1, 1, 102), keypoints=kp0[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool),
                            views=kp1[None, None, None], views_world=views_world)
        camera = CameraParams(K=K, views=(RigView(K, None, "pinhole", R, t),))
        return KeypointFitter(None, body, FitSettings.for_lag(5, iters=3)).refine(batch, camera)

    (xa, ta), (xb, tb) = fit(None), fit(torch.zeros(1, 1, 1, 33, 3))
    assert torch.equal(xa, xb) and torch.equal(ta, tb)

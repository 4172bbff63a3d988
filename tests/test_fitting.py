"""The keypoint fit (engines.refinement.fitting): its Jacobian, what it does to real
keypoints, and how the world landmarks settle a depth the 2D cannot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from engines.refinement.fitting import THETA, FitSettings, KeypointFitter, keypoint_noise
from engines.refinement.guided import CameraParams, WindowBatch

K = torch.tensor([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.mark.parametrize("dist, model", [(None, "pinhole"), (torch.tensor([0.1, -0.05, 0.001, 0.002, 0.01]), "pinhole"),
                                         (torch.tensor([-0.2, 0.05, 0.001, 0.001]), "fisheye")])
def test_linearisation_matches_finite_differences(body, dist, model):
    torch.manual_seed(0)
    b64 = BodyModel.load().double()
    fitter = KeypointFitter(None, b64)
    R0 = axis_angle_to_matrix(torch.randn(2, 24, 3, dtype=torch.float64) * 0.4)
    b0 = torch.randn(2, 10, dtype=torch.float64)
    t0 = torch.tensor([[0.1, 0.2, 3.0], [-0.3, 0.1, 4.0]], dtype=torch.float64)
    Kd = K.double()
    dd = None if dist is None else dist.double()
    cam = CameraParams(K=Kd, dist=dd, model=model)
    out, J = fitter._linearise(R0, b0, t0, cam, Kd, dd)
    eps = 1e-6
    for k in range(0, THETA, 7):
        d = torch.zeros(2, THETA, dtype=torch.float64)
        d[:, k] = eps
        R = R0 @ axis_angle_to_matrix(d[:, :72].reshape(2, 24, 3))
        numeric = (fitter._outputs(R, b0 + d[:, 72:82], t0 + d[:, 82:], cam, Kd, dd) - out) / eps
        assert (numeric - J[..., k]).abs().max() <= 1e-4 * (numeric.abs().max() + 1e-3), k


def _arm_pose(forearm_towards_camera: bool) -> torch.Tensor:
    """6D pose (154,): facing the camera, left elbow bent 60 degrees so the forearm points
    half towards the camera or as far away from it (nearly the same 2D either way)."""
    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])  # SMPL faces +Z, Y up -> camera frame, facing it
    aa[18] = torch.tensor([0.0, -math.pi / 3 if forearm_towards_camera else math.pi / 3, 0.0])
    return torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])


def test_world_landmarks_resolve_a_forearm_the_2d_cannot(body):
    true_x, wrong_x = _arm_pose(True), _arm_pose(False)
    trans = torch.tensor([[0.0, 0.3, 4.0]])
    R = axis_angle_to_matrix(torch.zeros(1, 24, 3))

    def points(x):
        from engines.body.rotations import rotation_6d_to_matrix

        return body(rotation_6d_to_matrix(x[:144].view(1, 24, 6)), x[None, 144:], trans,
                    keypoints="blazepose33").keypoints["blazepose33"][0]

    truth, wrong = points(true_x), points(wrong_x)
    px = truth[:, :2] / truth[:, 2:] * 1000 + torch.tensor([640.0, 360.0])
    px_wrong = wrong[:, :2] / wrong[:, 2:] * 1000 + torch.tensor([640.0, 360.0])
    wrist = 15
    assert (truth[wrist, 2] - wrong[wrist, 2]).abs() > 0.3  # the two differ in depth...
    assert (px[wrist] - px_wrong[wrist]).norm() < 25  # ...but hardly in the image
    kp = torch.cat([px, torch.ones(33, 1)], -1)
    world = truth - truth[[23, 24]].mean(0)
    del R

    def fit(with_world: bool) -> torch.Tensor:
        batch = WindowBatch(x=wrong_x[None, None], trans=trans[None], cond=torch.zeros(1, 1, 102), keypoints=kp[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool),
                            world=world[None, None] if with_world else None)
        fitter = KeypointFitter(None, body, FitSettings.for_lag(5, iters=6))
        x, t = fitter.refine(batch, CameraParams(K=K))
        from engines.body.rotations import rotation_6d_to_matrix

        return body(rotation_6d_to_matrix(x[0, :, :144].view(1, 24, 6)), x[0, :, 144:], t[0],
                    keypoints="blazepose33").keypoints["blazepose33"][0]

    without, with_world = fit(False), fit(True)
    assert (without[wrist] - truth[wrist]).norm() > 0.25, "the 2D alone should leave the forearm as it was"
    assert (with_world[wrist] - truth[wrist]).norm() < 0.08, "the world landmarks should turn it over"
    # After a lift that saw the landmarks (its network takes them), limbs are not turned over.
    from types import SimpleNamespace

    from engines.diffusion.denoiser import DenoiserConfig

    assert KeypointFitter(None, body).turn_limbs
    assert not KeypointFitter(SimpleNamespace(config=DenoiserConfig(world_landmarks=True)), body).turn_limbs
    assert KeypointFitter(SimpleNamespace(config=DenoiserConfig()), body).turn_limbs


def test_keypoint_noise_is_measured_from_the_jitter():
    g = torch.Generator().manual_seed(1)
    T = 30
    t = torch.linspace(0, 1, T)[:, None, None]
    base = torch.rand(1, 33, 2, generator=g) * 300 + 200 + 40 * t  # smooth motion
    for sigma in (0.005, 0.02):
        size = 300.0  # roughly the box of the points
        noisy = base + sigma * size * torch.randn(T, 33, 2, generator=g)
        kp = torch.cat([noisy, torch.ones(T, 33, 1)], -1)[None]
        est = keypoint_noise(kp, torch.ones(1, T, dtype=torch.bool), 0.3, 0.015, (0.001, 0.1))
        real_size = (kp[0, :, :, :2].amax(1) - kp[0, :, :, :2].amin(1)).amax(-1).median()
        assert est.item() == pytest.approx(sigma * size / real_size.item(), rel=0.3)


def test_keypoint_noise_of_a_batch_is_each_windows_own():
    """Windows measured together give what each gives alone: the quartile of its own counted
    points, the default where too few are counted (here: a window with one valid frame)."""
    g = torch.Generator().manual_seed(2)
    kp = torch.cat([torch.rand(3, 6, 33, 2, generator=g) * 300, torch.rand(3, 6, 33, 1, generator=g)], -1)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 3] = False
    valid[2, 1:] = False
    together = keypoint_noise(kp, valid, 0.3, 0.015, (0.0, 1.0))
    alone = torch.cat([keypoint_noise(kp[i:i + 1], valid[i:i + 1], 0.3, 0.015, (0.0, 1.0)) for i in range(3)])
    assert together[2] == pytest.approx(0.015)  # one valid frame: nothing to measure
    assert together[0] != pytest.approx(0.015) and together[1] != pytest.approx(together[0].item())
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_fit_lowers_the_reprojection_of_real_keypoints(body, tmp_path):
    """A track of the real clip (its BlazePose keypoints and world landmarks, recorded by
    `run --record`): the fitted bodies land much closer to the keypoints than the lifts."""
    from streamer.lift_file import lift_keypoint_file

    src = "tests/data/keypoints/sports2d_track2_blazepose33.npz"
    lifted = lift_keypoint_file(src, tmp_path / "lift.npz", refine=False)
    fitted = lift_keypoint_file(src, tmp_path / "fit.npz")
    before, after = lifted["fit"]["overall"], fitted["fit"]["overall"]
    assert after["median_pct"] < 0.75 * before["median_pct"]
    assert after["median_pct"] < 1.4 and after["p90_pct"] < 4.0
    with np.load(tmp_path / "fit.npz") as data:
        assert data["reprojection_px"].shape == data["frame_index"].shape
        assert np.nanmedian(data["reprojection_px"]) < np.nanmedian(np.load(tmp_path / "lift.npz")["reprojection_px"])
    # The landmarks' weight (`lift --world-weight`) reaches the fit: leaning on their metric
    # shape moves the bodies in depth.
    lift_keypoint_file(src, tmp_path / "heavy.npz", world_weight=1.5)
    with np.load(tmp_path / "fit.npz") as default, np.load(tmp_path / "heavy.npz") as heavy:
        assert np.abs(default["trans"] - heavy["trans"]).max() > 0.01


@pytest.mark.parametrize("dof", [0.0, 4.0])
def test_temporal_terms_gradient_is_the_energys(body, dof):
    """Each temporal term's gradient (what the normal equations use) is the derivative of its
    energy (what a step is accepted on), for the Gaussian and the Student-t acceleration of
    the joints about the pelvis and the pelvis's path; the Student-t's weight falls on a
    large acceleration, so a flip costs it less than a Gaussian of the same curvature."""
    from engines.refinement.fitting import _signal

    torch.manual_seed(1)
    s = FitSettings(joint_acc_dof=dof, joint_vel_sigma=0.05)
    terms = KeypointFitter(None, body, s)._temporal_operators(torch.ones(2, 9, dtype=torch.bool))
    joints = (torch.randn(2, 9, 72) * 0.02).requires_grad_()
    betas = torch.randn(2, 9, 10).requires_grad_()
    names = []
    for energy, M, grad, which in terms(joints, betas):
        names.append(which)
        leaf = betas if which == "betas" else joints
        auto = torch.autograd.grad(energy.sum(), leaf, retain_graph=True)[0]
        # grad is in the term's signal; the energy is in the chi^2 convention (r^2 / sigma^2),
        # so its derivative is twice grad, carried back through the signal's map
        signal = betas if which == "betas" else _signal(joints, which)
        expected = torch.autograd.grad(signal, leaf, grad_outputs=2 * grad.detach(), retain_graph=True)[0]
        assert torch.allclose(auto, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), which
    assert names == ["relative", "root", "joints", "betas"]
    # A 10 cm/frame^2 jolt of one hand (a flip's) against its cost near zero.
    quiet = torch.zeros(1, 5, 72)
    jolt = quiet.clone()
    jolt[0, 2, 22 * 3] = 0.1
    flip = KeypointFitter(None, body, s)._temporal_operators(torch.ones(1, 5, dtype=torch.bool))
    cost = next(iter(flip(jolt, torch.zeros(1, 5, 10))))[0].item()
    # A Gaussian as tight near zero: (dof + 3) / (dof s^2) = 1 / sigma^2 (3D Student-t energy).
    same_curvature = s.joint_acc_sigma * math.sqrt(dof / (dof + 3)) if dof else s.joint_acc_sigma
    gaussian_cost = (0.1 ** 2 * (1 + 4 + 1)) / same_curvature ** 2  # the jolt's three second differences
    assert (cost < gaussian_cost / 5) if dof else math.isclose(cost, (0.1 ** 2 * 6) / s.joint_acc_sigma ** 2, rel_tol=1e-4)


def test_prior_gives_way_where_the_lift_was_unsure(body):
    """``prior_spread``: a joint whose lift samples disagreed is held less by the prior, so
    the keypoints can turn it; the joints the lift was sure of are held harder."""
    from engines.body.rotations import rotation_6d_to_matrix
    from engines.lifting.lifter import geodesic_angle

    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])
    lift_x = torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])
    aa[18] = torch.tensor([0.0, 0.0, math.pi / 8])  # the left elbow bent in the image plane
    true_R = axis_angle_to_matrix(aa)[None]
    trans = torch.tensor([[0.0, 0.3, 4.0]])
    truth = body(true_R, torch.zeros(1, 10), trans, keypoints="blazepose33").keypoints["blazepose33"][0]
    px = truth[:, :2] / truth[:, 2:] * 1000 + torch.tensor([640.0, 360.0])
    kp = torch.cat([px, torch.ones(33, 1)], -1)
    spread = torch.full((24,), 0.05)
    spread[18] = 0.5  # the lift's samples disagreed about the elbow only

    def angle_errors(prior_spread: float, x_std) -> torch.Tensor:
        batch = WindowBatch(x=lift_x[None, None], trans=trans[None], cond=torch.zeros(1, 1, 102), keypoints=kp[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool),
                            x_std=None if x_std is None else x_std[None, None])
        settings = FitSettings.for_lag(5, iters=4, prior_sigma=0.03, prior_spread=prior_spread)
        x, _ = KeypointFitter(None, body, settings).refine(batch, CameraParams(K=K))
        return geodesic_angle(rotation_6d_to_matrix(x[0, :, :144].view(1, 24, 6)), true_R)[0]

    plain = angle_errors(0.0, spread)
    assert torch.allclose(angle_errors(1.0, None), plain, atol=1e-6), "no spread given: the plain prior"
    assert torch.allclose(angle_errors(1.0, torch.zeros(24)), plain, atol=1e-6), "zeros: no spread measured"
    loose = angle_errors(1.0, spread)
    others = [j for j in range(24) if j != 18]
    assert plain[18] > 0.3, "the tight prior alone should hold the elbow near the lift (0.39 rad off)"
    assert loose[18] < 0.6 * plain[18], (loose[18], plain[18])
    # The rest of the body was bent to fit the elbow's keypoints; held by a sure lift it bends less.
    assert loose[others].max() < 0.5 * plain[others].max(), (loose[others].max(), plain[others].max())


def test_a_lift_that_saw_the_landmarks_weighs_more_in_the_pull(body):
    """``lift_weight_world``: where the lift saw the world landmarks (its network takes them and
    the frame has them) the prior's pull leans towards it with that weight; a frame without
    landmarks keeps ``lift_weight``. The keypoints say nothing about the elbow here (missing),
    so the pull alone places it, between the denoiser's straight arm and the lift's bent one."""
    from types import SimpleNamespace

    from engines.body.rotations import rotation_6d_to_matrix
    from engines.lifting.lifter import geodesic_angle

    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])
    straight = torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])
    aa[18] = torch.tensor([0.0, 0.0, math.pi / 3])
    bent_R = axis_angle_to_matrix(aa)[None]
    bent = torch.cat([matrix_to_rotation_6d(bent_R[0]).flatten(), torch.zeros(10)])
    trans = torch.tensor([[0.0, 0.3, 4.0]])
    points = body(bent_R, torch.zeros(1, 10), trans, keypoints="blazepose33").keypoints["blazepose33"][0]
    px = points[:, :2] / points[:, 2:] * 1000 + torch.tensor([640.0, 360.0])
    kp = torch.cat([px, torch.ones(33, 1)], -1)
    kp[[13, 15, 17, 19, 21], 2] = 0.0  # the left elbow, wrist and hand unseen
    world = points - points[[23, 24]].mean(0)

    class StraightArmPrior:  # a denoiser that takes the landmarks and always says "arm straight"
        config = SimpleNamespace(world_landmarks=True)

        def __call__(self, x_t, t, cond):
            return straight.expand(x_t.shape[0], -1)

    def elbow_off_the_lift(lift_weight_world, with_landmarks=True) -> float:
        batch = WindowBatch(x=bent[None, None], trans=trans[None], cond=torch.zeros(1, 1, 202), keypoints=kp[None, None],
                            valid=torch.ones(1, 1, dtype=torch.bool), free=torch.ones(1, 1, dtype=torch.bool),
                            world=(world if with_landmarks else torch.zeros(33, 3))[None, None])
        settings = FitSettings.for_lag(5, iters=3, lift_weight=0.25, lift_weight_world=lift_weight_world,
                                       prior_spread_world=None)
        x, _ = KeypointFitter(StraightArmPrior(), body, settings).refine(batch, CameraParams(K=K))
        R = rotation_6d_to_matrix(x[0, :, :144].view(1, 24, 6))
        return float(geodesic_angle(R[:, 18], bent_R[:, 18])[0])

    plain = elbow_off_the_lift(None)
    assert plain > 0.6 * math.pi / 3, "a lift weight of 0.25 leaves the elbow mostly where the denoiser put it"
    assert elbow_off_the_lift(4.0) < 0.4 * plain
    assert math.isclose(elbow_off_the_lift(4.0, with_landmarks=False), plain, abs_tol=1e-4), "no landmarks: lift_weight"


def test_a_track_back_after_a_gap_keeps_its_shape_in_the_fit(body):
    """``WindowBatch.shape``: the shape a track had before a gap holds its new window's shapes
    (``shape_sigma``), where the lift's shape alone would have moved them."""
    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])
    x = torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])
    trans = torch.tensor([[0.0, 0.3, 4.0]])
    points = body(axis_angle_to_matrix(aa)[None], torch.zeros(1, 10), trans, keypoints="blazepose33").keypoints["blazepose33"][0]
    kp = torch.cat([points[:, :2] / points[:, 2:] * 1000 + torch.tensor([640.0, 360.0]), torch.ones(33, 1)], -1)
    had = torch.full((10,), 0.6)

    def fitted_shape(shape) -> torch.Tensor:
        T = 3
        batch = WindowBatch(x=x.expand(1, T, -1).clone(), trans=trans.expand(1, T, -1).clone(), cond=torch.zeros(1, T, 102),
                            keypoints=kp.expand(1, T, -1, -1).clone(), valid=torch.ones(1, T, dtype=torch.bool),
                            free=torch.ones(1, T, dtype=torch.bool), shape=shape)
        out, _ = KeypointFitter(None, body, FitSettings.for_lag(2, iters=3)).refine(batch, CameraParams(K=K))
        return out[0, :, 144:]

    assert fitted_shape(None).abs().max() < 0.1, "held to nothing: the lift's shape"
    assert fitted_shape(torch.full((1, 10), float("nan"))).abs().max() < 0.1, "NaN: no shape held"
    assert (fitted_shape(had[None]) - had).abs().max() < 0.1, "held to the shape it had"


def test_fit_quality_keeps_bounded_memory_and_reads_quantiles_within_a_bin():
    """A live run may measure millions of points: the quality report keeps counts in fixed
    bins per track, not the points, and its median and p90 are those of the points to
    within half a bin (0.5 %)."""
    from engines.refinement.quality import FitQuality

    rng = np.random.default_rng(3)
    quality = FitQuality()

    def held_bytes():
        return sum(h.counts.nbytes for d in (quality.px, quality.pct) for h in d.values())

    every = {0: [], 1: []}
    for frame in range(3000):
        for tid, scale in ((0, 4.0), (1, 12.0)):
            d = rng.lognormal(np.log(scale), 0.8, 33)
            mask = rng.random(33) > 0.2
            quality.add(tid, d, mask, size=400.0)
            every[tid].append(d[mask])
        if frame == 9:
            early = held_bytes()
    assert held_bytes() == early  # nothing grows with the frames
    s = quality.summary()
    assert s["tracks"][0]["frames"] == 3000 and s["overall"]["frames"] == 6000
    for tid, st in s["tracks"].items():
        d = np.concatenate(every[tid])
        assert st["points"] == d.size
        assert st["median_px"] == pytest.approx(np.median(d), rel=0.006)
        assert st["p90_px"] == pytest.approx(np.percentile(d, 90), rel=0.006)
        assert st["median_pct"] == pytest.approx(np.median(100 * d / 400.0), rel=0.006)
    both = np.concatenate([np.concatenate(v) for v in every.values()])
    assert s["overall"]["p90_px"] == pytest.approx(np.percentile(both, 90), rel=0.006)


def test_windows_whose_free_frames_line_up_fit_as_any_others(body):
    """Live, every window's one free frame is its newest, in the last column, and the fit
    takes its blocks as the window's system directly; windows whose free frames sit in
    different columns go through the padded window system. Both give the same bodies, on
    a real track's keypoints and world landmarks."""
    data = np.load("tests/data/keypoints/sports2d_track2_blazepose33.npz")
    kp_all = torch.from_numpy(data["keypoints"].astype(np.float32))
    world_all = torch.from_numpy(data["world_landmarks"].astype(np.float32))
    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([math.pi, 0, 0])  # upright, facing the camera
    x0 = torch.cat([matrix_to_rotation_6d(axis_angle_to_matrix(aa)).flatten(), torch.zeros(10)])
    trans0 = torch.tensor([0.0, 0.2, 5.0])
    cam = CameraParams(K=torch.tensor([[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]))
    fitter = KeypointFitter(None, body, FitSettings.for_lag(0, iters=2))

    def window(first: int, frames: int, T: int, at_end: bool) -> dict:
        """``frames`` consecutive frames of the track from ``first`` in a window of T columns,
        padded in front (at_end) or behind; the newest is free."""
        pad = T - frames
        cols = slice(pad, T) if at_end else slice(0, frames)
        w = dict(x=x0.repeat(T, 1), trans=trans0.repeat(T, 1), keypoints=torch.zeros(T, 33, 3), world=torch.zeros(T, 33, 3),
                 valid=torch.zeros(T, dtype=torch.bool), free=torch.zeros(T, dtype=torch.bool))
        w["keypoints"][cols], w["world"][cols] = kp_all[first:first + frames], world_all[first:first + frames]
        w["valid"][cols] = True
        w["free"][(T - 1) if at_end else (frames - 1)] = True
        return w

    def fit(windows: list[dict]):
        batch = WindowBatch(cond=torch.zeros(len(windows), windows[0]["x"].shape[0], 102),
                            **{k: torch.stack([w[k] for w in windows]) for k in windows[0]})
        x, trans = fitter.refine(batch, cam)
        return [(x[i][w["free"]], trans[i][w["free"]]) for i, w in enumerate(windows)]

    aligned = fit([window(30, 4, 4, True), window(80, 3, 4, True)])  # free frames in one column
    apart = fit([window(30, 4, 4, True), window(80, 3, 4, False)])  # the second's a column earlier
    for (xa, ta), (xb, tb) in zip(aligned, apart):
        assert torch.allclose(xa, xb, atol=1e-5) and torch.allclose(ta, tb, atol=1e-5)
    assert (aligned[0][0] - x0).abs().max() > 0.05, "the fit moved the bodies"

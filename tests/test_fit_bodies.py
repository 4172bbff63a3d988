"""The keypoint fit hands back the bodies it posed: the online refiner keeps them (the refine
stage publishes them, the next windows take the context frames' joints from them), and they
are the body model's own posing of the fitted estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRACK = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"


@pytest.mark.parametrize("lag", [0, 2])
def test_kept_bodies_are_the_fitted_estimates_posed(lag):
    from calibration.camera_file import camera_or_assumed
    from engines.body.body_model import BodyModel
    from engines.diffusion.denoiser import BETAS, pose_vector, rotations_of
    from engines.diffusion.features import condition_features
    from engines.lifting.lifter import Lifter
    from engines.refinement.fitting import FitSettings, KeypointFitter
    from engines.refinement.guided import CameraParams
    from engines.refinement.online import Observation, OnlineRefiner
    from streamer.lift_file import read_keypoint_file

    track = read_keypoint_file(TRACK)
    camera, _ = camera_or_assumed(None, *track.image_size)
    params = CameraParams.from_camera(camera)
    body = BodyModel.load()
    lifter = Lifter.load(body=body, num_steps=2)
    fitter = KeypointFitter(lifter.denoiser, body, FitSettings.for_run(lag, live=True))
    online = OnlineRefiner(fitter, lag=lag)
    normalised = torch.from_numpy(camera.normalize_keypoints(track.keypoints[:8].astype(np.float64)).astype(np.float32))
    world = torch.from_numpy(track.world[:8].astype(np.float32))
    lifted = lifter.lift(normalised, world)
    x = pose_vector(lifted_rotations(lifted), lifted.betas)
    cond = condition_features(normalised, world, world=lifter.uses_world_landmarks)
    checked = 0
    for i in range(8):
        obs = Observation(x[i], lifted.trans[i], cond[i], torch.from_numpy(track.keypoints[i].astype(np.float32)),
                          world[i])
        online.update(i, {0: obs}, params)
        done = i - lag
        if done < 0:
            continue
        est_x, est_t = online.estimate(0, done)
        joints, points = online.body(0, done)
        with torch.no_grad():
            posed = body(rotations_of(est_x[None]), est_x[None, BETAS], est_t[None], keypoints="blazepose33")
        torch.testing.assert_close(joints, posed.joints[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(points, posed.keypoints["blazepose33"][0], atol=1e-5, rtol=0)
        checked += 1
    assert checked == 8 - lag


def lifted_rotations(result):
    from engines.body.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(result.poses.view(-1, 24, 3))


def test_the_lifts_handover_gives_the_fit_what_it_would_compute():
    """The refine stage takes the lift's condition and rotations for the same keypoints
    instead of computing them again: the observations are the same either way."""
    from calibration.camera_file import camera_or_assumed
    from engines.body.body_model import BodyModel
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import plan_run
    from streamer.app import RunConfig
    from streamer.frames import Frame, Person
    from streamer.lift_file import read_keypoint_file
    from streamer.lift_stage import LiftStage
    from streamer.refine_stage import RefineStage

    track = read_keypoint_file(TRACK)
    camera, _ = camera_or_assumed(None, *track.image_size)
    plan = plan_run(RunConfig(source="test"), "live")
    body = BodyModel.load()
    lift, refine = LiftStage(camera, build_lifter(plan, body)), RefineStage(camera, build_refiner(plan, body), body)
    persons = [Person(t, 1.0, {"keypoints_blazepose33": track.keypoints[40 + t].astype(np.float32),
                               "world_blazepose33": track.world[40 + t].astype(np.float32)}) for t in range(3)]
    frame = lift.process(Frame(0, None, 0.0, tuple(track.image_size), persons=persons))
    assert all("lift" in p.handover for p in persons)
    handed = refine._observations(frame)
    for p in persons:
        p.handover.clear()
    computed = refine._observations(frame)
    for t in range(3):
        torch.testing.assert_close(handed[t].cond, computed[t].cond, atol=1e-6, rtol=0)
        torch.testing.assert_close(handed[t].x, computed[t].x, atol=1e-5, rtol=0)


def _two_person_frames(track, count: int):
    from streamer.frames import Frame, Person

    for i in range(count):
        persons = []
        for t in range(2):
            kp = track.keypoints[i].astype(np.float32).copy()
            kp[:, 0] += 300.0 * t
            persons.append(Person(t, 1.0, {"keypoints_blazepose33": kp, "world_blazepose33": track.world[i].astype(np.float32)}))
        yield Frame(i, None, 0.0, tuple(track.image_size), persons=persons)


@pytest.mark.parametrize("linked", [False, True])
def test_the_lift_makes_the_fits_first_prior_call_in_its_own(linked):
    """Live (one denoising step), the lift's network call also denoises what the fit's first
    prior call would (each track's last estimate, brought to the fit's noise level): the fit
    then calls the network only for a track's first frame, and publishes the bodies it
    publishes when it calls the network itself (float32: the same up to rounding)."""
    from calibration.camera_file import camera_or_assumed
    from engines.body.body_model import BodyModel
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import plan_run
    from streamer.app import RunConfig, link_prior_calls
    from streamer.lift_file import read_keypoint_file
    from streamer.lift_stage import LiftStage
    from streamer.refine_stage import RefineStage

    track = read_keypoint_file(TRACK)
    camera, _ = camera_or_assumed(None, *track.image_size)
    plan = plan_run(RunConfig(source="test", denoiser_precision="fp32"), "live")
    body = BodyModel.load()
    runs = {}
    for link in (False, linked):
        lift, refine = LiftStage(camera, build_lifter(plan, body)), RefineStage(camera, build_refiner(plan, body), body)
        assert lift.lifter.takes_riders  # one step: sampled step by step
        if link:
            link_prior_calls(lift, refine)
        fitter = refine.online.refiner
        calls = []
        network = fitter.model
        fitter.model = lambda x_t, t, cond: (calls.append(len(x_t)), network(x_t, t, cond))[1]
        joints = []
        with torch.inference_mode():
            for frame in _two_person_frames(track, 12):
                out = refine.process(lift.process(frame))
                joints.append(np.stack([p.arrays["joints"] for p in out.persons]))
        runs[link] = (calls, np.stack(joints))
    assert runs[False][0] == [2] * 12  # both persons, every frame
    if linked:
        assert runs[True][0] == [2]  # the first frame only: no estimate to start from yet
        np.testing.assert_allclose(runs[True][1], runs[False][1], atol=2e-4, rtol=0)


def test_the_fit_takes_a_prepared_prediction_only_where_its_input_is_its_own():
    """A prediction made elsewhere (PriorGuess) replaces the network's only for rows whose
    input is exactly the fit's: the others are computed, and nothing else changes."""
    from engines.body.body_model import BodyModel
    from engines.diffusion.weights import load_denoiser
    from engines.refinement.fitting import FitSettings, KeypointFitter

    model = load_denoiser()
    fitter = KeypointFitter(model, BodyModel.load(), FitSettings.for_run(0, live=True))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 154, generator=g)
    cond = torch.randn(3, model.config.cond_dim, generator=g)
    t, x_t = fitter.first_prior_input(x)
    with torch.no_grad():
        own = model(x_t, torch.full((3,), t), cond)
    rows = []
    fitter.model = lambda a, b, c: (rows.append(len(a)), model(a, b, c))[1]
    lift = torch.zeros(3, 154)
    weight = torch.ones(3, 1)
    stale = x_t.clone()
    stale[1] += 1e-3  # the track moved on since the guess was made
    marked = own.clone()
    marked[1] = 99.0  # a wrong prediction where the input is stale: must not be taken
    with torch.no_grad():
        pulled = fitter._prior(fitter_x_now(x), lift, cond, t, weight, (stale, marked))
    assert rows == [1]
    torch.testing.assert_close(pulled, own / 2, atol=1e-5, rtol=0)


def fitter_x_now(x):
    """The estimate the fit's first prior call brings to its noise level (6D re-orthonormalised)."""
    from engines.body.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix

    R = rotation_6d_to_matrix(x[:, :144].reshape(-1, 24, 6))
    return torch.cat([matrix_to_rotation_6d(R).flatten(1), x[:, 144:]], -1)

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

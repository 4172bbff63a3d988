"""The run plan: every mode- and machine-dependent setting resolved once, from the mode's
defaults (engines.run_defaults) and the command line; the stages are built from it, and a
run prints it with -v and writes it to --stats-json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from engines.run_defaults import (BACKGROUND_DETECTOR_NICE, BACKGROUND_DETECTOR_SWEEP_CALLS, KEYPOINTS_NICE, LIFT_SAMPLES,
                                  LIFT_STEPS, LIVE_FIT_DEADLINE_S, PACED_DECODER_NICE, REFINE_LAG)
from streamer.app import RunConfig, processing_stages
from engines.run_plan import PlanError, plan_run

CLIP = str(Path(__file__).parent / "data" / "sports2d_demo.mp4")


def test_mode_defaults_come_from_one_place():
    live, offline = plan_run(RunConfig(source="x"), "live"), plan_run(RunConfig(source="x"), "offline")
    assert (live.lift_steps, offline.lift_steps) == (LIFT_STEPS["live"], LIFT_STEPS["offline"]) == (1, 4)
    assert (live.refine_lag, offline.refine_lag) == (REFINE_LAG["live"], REFINE_LAG["offline"]) == (0, 5)
    assert live.lift_samples == offline.lift_samples == LIFT_SAMPLES == 8
    # The fit's budgets, as FitSettings.for_run gives them.
    assert (live.refine_iters, live.refine_prior_times) == (1, (100,))
    assert (offline.refine_iters, offline.refine_prior_times) == (2, (100, 50))
    assert live.background_detection and not offline.background_detection
    assert (live.detector_nice, offline.detector_nice) == (BACKGROUND_DETECTOR_NICE, 0) == (10, 0)
    # Live, a look at every detector tile is spread over several background calls.
    assert (live.detector_sweep_calls, offline.detector_sweep_calls) == (BACKGROUND_DETECTOR_SWEEP_CALLS, 1) == (4, 1)
    tiled = plan_run(RunConfig(source="x", detector_tile_size=400), "live").describe()
    assert "detector tiles of 400 px (each look at them spread over 4 calls)" in tiled
    # Live, the keypoints of the next frame give way to the lift and fit of the frame in flight.
    assert (live.keypoints_nice, offline.keypoints_nice) == (KEYPOINTS_NICE, 0) == (10, 0)
    assert "nice +10 (below lift and fit)" in live.describe() and "nice" not in offline.describe()
    # Live, a file played like a camera decodes the next frame below the frames in flight.
    assert (live.decoder_nice, offline.decoder_nice) == (PACED_DECODER_NICE, 0) == (15, 0)
    # Live frames that reach the fit too late keep the lift; offline every frame is fitted.
    assert (live.fit_deadline_s, offline.fit_deadline_s) == (LIVE_FIT_DEADLINE_S, None) == (0.1, None)
    assert plan_run(RunConfig(source="x", refine=False), "live").fit_deadline_s is None
    for plan in (live, offline):  # nothing is left for a stage to resolve
        assert all(e.backend != "auto" for e in (plan.keypoints, plan.lift, plan.refine))


def test_the_command_line_wins_and_switches_stages_off():
    plan = plan_run(RunConfig(source="x", lift_steps=3, lift_samples=4, refine_lag=2, refine_steps=3,
                              max_persons=2, world_landmarks=False), "live")
    assert (plan.lift_steps, plan.lift_samples, plan.refine_lag, plan.refine_iters) == (3, 4, 2, 3)
    assert plan.max_persons == 2 and not plan.world_landmarks
    assert plan.fit_settings().iters == 3 and plan.fit_settings().world_weight > 0
    assert plan_run(RunConfig(source="x", refine=False), "offline").refine is None
    no_lift = plan_run(RunConfig(source="x", lift=False), "offline")
    assert no_lift.lift is None and no_lift.refine is None and no_lift.keypoints is not None
    assert plan_run(RunConfig(source="x", perception=False), "offline").keypoints is None


def test_refine_backends_and_their_checks():
    # The fit's prior is one forward call: compiled engines fall back to torch there.
    plan = plan_run(RunConfig(source="x", backend="refine=torch-compile", denoiser_precision="fp32"), "live")
    assert plan.refine.backend == "torch"
    with pytest.raises(PlanError, match="int8 runs on onnxruntime"):
        plan_run(RunConfig(source="x", backend="refine=torch", denoiser_precision="int8"), "live")
    with pytest.raises(PlanError, match="unknown backend"):
        plan_run(RunConfig(source="x", backend="lift=cuda"), "live")


def test_stages_get_engines_built_as_the_plan_says():
    from calibration.camera_file import camera_or_assumed
    from engines.diffusion.onnx_denoiser import ForwardOnly

    camera, _ = camera_or_assumed(None, 640, 480)
    plan = plan_run(RunConfig(source="x", lift_steps=3, max_persons=2), "live")
    keypoints, lift, refine = processing_stages(plan, camera)
    assert keypoints.keypoints.max_persons == 2 and keypoints.keypoints._background is not None
    lifter = lift.lifter
    assert (lifter.num_steps, lifter.num_samples) == (3, LIFT_SAMPLES)
    assert lifter.engine_info.backend == plan.lift.backend == "onnxruntime"
    assert lifter.engine_info.precision == plan.lift.precision == "int8"
    assert lifter.engine_info.details["K"] == 3
    assert refine.lag == REFINE_LAG["live"] and refine.online.refiner.settings == plan.fit_settings()
    assert isinstance(refine.online.refiner.model, ForwardOnly)  # int8 on ONNX Runtime, as planned
    assert refine.body is lifter.body  # one body model for both
    keypoints.close()


def test_the_lifter_refuses_a_sampler_built_for_another_k():
    from engines.body.body_model import BodyModel
    from engines.diffusion.weights import load_denoiser
    from engines.lifting.lifter import Lifter
    from engines.runtime.models import load_sampler

    model = load_denoiser()
    sampler = load_sampler("onnxruntime", "cpu", model, num_steps=2, num_samples=4)
    with pytest.raises(ValueError, match="built for K = 2"):
        Lifter(model, BodyModel.load(), num_steps=4, sampler=sampler)


def test_a_run_prints_its_plan_with_v_and_writes_it_to_stats_json(tmp_path, caplog):
    from streamer.cli import main

    stats = tmp_path / "stats.json"
    with caplog.at_level(logging.DEBUG, logger="smplstream.run"):
        assert main(["-v", "run", "--source", CLIP, "--publish", "none", "--max-frames", "4",
                     "--stats-json", str(stats)]) == 0
    plan = json.loads(stats.read_text())["plan"]
    assert plan["mode"] == "offline" and plan["lift_steps"] == 4 and plan["refine_lag"] == 5
    assert plan["lift"]["backend"] in ("onnxruntime", "torch", "torch-compile", "tensorrt")
    assert plan["refine"]["precision"] == "fp32" and plan["refine_prior_times"] == [100, 50]
    assert any("run plan" in r.getMessage() and "K = 4 steps" in r.getMessage() for r in caplog.records)


def test_run_config_restates_none_of_the_plans_options():
    from dataclasses import fields

    from engines.run_plan import PlanOptions

    assert issubclass(RunConfig, PlanOptions)
    # Each option the plan reads has its default in PlanOptions only, not again in RunConfig.
    assert not {f.name for f in fields(PlanOptions)} & set(RunConfig.__annotations__)
    assert plan_run(RunConfig(source="x"), "offline") == plan_run(PlanOptions(), "offline")


def test_the_evaluations_plan_one_setting_at_a_time():
    from argparse import Namespace

    from engines.refinement.evaluate import evaluation_plans
    from engines.refinement.fitting import FitSettings
    from engines.training.evaluate import lift_plan

    args = Namespace(precision="fp32", weights=None, threads=1, lift_steps=None, lift_samples=None,
                     settings='{"prior_sigma": 0.2, "iters": 3}', lags=[0, 5])
    lifts, fits = evaluation_plans(args)
    assert lifts.refine is None and (lifts.lift_steps, lifts.lift_samples) == (LIFT_STEPS["offline"], LIFT_SAMPLES)
    assert (lifts.lift.backend, lifts.lift.precision) == ("onnxruntime", "fp32")
    for lag, plan in fits.items():  # L = 0 fitted as live runs fit, the others as offline runs
        assert plan.refine_lag == lag and plan.mode == ("live" if lag == 0 else "offline")
        assert plan.lift_steps == lifts.lift_steps and (plan.refine.backend, plan.refine.precision) == ("torch", "fp32")
        assert plan.fit_settings() == FitSettings.for_run(lag, lag == 0, prior_sigma=0.2, iters=3)
    assert fits[0].fit_settings().prior_times == (100,) and fits[5].refine_iters == 3
    _, int8 = evaluation_plans(Namespace(**{**vars(args), "precision": "int8", "settings": None}))
    assert all((p.refine.backend, p.refine.precision, p.lift.precision) == ("onnxruntime", "int8", "int8")
               for p in int8.values())
    with pytest.raises(PlanError, match="fit's settings"):
        evaluation_plans(Namespace(**{**vars(args), "settings": '{"prior_sigma": -1}'}))
    plan = lift_plan(Namespace(precision="fp32", samples=None, weights=None, threads=2, world_landmarks=False), 10)
    assert (plan.lift.backend, plan.lift.precision, plan.lift_steps, plan.lift_samples) == ("torch", "fp32", 10, 8)
    assert plan.lift.threads == 2 and plan.refine is None


def test_evaluate_lifter_lifts_as_the_eager_reference_through_the_plan():
    """evaluate-lifter's figures are the eager float32 network's: the lifter built from its
    plan lifts the clip's keypoints exactly as one built by hand on the loaded network."""
    from argparse import Namespace

    import numpy as np
    import torch

    from engines.body.body_model import BodyModel
    from engines.diffusion.weights import load_denoiser
    from engines.lifting.lifter import Lifter
    from engines.run_engines import build_lifter
    from engines.training.evaluate import lift_plan

    from calibration.camera_file import camera_or_assumed

    with np.load(Path(__file__).parent / "data" / "keypoints" / "sports2d_walker_blazepose33.npz") as f:
        pixels, size = f["keypoints"][:6], f["image_size"]
    camera, _ = camera_or_assumed(None, *size)  # the pinhole a run assumes
    keypoints = camera.normalize_keypoints(pixels).astype(np.float32)
    body = BodyModel.load()
    plan = lift_plan(Namespace(precision="fp32", samples=None, weights=None, threads=1, world_landmarks=False), 4)
    planned = build_lifter(plan, body, seed=3).lift(torch.from_numpy(keypoints))
    by_hand = Lifter(load_denoiser(), body, num_steps=4, num_samples=8, seed=3).lift(torch.from_numpy(keypoints))
    assert planned.valid.any()
    torch.testing.assert_close(planned.poses, by_hand.poses, rtol=0, atol=0)
    torch.testing.assert_close(planned.joints_std, by_hand.joints_std, rtol=0, atol=0)


def test_a_setting_that_cannot_run_is_one_line(tmp_path, capsys):
    """The plan's PlanError (an unknown backend) and its builders' (weights that are not
    there) reach the user as one line, exit status 2."""
    from streamer.cli import main

    assert main(["run", "--source", CLIP, "--publish", "none", "--backend", "lift=cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "smplstream: error: --backend lift=cuda: unknown backend 'cuda' (choose from auto, onnxruntime, " \
                  "torch, torch-compile, tensorrt)"
    keypoints = Path(__file__).parent / "data" / "keypoints" / "sports2d_walker_blazepose33.npz"
    assert main(["lift", str(keypoints), "--out", str(tmp_path / "out.npz"), "--weights", str(tmp_path / "no.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smplstream: error:") and "no.pt" in err[0], err
    assert not (tmp_path / "out.npz").exists()


def test_world_weight_reaches_the_fit_from_the_command_line(capsys):
    """``--world-weight`` sets the fit's trust in the landmarks (default from run_defaults);
    a negative one is refused before anything opens."""
    from engines.run_defaults import WORLD_WEIGHT
    from streamer.cli import build_parser, main, processing_config

    def plan_of(*flags):
        args = build_parser().parse_args(["run", "--source", CLIP, *flags])
        return plan_run(RunConfig(source=CLIP, **processing_config(args)), "live")

    assert plan_of().fit_settings().world_weight == WORLD_WEIGHT
    assert plan_of("--world-weight", "1.5").fit_settings().world_weight == 1.5
    assert main(["run", "--source", CLIP, "--publish", "none", "--world-weight", "-1"]) == 2
    assert "--world-weight -1.0: give 0" in capsys.readouterr().err

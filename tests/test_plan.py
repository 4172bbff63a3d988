"""The run plan: every mode- and machine-dependent setting resolved once, from the mode's
defaults (engines.run_defaults) and the command line; the stages are built from it, and a
run prints it with -v and writes it to --stats-json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS, REFINE_LAG
from streamer.app import RunConfig, processing_stages
from streamer.errors import ConfigError
from streamer.plan import plan_run

CLIP = str(Path(__file__).parent / "data" / "sports2d_demo.mp4")


def test_mode_defaults_come_from_one_place():
    live, offline = plan_run(RunConfig(source="x"), "live"), plan_run(RunConfig(source="x"), "offline")
    assert (live.lift_steps, offline.lift_steps) == (LIFT_STEPS["live"], LIFT_STEPS["offline"]) == (2, 4)
    assert (live.refine_lag, offline.refine_lag) == (REFINE_LAG["live"], REFINE_LAG["offline"]) == (0, 5)
    assert live.lift_samples == offline.lift_samples == LIFT_SAMPLES == 8
    # The fit's budgets, as FitSettings.for_run gives them.
    assert (live.refine_iters, live.refine_prior_times) == (1, (100,))
    assert (offline.refine_iters, offline.refine_prior_times) == (2, (100, 50))
    assert live.background_detection and not offline.background_detection
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
    with pytest.raises(ConfigError, match="int8 runs on onnxruntime"):
        plan_run(RunConfig(source="x", backend="refine=torch", denoiser_precision="int8"), "live")
    with pytest.raises(ConfigError, match="unknown backend"):
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

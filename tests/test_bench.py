"""The benchmark: synthetic camera, ``bench`` output, backend comparison, live start gate."""

from __future__ import annotations

import json
import os
import time

import pytest

from engines.run_plan import PlanError, stage_backends
from streamer.app import RunConfig, build_pipeline
from streamer.bench import end_to_end, format_compare
from streamer.bench import main as bench_main
from streamer.errors import ConfigError
from streamer.graph import Stage
from streamer.machine import core_speed
from engines.perception.person_keypoints import PersonKeypoints
from streamer.synthetic_source import SyntheticPeopleSource, grid_shape


def test_synthetic_source_paces_frames_of_the_clip_size():
    source = SyntheticPeopleSource(1, rate=50.0, frames=6, realtime=True)
    assert source.size == (1768, 994) and source.is_live
    t0 = time.monotonic()
    frames = list(source.frames())
    elapsed = time.monotonic() - t0
    assert [f.index for f in frames] == list(range(6))
    assert all(f.image.shape == (994, 1768, 3) for f in frames)
    assert frames[1].image is not frames[0].image  # a fresh buffer per frame, like a camera
    assert [f.stream_time for f in frames] == pytest.approx([i / 50 for i in range(6)])
    assert elapsed >= 5 / 50 - 0.005  # paced at the rate, not as fast as possible
    stamps = [f.capture_time for f in frames]
    assert stamps == sorted(stamps) and t0 <= stamps[0] and stamps[-1] - t0 >= 5 / 50 - 0.005


@pytest.mark.parametrize("people", [1, 3])
def test_keypoints_find_every_pasted_person(people):
    source = SyntheticPeopleSource(people, frames=3, realtime=False)
    assert len(source.boxes) == people
    keypoints = PersonKeypoints(max_persons=people, detector_tile_size=source.detector_tile_size)
    counts = [len(keypoints.process(f.image, f.index)) for f in source.frames()]
    assert counts[-1] == people  # the tracker reports a person from their second frame
    found = keypoints.process(source.image, 3)
    for person in found:  # each found person stands in one of the pasted boxes
        cx, cy = (person.box[:2] + person.box[2:]) / 2
        assert any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in source.boxes)


def test_synthetic_people_count_is_checked():
    with pytest.raises(ConfigError, match="1 to 16"):
        SyntheticPeopleSource(17, frames=1)
    assert grid_shape(16) == (4, 4) and grid_shape(2) == (2, 1)


def test_bench_json_has_every_stage(capsys):
    assert bench_main(["--synthetic", "1", "--frames", "14", "--warmup", "4", "--mode", "offline", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    run = out["runs"][0]
    assert set(run["stages"]) >= {"keypoints", "lift", "refine", "publish"}
    for stage in ("keypoints", "lift", "refine"):
        st = run["stages"][stage]
        assert set(st["busy_ms"]) == {"p50", "p95", "p99"}
        assert st["busy_ms"]["p50"] > 0 and st["cpu_ms_per_frame"] > 0 and st["throughput_fps"] > 0
        assert st["frames"] == 10
    assert run["frames"] == 10 and run["fps"] > 0 and run["drops_total"] == 0
    assert run["glass_to_output_ms"]["p99"] >= run["glass_to_output_ms"]["p50"] > 0
    assert run["persons_per_frame"]["max"] == 1
    assert out["machine"]["cores"] >= 1
    kp = run["overload"]["keypoints"]  # the person was found by a crop of a region not yet followed
    assert kp["newcomer_crops"] >= kp["newcomer_crops_kept"] >= 1
    # The tail's frames, slowest first, each with every stage's wait and busy time.
    slowest = run["slowest_frames"]
    assert len(slowest) == 10 and all(r["frame"] >= 4 for r in slowest)
    latencies = [r["end_to_end_ms"] for r in slowest]
    assert latencies == sorted(latencies, reverse=True) and latencies[0] >= end_to_end(run)[1]["p99"] - 0.05
    for r in slowest:
        assert set(r["stages"]) >= {"keypoints", "lift", "refine", "publish"}
        spent = sum(t["wait_ms"] + t["busy_ms"] for t in r["stages"].values())
        assert abs(spent - r["end_to_end_ms"]) < 1.0 + 0.1 * len(r["stages"]), r  # the stages add up to it


def test_bench_compare_prints_ratio(capsys):
    argv = ["--synthetic", "1", "--frames", "8", "--warmup", "2", "--mode", "offline", "--no-refine",
            "--compare", "lift=onnxruntime", "lift=torch", "--json"]
    assert bench_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in out["runs"]] == ["lift=onnxruntime", "lift=torch"]
    ratio = out["ratios_to_first"]["lift=torch"]["lift_p50"]
    lift_ms = [r["stages"]["lift"]["busy_ms"]["p50"] for r in out["runs"]]
    assert ratio == pytest.approx(lift_ms[1] / lift_ms[0], rel=0.01)
    text = format_compare(out["runs"])  # what the command prints without --json
    assert "lift=torch/lift=onnxruntime" in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.startswith("lift p50 ms"))
    assert float(row.split()[-1]) == pytest.approx(ratio, abs=0.01)


def test_core_speed_times_work_on_every_core():
    """The probe bench_live takes before each round: units of work timed on every core at once."""
    speed = core_speed(seconds=0.3)
    assert speed["cores"] == (os.cpu_count() or 1)
    assert 0 < speed["unit_ms_p50"] <= speed["unit_ms_p90"] < 300  # a unit is 4-8 ms on the 2-core machine
    assert 0 < speed["unit_ms_alone"] < 300
    assert abs(speed["share"] - speed["unit_ms_alone"] / speed["unit_ms_p50"]) < 0.02


def test_backend_spec():
    assert stage_backends("torch") == {"keypoints": "torch", "lift": "torch", "refine": "torch"}
    assert stage_backends("lift=torch") == {"keypoints": "auto", "lift": "torch", "refine": "auto"}
    with pytest.raises(PlanError, match="unknown backend"):
        stage_backends("cuda")
    with pytest.raises(PlanError, match="unknown stage"):
        stage_backends("publish=torch")
    pytest.importorskip("onnx")  # the torch backends of the perception models read the ONNX graphs
    keypoints = PersonKeypoints(backend="torch")  # the backend reaches both perception engines
    assert keypoints.detector.engine.info.backend == "torch"
    assert keypoints.landmarker.engine.info.backend == "torch"


class _SlowStart(Stage):
    name = "slow"

    def start(self) -> None:
        time.sleep(0.6)  # a model that takes a while to load


def test_live_source_waits_for_the_stages_to_start():
    source = SyntheticPeopleSource(1, rate=50.0, frames=8, realtime=True)
    config = RunConfig(source="synthetic", mode="live", publish=None, perception=False, progress=False)
    pipeline, stats, plan = build_pipeline(config, extra_stages=[_SlowStart()], source=source)
    result = pipeline.run(handle_signals=False)
    summary = stats.summary(result)
    assert plan.mode == "live" and result.frames_in == 8
    # Without the gate all 8 frames (0.16 s) would be captured while the stage loads (0.6 s)
    # and the one left in the queue would wait over 0.4 s.
    assert summary["glass_to_output_ms"]["p99"] < 300


def test_detector_cadence_counts_processed_frames_not_dropped_ones():
    from streamer.frames import Frame
    from engines.perception.person_keypoints import PersonKeypoints
    from streamer.keypoints_stage import KeypointsStage

    source = SyntheticPeopleSource(1, frames=1, realtime=False)
    stage = KeypointsStage(PersonKeypoints(detect_every=10))
    for i in range(6):  # live mode after drops: source indices 0, 25, 50, ...
        frame = stage.process(Frame(index=25 * i, image=source.image, capture_time=0.0, source_size=source.size))
    assert len(frame.persons) == 1
    assert stage.keypoints.detector_runs == 1  # not once per processed frame


def test_refine_on_onnxruntime_matches_torch():
    """The refinement's denoiser on ONNX Runtime (forward only, guide="x0") gives the same
    refined bodies as eager torch."""
    import copy

    import numpy as np

    from calibration.camera_file import camera_or_assumed
    from engines.diffusion.onnx_denoiser import ForwardOnly
    from streamer.frames import Frame
    from engines.run_plan import plan_run
    from streamer.app import processing_stages

    source = SyntheticPeopleSource(1, frames=1, realtime=False)
    camera, _ = camera_or_assumed(None, *source.size)
    refiners = {}
    for backend in ("torch", "onnxruntime"):
        config = RunConfig(source="x", backend=f"refine={backend}", lift_steps=2, refine_lag=0,
                           denoiser_precision="fp32")
        keypoints, lift, refiners[backend] = processing_stages(plan_run(config, "offline"), camera)
    for stage in (keypoints, lift, *refiners.values()):
        stage.start()
    assert isinstance(refiners["onnxruntime"].online.refiner.model, ForwardOnly)
    for i in range(3):
        frame = lift.process(keypoints.process(Frame(index=i, image=source.image, capture_time=0.0,
                                                     source_size=source.size)))
        out = {b: r.process(copy.deepcopy(frame)) for b, r in refiners.items()}
    a, b = (out[k].persons[0].arrays for k in ("torch", "onnxruntime"))
    assert not np.allclose(a["poses"], frame.persons[0].arrays["poses"])  # refinement did something
    np.testing.assert_allclose(a["poses"], b["poses"], atol=2e-3)
    np.testing.assert_allclose(a["trans"], b["trans"], atol=1e-3)

"""The stage graph: queue policies, ordering, held-back frames, failures and stop."""

import os
import sys
import threading
import time

import numpy as np
import pytest

from streamer.errors import PipelineError
from streamer.frames import Frame
from streamer.graph import Pipeline, Stage
from streamer.latency import LatencyStats, format_table
from streamer.queues import END_OF_STREAM, FrameQueue


class ListSource:
    name = "list"
    is_live = False

    def __init__(self, n, interval=0.0):
        self.n, self.interval, self.closed = n, interval, False

    def frames(self):
        for i in range(self.n):
            if self.interval:
                time.sleep(self.interval)
            yield Frame(index=i, image=np.zeros((2, 2, 3), np.uint8), capture_time=time.monotonic(),
                        source_size=(2, 2))

    def close(self):
        self.closed = True


class Collect(Stage):
    name = "collect"

    def __init__(self):
        self.seen, self.closed = [], False

    def process(self, frame):
        self.seen.append(frame.index)
        return frame

    def close(self):
        self.closed = True


class Slow(Stage):
    name = "slow"

    def __init__(self, delay):
        self.delay = delay

    def process(self, frame):
        time.sleep(self.delay)
        return frame


class Lag(Stage):
    """Holds two frames back, like a fixed-lag smoother with L = 2."""

    name = "lag"

    def __init__(self):
        self.held = []

    def process(self, frame):
        self.held.append(frame)
        return self.held.pop(0) if len(self.held) > 2 else None

    def finish(self):
        out, self.held = self.held, []
        return out


class Boom(Stage):
    name = "boom"

    def process(self, frame):
        if frame.index == 5:
            raise RuntimeError("kaboom at 5")
        return frame


def test_drop_oldest_queue_keeps_the_newest_and_counts():
    q = FrameQueue("q", 2, "drop_oldest")
    for i in range(5):
        q.put(i)
    q.put(END_OF_STREAM)
    assert [q.get(), q.get(), q.get()] == [3, 4, END_OF_STREAM]
    assert q.drops == 3


def test_block_queue_waits_for_room_and_gives_up_on_stop():
    q = FrameQueue("q", 1, "block")
    q.put(1)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert q.put(2, stop) is False
    assert time.monotonic() - t0 >= 0.15 and q.drops == 0 and len(q) == 1


def test_offline_pipeline_delivers_every_frame_in_order_with_held_back_frames():
    collect = Collect()
    stats = LatencyStats()
    p = Pipeline(ListSource(50), [Slow(0.001), Lag(), collect], queue_size=2, policy="block",
                 observer=stats)
    result = p.run(handle_signals=False)
    assert collect.seen == list(range(50)) and collect.closed
    assert result.frames_in == result.frames_out == 50
    assert sum(result.queue_drops.values()) == 0
    summary = stats.summary(result)
    assert set(summary["stages"]) == {"grab", "slow", "lag", "collect"}
    assert summary["stages"]["slow"]["busy_ms"]["p50"] >= 1.0
    assert "capture -> output" in format_table(summary)


def test_a_failing_stage_stops_everything_names_itself_and_downstream_still_closes():
    collect = Collect()
    source = ListSource(1000)
    p = Pipeline(source, [Boom(), collect], queue_size=2, policy="block")
    with pytest.raises(PipelineError, match="stage 'boom' failed: RuntimeError: kaboom at 5"):
        p.run(handle_signals=False)
    assert collect.seen == [0, 1, 2, 3, 4] and collect.closed and source.closed
    assert p.result.frames_in < 1000


def test_frames_already_past_a_failing_stage_still_reach_the_outputs():
    """Boom fails at frame 5 while frames 0-4 are still queued in front of a slow stage: they
    were captured and processed, so they drain to the end instead of being dropped."""
    collect = Collect()
    p = Pipeline(ListSource(1000), [Boom(), Slow(0.05), Lag(), collect], queue_size=1, policy="block")
    with pytest.raises(PipelineError, match="kaboom at 5"):
        p.run(handle_signals=False)
    assert collect.seen == [0, 1, 2, 3, 4]


def test_stop_drains_what_is_queued_and_closes_all_stages():
    collect = Collect()
    p = Pipeline(ListSource(10_000, interval=0.001), [Slow(0.002), collect], queue_size=2,
                 policy="block")
    threading.Timer(0.3, p.stop).start()
    result = p.run(handle_signals=False)
    assert result.stopped_by == "stop()" and collect.closed
    assert 10 < result.frames_out < 10_000
    assert collect.seen == list(range(result.frames_out))  # nothing lost between stages


def test_max_frames_ends_the_run():
    collect = Collect()
    result = Pipeline(ListSource(100), [collect], queue_size=1, policy="block", max_frames=7).run(
        handle_signals=False)
    assert collect.seen == list(range(7)) and result.frames_in == 7


def test_latency_samples_stay_bounded_and_keep_their_percentiles():
    from streamer.latency import Samples, _percentiles

    exact = Samples(capacity=1000)
    for v in range(1000):
        exact.append(v / 1000)
    assert _percentiles(exact)["p50"] == pytest.approx(499.5, abs=0.01)  # exact below capacity
    long_run = Samples(capacity=2000)
    rng = np.random.default_rng(0)
    for v in rng.uniform(0.0, 0.1, 50_000):  # 25 times the capacity
        long_run.append(float(v))
    assert len(long_run) == 50_000 and len(long_run.values()) == 2000
    p = _percentiles(long_run)
    assert p["p50"] == pytest.approx(50.0, abs=4.0) and p["p99"] == pytest.approx(99.0, abs=1.0)


class Priority(Stage):
    """Records the scheduling priority of its own thread and of a thread it starts."""

    name = "priority"

    def __init__(self, nice):
        self.nice, self.seen = nice, {}

    def _record(self, key):
        self.seen[key] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def process(self, frame):
        self._record("stage")
        helper = threading.Thread(target=self._record, args=("helper",))
        helper.start()
        helper.join()
        return frame


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread has a priority of its own on Linux only")
def test_a_stage_with_nice_runs_below_the_others_and_so_do_its_helpers():
    """Live mode's keypoints stage gives the cores to the stages after it: its thread, and the
    threads it starts (the landmark sessions, the detector), run ``nice`` levels lower."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    low, plain = Priority(3), Priority(0)
    Pipeline(ListSource(2), [low, plain], queue_size=2, policy="block").run(handle_signals=False)
    if base + 3 > 19:
        pytest.skip("already at the lowest priority")
    assert low.seen == {"stage": base + 3, "helper": base + 3}
    assert plain.seen == {"stage": base, "helper": base}


def test_stages_run_without_autograd_and_leave_the_process_able_to_train():
    """Stages run under torch.inference_mode (the lift and fit's small operations cost less
    CPU); the constants they cache for the process are ordinary tensors, so a gradient
    through the body model still works after a run in the same process."""
    import torch

    from engines.body import body_model, kinematics
    from engines.refinement import smoothing

    body = body_model.BodyModel.load()
    for cached in (body_model._parent_index, body_model._subtree_matrix, kinematics._level_plan,
                   smoothing._prox_operator):
        cached.cache_clear()  # filled afresh inside the stage below

    class Pose(Stage):
        name = "pose"
        modes: list[bool] = []

        def process(self, frame):
            self.modes.append(torch.is_inference_mode_enabled())
            body(torch.eye(3).expand(1, 24, 3, 3), torch.zeros(1, 10))
            body.pose_jacobian(torch.eye(3).expand(1, 24, 3, 3), torch.zeros(1, 10), torch.zeros(1, 3))
            smoothing.smooth_prox(torch.zeros(1, 6, 3), torch.ones(1, 6, dtype=torch.bool),
                                  torch.ones(1, 6, dtype=torch.bool), 1.0, 1.0)
            return frame

    Pipeline(ListSource(2), [Pose()], queue_size=2, policy="block").run(handle_signals=False)
    assert Pose.modes == [True, True]
    betas = torch.zeros(1, 10, requires_grad=True)
    body(torch.eye(3).expand(1, 24, 3, 3), betas).joints.sum().backward()
    assert betas.grad is not None and torch.isfinite(betas.grad).all()

"""The pipeline end to end on the real clip, with real ZeroMQ sockets on 127.0.0.1."""

import threading

import numpy as np

from conftest import CLIP_FRAMES
from streamer.app import RunConfig, run
from streamer.graph import Pipeline
from streamer.latency import LatencyStats
from streamer.outputs import OutputStage
from streamer.publisher import ZmqPublisher
from streamer.sources import open_source
from streamer.subscriber import Subscriber
from synthetic import SyntheticPersons


def test_video_file_frames_carry_index_time_and_size(clip):
    source = open_source(str(clip))
    frames = list(source.frames())
    source.close()
    assert len(frames) == CLIP_FRAMES
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert frames[0].image.shape == (994, 1768, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].source_size == (1768, 994)
    times = np.array([f.stream_time for f in frames])
    np.testing.assert_allclose(np.diff(times), 1 / 30, atol=1e-3)
    assert frames[100].image.mean() > 20  # real pixels, not a blank buffer


def test_offline_run_with_waiting_subscriber_receives_every_frame_in_order(clip, endpoint, tmp_path):
    received = []

    def subscribe():
        with Subscriber(endpoint) as sub:
            while len(received) < CLIP_FRAMES:
                msg = sub.receive(timeout=20)
                if msg is None:
                    return
                received.append(msg)

    t = threading.Thread(target=subscribe)
    t.start()
    outcome = run(RunConfig(source=str(clip), publish=endpoint, wait_subscribers=1,
                            record=str(tmp_path / "rec"), progress=False, perception=False),
                  extra_stages=[SyntheticPersons(2)])
    t.join(30)
    assert outcome.mode == "offline"
    assert [m.frame.seq for m in received] == list(range(CLIP_FRAMES))
    assert [m.frame.frame_index for m in received] == list(range(CLIP_FRAMES))
    assert all(m.missed == 0 for m in received)
    last = received[-1].frame
    assert [p.track_id for p in last.persons] == [1, 2]
    assert last.persons[0].arrays["poses"].shape == (72,)
    assert all(0 <= m.latency < 5 for m in received)
    assert outcome.summary["drops_total"] == 0

    motion = np.load(tmp_path / "rec" / "track_0001.npz")
    assert motion["poses"].shape == (CLIP_FRAMES, 72) and motion["trans"].shape == (CLIP_FRAMES, 3)
    assert motion["joints"].shape == (CLIP_FRAMES, 24, 3) and motion["betas"].shape == (10,)
    assert float(motion["mocap_framerate"]) == 30.0 and str(motion["gender"]) == "neutral"
    np.testing.assert_array_equal(motion["frame_index"], np.arange(CLIP_FRAMES))
    keypoints = np.load(tmp_path / "rec" / "track_0002_blazepose33.npz")
    assert keypoints["keypoints"].shape == (CLIP_FRAMES, 33, 3)
    assert str(keypoints["joint_set"]) == "blazepose33"
    assert tuple(keypoints["image_size"]) == (1768, 994)


def test_slow_stage_in_live_mode_drops_frames_and_keeps_latency_bounded(clip, endpoint):
    # The clip plays at its own 30 fps like a camera; the stage needs 80 ms per frame.
    source = open_source(str(clip), live=True)
    stats = LatencyStats()
    publisher = ZmqPublisher(endpoint)
    pipeline = Pipeline(source, [SyntheticPersons(1, delay=0.08), OutputStage(publisher)],
                        queue_size=1, policy="drop_oldest", max_frames=90, observer=stats)
    result = pipeline.run(handle_signals=False)
    summary = stats.summary(result)
    assert result.frames_in == 90
    assert summary["drops_total"] > 30  # about 2 of every 3 frames cannot be served
    assert max(result.queue_max_depth.values()) <= 1
    # Without dropping, the wait would grow by ~47 ms per frame (seconds by the end); with it,
    # a frame waits at most for the one being processed.
    g2p = summary["glass_to_publish_ms"]
    assert g2p["p99"] < 2 * 80 + 60, g2p
    assert summary["stages"]["lift"]["wait_ms"]["p99"] < 80 + 40

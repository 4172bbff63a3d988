"""The publisher under load: 16 people per message, a subscriber that never reads, and
subscribers that come and go. Publishing never blocks; the others still get the stream.
(Throughput and latency figures come from tools/load_test.py.)"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import zmq

from streamer.frames import Frame, Person
from streamer.publisher import ZmqPublisher
from streamer.subscriber import Subscriber
from streamer.wire import TOPIC

PERSONS = 16


def crowd_frame(index: int) -> Frame:
    rng = np.random.default_rng(index)
    frame = Frame(index=index, image=None, capture_time=time.monotonic(), source_size=(1768, 994))
    frame.persons = [Person(track_id=i + 1, score=0.9, arrays={
        "box_xyxy": rng.uniform(0, 900, 4).astype(np.float32),
        "keypoints_blazepose33": rng.uniform(0, 900, (33, 3)).astype(np.float32),
        "keypoints_coco17": rng.uniform(0, 900, (17, 3)).astype(np.float32),
        "world_blazepose33": rng.standard_normal((33, 3)).astype(np.float32),
        "poses": rng.standard_normal(72).astype(np.float32),
        "betas": rng.standard_normal(10).astype(np.float32),
        "trans": rng.standard_normal(3).astype(np.float32),
        "joints": rng.standard_normal((24, 3)).astype(np.float32),
        "poses_std": rng.random(24).astype(np.float32),
        "joints_std": rng.random(24).astype(np.float32),
    }) for i in range(PERSONS)]
    return frame


def test_publisher_never_blocks_on_a_subscriber_that_never_reads(endpoint):
    ctx = zmq.Context()
    publisher = ZmqPublisher(endpoint, context=ctx)
    stalled = ctx.socket(zmq.SUB)  # subscribes, then never reads a byte
    stalled.setsockopt(zmq.SUBSCRIBE, TOPIC)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.connect(endpoint)
    reader = Subscriber(endpoint, context=ctx)
    stop = threading.Event()
    got = []

    def read():
        while not stop.is_set():
            msg = reader.receive(timeout=0.2)
            if msg is not None:
                got.append(msg.frame.seq)

    try:
        assert publisher.wait_for_subscribers(2, timeout=10)
        t = threading.Thread(target=read)
        t.start()
        frames = [crowd_frame(i) for i in range(50)]
        calls = []
        sent = 0
        # About 20 MB: far more than the stalled socket's kernel buffers and high-water mark.
        for i in range(600):
            frame = frames[i % len(frames)]
            start = time.perf_counter()
            publisher.publish(frame)
            calls.append(time.perf_counter() - start)
            sent += 1
            time.sleep(0.001)  # ~ a fast pipeline; lets the reader keep up
        stop.set()
        t.join(5)
    finally:
        stalled.close(0)
        reader.close()
        publisher.close()
        ctx.term()
    calls_ms = np.array(calls) * 1000
    # Encoding a 16-person frame costs well under a millisecond; a blocked send would show
    # as a call that waits (the stalled socket's buffers filled after the first ~100 messages).
    assert np.median(calls_ms) < 5 and calls_ms.max() < 100, (np.median(calls_ms), calls_ms.max())
    assert len(got) > 0.8 * sent  # the reading subscriber kept getting the stream


def test_subscribers_that_come_and_go_do_not_disturb_a_steady_one(endpoint):
    ctx = zmq.Context()
    publisher = ZmqPublisher(endpoint, context=ctx)
    steady = Subscriber(endpoint, context=ctx)
    stop = threading.Event()
    cycles = [0]

    def churn(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            with Subscriber(endpoint, context=ctx) as sub:
                sub.receive(timeout=rng.uniform(0.0, 0.05))
            cycles[0] += 1

    try:
        assert publisher.wait_for_subscribers(1, timeout=10)
        churners = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        for t in churners:
            t.start()
        frame = crowd_frame(0)
        received = []
        for _ in range(300):
            publisher.publish(frame)
            msg = steady.receive(timeout=2)
            assert msg is not None
            received.append(msg)
        stop.set()
        for t in churners:
            t.join(5)
    finally:
        steady.close()
        publisher.close()
        ctx.term()
    assert cycles[0] > 20  # really churned
    assert [m.frame.seq for m in received] == list(range(300)) and steady.missed == 0
    assert all(len(m.frame.persons) == PERSONS for m in received)

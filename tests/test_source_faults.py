"""Source faults at pipeline level: a live stream of the real clip cut and restored mid-run,
and a camera that disappears. The pipeline keeps running (or ends cleanly), counts what it
lost, keeps track ids, and leaves valid motion files."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import CLIP, free_tcp_endpoint
from streamer.app import RunConfig, run
from streamer.errors import PipelineError, SourceError
from streamer.graph import Pipeline
from engines.perception.person_keypoints import PersonKeypoints
from streamer.keypoints_stage import KeypointsStage
from streamer.latency import LatencyStats
from streamer.motion_files import MotionRecorder
from streamer.outputs import OutputStage
from streamer.publisher import ZmqPublisher
from streamer.sources import CameraSource, NetworkStreamSource
from streamer.subscriber import Subscriber
from synthetic import SyntheticPersons

HERE = Path(__file__).parent


def connect(url: str, timeout: float = 30.0, **options) -> NetworkStreamSource:
    deadline = time.monotonic() + timeout
    while True:  # the server decodes the clip first, then listens
        try:
            return NetworkStreamSource(url, **options)
        except SourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_cut_stream_of_the_real_clip_reconnects_and_keeps_track_ids(tmp_path, caplog):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    # A 10 fps camera (so a loaded 2-core machine keeps up with most frames): clip frames
    # 50-105 (the woman walking left, perhaps the man on the box), a cut of 2.2 s; the
    # client's backoff (0.5, 1, 2 s) brings it back after 3.5 s, when the camera is about 34
    # frames further on and she has walked about 100 px (of 640). Without the tracker's
    # prediction over the skipped frames and re-identification by distance, she comes back
    # under a new id (checked when this test was written).
    server = subprocess.Popen([sys.executable, str(HERE / "stream_server.py"), "clip", str(port),
                               str(CLIP), "640", "10", "50", "105", "2.2", "170"],
                              stdout=subprocess.PIPE, text=True)
    endpoint = free_tcp_endpoint()
    received = []
    stop = threading.Event()

    def subscribe():
        with Subscriber(endpoint) as sub:
            while not stop.is_set():
                msg = sub.receive(timeout=0.5)
                if msg is not None:
                    received.append((msg.frame.frame_index, [p.track_id for p in msg.frame.persons]))

    try:
        source = connect(f"tcp://127.0.0.1:{port}", max_retries=3)
        stats = LatencyStats()
        recorder = MotionRecorder(tmp_path / "rec", fps=30.0, image_size=source.size)
        publisher = ZmqPublisher(endpoint)
        t = threading.Thread(target=subscribe)
        t.start()
        # Live mode, as for any network stream: queues of one, the oldest frame dropped.
        pipeline = Pipeline(source, [KeypointsStage(PersonKeypoints()), OutputStage(publisher, recorder, wait_subscribers=1)],
                            queue_size=1, policy="drop_oldest", observer=stats)
        result = pipeline.run(handle_signals=False)
        stop.set()
        t.join(5)
    finally:
        server.kill()
        segments = server.communicate()[0].split()
    summary = stats.summary(result)

    # The gap was survived, counted and reported.
    resumed_at = int(segments[3])  # "segment 50 segment N"
    assert source.reconnects == 1
    faults = summary["source_faults"]
    assert faults["reconnects"] == 1 and faults["gap_seconds"] >= 2.2
    assert faults["frames_missed"] == pytest.approx(resumed_at - 105, abs=4)
    assert "reconnected after" in caplog.text and "reconnects 1" in caplog.text
    # Publishing resumed: frames from both sides of the gap went out.
    gap_index = 105 - 50  # index of the first frame the cut took away
    before = [(i, ids) for i, ids in received if i < gap_index]
    after = [(i, ids) for i, ids in received if i >= gap_index]
    assert len(before) >= 5 and len(after) >= 5, received
    # Whoever was followed just before the cut (the walking woman at least; whether the
    # detector also finds the man on the box in this compressed 640 px stream varies) is
    # followed after it under the same id: she walked on during the gap.
    ids_before = {i for _, ids in before[-5:] for i in ids}
    ids_after = {i for _, ids in after for i in ids}
    assert ids_before, before
    assert ids_before <= ids_after, (before[-5:], after[:10])
    assert ids_after <= {i for _, ids in before for i in ids}, "a new id appeared after the gap"
    # The motion files carry the jump in frame indices (true timing over the gap).
    for track_id in ids_before:
        with np.load(tmp_path / "rec" / f"track_{track_id:04d}_blazepose33.npz") as data:
            index = data["frame_index"]
            assert (np.diff(index) > 0).all() and index[0] < gap_index < index[-1]
            assert np.isfinite(data["keypoints"]).all()


class VanishingCapture:
    """An OpenCV capture whose reads fail after ``frames`` frames (a camera unplugged)."""

    def __init__(self, images: list[np.ndarray]):
        self.images = images
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def set(self, prop, value) -> bool:
        return False

    def get(self, prop) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        time.sleep(1 / 30)  # a camera delivers at its rate
        self.reads += 1
        if self.reads > len(self.images):
            return False, None
        return True, self.images[self.reads - 1].copy()

    def release(self) -> None:
        self.released = True


def test_camera_that_disappears_ends_the_run_with_a_clear_message_and_valid_files(
        tmp_path, monkeypatch, capsys):
    images = [np.full((240, 320, 3), 6 * i, np.uint8) for i in range(40)]
    capture = VanishingCapture(images)
    camera = CameraSource(0, capture=capture)
    assert camera.size == (320, 240) and camera.fps == 30.0
    monkeypatch.setattr("streamer.app.open_source", lambda *a, **k: camera)
    record = tmp_path / "rec"
    with pytest.raises(PipelineError) as error:
        run(RunConfig(source="0", publish=None, record=str(record), perception=False, progress=False),
            extra_stages=[SyntheticPersons(2)])
    message = str(error.value)
    assert "stage 'grab' failed" in message and "camera 0: stopped delivering frames after frame 39" in message
    assert "unplugged" in message and "\n" not in message
    assert capture.released
    err = capsys.readouterr().err
    assert "capture -> output" in err  # the final stats table
    out = int(err.split(" frames out")[0].split()[-1])
    assert out >= 30  # live mode may drop a frame or two on a loaded machine
    for track in (1, 2):
        with np.load(record / f"track_{track:04d}.npz", allow_pickle=False) as data:
            index = data["frame_index"]
            assert len(index) == out and index[-1] == 39  # up to the last frame before the camera went
            assert data["poses"].shape == (out, 72) and np.isfinite(data["poses"]).all()


"""Frame sources other than the video file (covered in test_pipeline.py)."""

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import free_tcp_endpoint
from streamer.errors import SourceError
from streamer.sources import ImageFolderSource, NetworkStreamSource, open_source

HERE = Path(__file__).parent


def test_image_folder_in_natural_order_skipping_unreadable(tmp_path, caplog):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((20, 30, 3), i * 10, np.uint8))
    (tmp_path / "img3.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path), fps=10)
    assert isinstance(source, ImageFolderSource) and source.size == (30, 20)
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 3]  # img1, img2, img10; img3 (index 2) skipped
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 100]
    assert frames[2].stream_time == pytest.approx(0.3)
    assert "frame 2 (img3.png) is not a readable image" in caplog.text


def test_empty_folder_and_empty_file_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no images found"):
        open_source(str(tmp_path))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        open_source(str(empty))


def test_unreachable_stream_is_a_clear_error():
    with pytest.raises(SourceError, match="could not open stream: Connection refused"):
        open_source(free_tcp_endpoint() + "/live")


def test_dropped_network_stream_is_reopened_and_counted(caplog):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    server = subprocess.Popen([sys.executable, str(HERE / "stream_server.py"), str(port), "2", "30", "1.0"])
    try:
        deadline = time.monotonic() + 20
        while True:  # the server needs a moment to start listening
            try:
                source = NetworkStreamSource(f"tcp://127.0.0.1:{port}", max_retries=3)
                break
            except SourceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        frames = list(source.frames())
    finally:
        server.kill()
    levels = [int(f.image[120, 160].mean()) for f in frames]
    assert source.reconnects == 1 and source.gap_seconds > 0.5
    # Indices and stream times follow the clock over the gap (one jump of about the gap's
    # length in frames), so motion files keep true timing and the tracker knows the gap.
    steps = np.diff([f.index for f in frames])
    assert (steps >= 1).all() and (steps > 1).sum() == 1
    assert steps.max() - 1 == source.frames_missed == pytest.approx(source.gap_seconds * 30, abs=3)
    times = np.array([f.stream_time for f in frames])
    assert (np.diff(times) > 0).all()
    np.testing.assert_allclose(times - times[0], (np.array([f.index for f in frames]) - frames[0].index) / 30,
                               atol=0.1)
    # Most of both segments arrived: the first frames of segment 1 are grey >= 100.
    assert 50 <= len(frames) <= 60
    assert sum(v < 95 for v in levels) >= 25 and sum(v >= 98 for v in levels) >= 25
    assert "reconnected after" in caplog.text and "gave up after 3" in caplog.text


def test_damaged_files_are_read_as_far_as_possible_with_frame_numbers(clip, tmp_path, caplog):
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    for offset in range(len(data) // 3, len(data) // 3 + 20000, 1000):
        damaged[offset:offset + 50] = bytes((offset * 7 + i) % 251 for i in range(50))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(damaged))

    frames = list(open_source(str(truncated)).frames())
    assert 100 < len(frames) < 230
    assert f"decoded {len(frames)} of the 230 frames" in caplog.text
    caplog.clear()
    frames = list(open_source(str(garbage)).frames())
    assert 150 < len(frames) < 230
    assert [f.index for f in frames] == list(range(len(frames)))
    assert "undecodable data after frame" in caplog.text and "frame(s) missing after frame" in caplog.text


def test_a_file_played_live_is_stamped_with_its_due_times(clip):
    """Live on a file, each frame is decoded ahead and handed on at its due time (the file's
    clock from the first frame), stamped with that time as a camera's would be: a decode that
    ran late counts as latency instead of moving the stamp."""
    paced = open_source(str(clip), live=True)
    assert paced.paced and not open_source(str(clip)).paced
    stamps = []
    for frame in paced.frames():
        stamps.append((frame.capture_time, frame.stream_time, time.monotonic()))
        if len(stamps) == 6:
            break
    paced.close()
    (c0, s0, _), *rest = stamps
    for capture, stream, handed in rest:
        assert capture - c0 == pytest.approx(stream - s0, abs=1e-9)  # exactly the file's clock
        assert handed >= capture  # not handed on before its time


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread has a priority of its own on Linux only")
def test_the_pipeline_decodes_a_paced_file_below_the_frames_in_flight(clip):
    """``source_nice`` (live: ``RunPlan.decoder_nice``) lowers the source's thread and the
    decoder threads FFmpeg starts from it; the stages keep theirs."""
    import os
    import threading

    from streamer.graph import Pipeline, Stage

    seen: dict[str, int] = {}

    class Record(Stage):
        name = "record"

        def process(self, frame):
            seen["stage"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            # FFmpeg's frame threads for this VP9 clip, started by the source's thread.
            for task in Path(f"/proc/{os.getpid()}/task").iterdir():
                try:
                    if (task / "comm").read_text().startswith("av:"):
                        seen["decoder"] = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
                except FileNotFoundError:  # a thread that ended meanwhile
                    pass
            return frame

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if base + 7 > 19:
        pytest.skip("already at the lowest priority")
    source = open_source(str(clip), live=True)
    Pipeline(source, [Record()], queue_size=1, policy="drop_oldest", max_frames=4,
             source_nice=7).run(handle_signals=False)
    assert seen == {"stage": base, "decoder": base + 7}

"""Synchronised sources (streamer.multi_source): two file sources of the real clip, aligned by
start time or a given offset; a source that stalls or ends degrades the run to the views
left, never stops it, and is counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.multi_source import SynchronisedSources
from streamer.sources import VideoFileSource

CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"


class StallingSource:
    """A real source that stops delivering after ``after`` frames for ``seconds`` (then goes
    on, or ends when ``end``), as a camera whose cable is pulled or a stream that freezes."""

    is_live = False

    def __init__(self, inner, after: int, seconds: float, end: bool = False):
        self.inner, self.after, self.seconds, self.end = inner, after, seconds, end
        self.name, self.size, self.fps = "stalling " + inner.name, inner.size, inner.fps
        self._closed = threading.Event()

    def frames(self):
        for frame in self.inner.frames():
            if frame.index == self.after:
                self._closed.wait(self.seconds)
                if self.end or self._closed.is_set():
                    return
            yield frame

    def close(self):
        self._closed.set()
        self.inner.close()


def _small(frame):
    return frame.image[::16, ::16].copy()


def _take(sources, n):
    steps = []
    for view_set in sources.frames():
        steps.append((view_set.index, view_set.stream_time,
                      [None if f is None else (f.index, _small(f)) for f in view_set.views]))
        if len(steps) == n:
            break
    return steps


def test_two_files_start_together():
    sync = SynchronisedSources([VideoFileSource(CLIP), VideoFileSource(CLIP)])
    try:
        steps = _take(sync, 12)
    finally:
        sync.close()
    for i, (index, t, views) in enumerate(steps):
        assert index == i and t == pytest.approx(i / 30, abs=1e-3)
        assert views[0][0] == views[1][0] == i
        assert np.array_equal(views[0][1], views[1][1])
    assert sync.views_missing == [0, 0]


def test_an_offset_shifts_one_source_on_the_common_clock():
    """The second recording started half a second (15 frames) after the first: its frame k
    goes with the first's frame k + 15, and for the first 15 steps it has nothing yet."""
    sync = SynchronisedSources([VideoFileSource(CLIP), VideoFileSource(CLIP)], offsets=[0.0, 0.5])
    try:
        steps = _take(sync, 25)
    finally:
        sync.close()
    assert all(views[1] is None for _, _, views in steps[:15])
    for k in range(15, 25):
        views = steps[k][2]
        assert views[0][0] == k and views[1][0] == k - 15
        assert np.array_equal(views[1][1], steps[k - 15][2][0][1]), "the same picture, 15 frames later"
    assert sync.views_missing == [0, 15]


def test_a_stalled_source_degrades_to_the_remaining_views():
    """The second camera freezes for 2 s after its 8th frame, then comes back: the run goes on
    with the first camera alone (each step waits at most max_wait for it), counts the missing
    view, and takes it back in step once it catches up (the frames of steps gone are dropped)."""
    stalled = StallingSource(VideoFileSource(CLIP), after=8, seconds=2.0)
    sync = SynchronisedSources([VideoFileSource(CLIP), stalled], max_wait=0.25)
    started = time.monotonic()
    try:
        steps = _take(sync, 40)
    finally:
        sync.close()
    elapsed = time.monotonic() - started
    assert [s[0] for s in steps] == list(range(40))
    assert all(views[0] is not None and views[0][0] == i for i, (_, _, views) in enumerate(steps)), \
        "the first camera is never held back"
    missing = [i for i, (_, _, views) in enumerate(steps) if views[1] is None]
    assert missing and missing[0] == 8, missing
    assert 4 <= len(missing) <= 30, missing
    assert sync.views_missing[1] == len(missing) and sync.frames_missed >= len(missing)
    back = [i for i, (_, _, views) in enumerate(steps) if views[1] is not None and i > missing[-1]]
    assert back, "the second camera should be back"
    for i in back:
        views = steps[i][2]
        assert views[1][0] == i and np.array_equal(views[0][1], views[1][1]), "back in step"
    assert elapsed < 2.0 + 40 * 0.25, elapsed


def test_a_source_that_ends_leaves_the_others_running():
    short = StallingSource(VideoFileSource(CLIP), after=5, seconds=0.0, end=True)
    sync = SynchronisedSources([short, VideoFileSource(CLIP)])
    try:
        steps = _take(sync, 15)
    finally:
        sync.close()
    assert len(steps) == 15
    assert all(views[0] is not None for _, _, views in steps[:5])
    assert all(views[0] is None and views[1][0] == i for i, (_, _, views) in enumerate(steps) if i >= 5)
    assert sync.views_missing == [10, 0]


def test_offsets_must_match_the_sources():
    a, b = VideoFileSource(CLIP), VideoFileSource(CLIP)
    try:
        with pytest.raises(ConfigError, match="one per --source"):
            SynchronisedSources([a, b], offsets=[0.5])
    finally:
        a.close()
        b.close()

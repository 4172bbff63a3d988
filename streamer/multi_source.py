"""Several frame sources as one: the cameras of a multi-camera rig, synchronised, yielding one
:class:`ViewSet` (a frame of every view that has one) per step.

Each source is read by its own thread into a small buffer, and every frame gets a time on a
common clock:

- **files and folders** (offline): the source's own stream time from its first frame, plus
  the source's offset (``--source-offset``: how many seconds after the others' start this
  recording started; default 0: the recordings started together);
- **cameras and streams** (live): the monotonic capture time, plus the offset (a camera
  known to deliver late gets a negative one).

A step is the earliest frame at the head of any buffer; it takes, from every source, the
head frame within ``tolerance`` of it (default: half a frame period of the fastest source).
A source whose next frame has not arrived waits at most ``max_wait`` seconds past the
step's first frame (live: one frame period; offline: :data:`OFFLINE_WAIT`); then the step
goes on without it. A source that stalls, ends or fails therefore never stops the others:
its view is missing from those steps, and each missing view is counted
(:attr:`SynchronisedSources.views_missing`, and in the run's source faults as
``frames_missed``).

Offline, the buffers block (nothing is dropped); live, a full buffer drops its oldest frame
(counted per source in :attr:`SynchronisedSources.dropped`), as the pipeline's own queues do.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .errors import ConfigError
from .frames import Frame

log = logging.getLogger("smplstream.multi_source")

OFFLINE_WAIT = 5.0  # seconds a file source may lag before a step goes on without it
BUFFER = {"live": 2, "offline": 8}  # frames read ahead per source


@dataclass
class ViewSet(Frame):
    """One synchronised step of a rig: the reference view's frame fields (its image, or black
    when it has none this step; the step's index; the earliest capture time of the set; the
    step's time on the common clock) and ``views``: every source's frame, ``None`` where that
    view is missing."""

    views: list[Frame | None] = field(default_factory=list)


class _Reader:
    """One source read by its own thread into a bounded buffer, frames stamped with their
    time on the common clock."""

    def __init__(self, source, offset: float, live: bool, buffer: int, cond: threading.Condition,
                 closed: threading.Event):
        self.source = source
        self.offset = offset
        self.live = live
        self.buffer = buffer
        self.cond = cond
        self.closed = closed
        self.items: collections.deque[tuple[float, Frame]] = collections.deque()
        self.ended = False
        self.error: BaseException | None = None
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=f"grab:{source.name}", daemon=True)

    def _time(self, frame: Frame, first: list) -> float:
        if self.live:
            return frame.capture_time + self.offset
        t = frame.stream_time
        if t is None:
            t = frame.index / (getattr(self.source, "fps", None) or 30.0)
        if not first:
            first.append(t)
        return t - first[0] + self.offset

    def _run(self) -> None:
        first: list = []
        try:
            for frame in self.source.frames():
                t = self._time(frame, first)
                with self.cond:
                    if self.live:
                        while len(self.items) >= self.buffer:
                            self.items.popleft()
                            self.dropped += 1
                    else:
                        while len(self.items) >= self.buffer and not self.closed.is_set():
                            self.cond.wait(0.05)
                    if self.closed.is_set():
                        return
                    self.items.append((t, frame))
                    self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - one view failing must not stop the others
            self.error = exc
            log.warning("%s: stopped delivering frames: %s; the other views go on", self.source.name, exc)
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()


class SynchronisedSources:
    """``sources`` (opened :mod:`streamer.sources` objects, the reference camera first) read
    together (module doc). ``offsets``: seconds per source on the common clock (default all
    0). ``live``: align by capture time and drop rather than wait (default: live when any
    source is live). ``max_wait``, ``tolerance``: seconds (defaults in the module doc)."""

    def __init__(self, sources: Sequence, *, offsets: Sequence[float] | None = None, live: bool | None = None,
                 max_wait: float | None = None, tolerance: float | None = None):
        if len(sources) < 2:
            raise ConfigError("synchronised sources: give at least two --source")
        offsets = [0.0] * len(sources) if offsets is None or len(offsets) == 0 else [float(o) for o in offsets]
        if len(offsets) != len(sources):
            raise ConfigError(f"--source-offset: give one per --source ({len(sources)}), or none; got {len(offsets)}")
        self.sources = list(sources)
        self.is_live = any(s.is_live for s in sources) if live is None else bool(live)
        self.name = " + ".join(s.name for s in sources)
        self.size = sources[0].size
        rates = [getattr(s, "fps", None) for s in sources]
        self.fps = rates[0] or next((r for r in rates if r), None) or 30.0
        period = 1.0 / max(r or self.fps for r in rates)
        self.tolerance = 0.5 * period if tolerance is None else tolerance
        self.max_wait = (period if self.is_live else OFFLINE_WAIT) if max_wait is None else max_wait
        self.frame_count = getattr(sources[0], "frame_count", None)
        self.offsets = offsets
        self.views_missing = [0] * len(sources)  # steps each view was missing from
        self.late = [0] * len(sources)  # frames that came after their step had gone (discarded)
        self.steps = 0
        self._cond = threading.Condition()
        self._closed = threading.Event()
        mode = "live" if self.is_live else "offline"
        self._readers = [_Reader(s, o, self.is_live, BUFFER[mode], self._cond, self._closed)
                         for s, o in zip(sources, offsets)]
        self._started = False

    # The run's fault counters (streamer.graph.SOURCE_FAULTS): summed over the views, plus
    # every view missing from a step as a frame missed.
    @property
    def frames_missed(self) -> int:
        return sum(self.views_missing) + sum(int(getattr(s, "frames_missed", 0) or 0) for s in self.sources)

    @property
    def decode_errors(self) -> int:
        return sum(int(getattr(s, "decode_errors", 0) or 0) for s in self.sources)

    @property
    def reconnects(self) -> int:
        return sum(int(getattr(s, "reconnects", 0) or 0) for s in self.sources)

    @property
    def dropped(self) -> list[int]:
        """Frames each source's live buffer dropped (the newest frame wins)."""
        return [r.dropped for r in self._readers]

    def report(self) -> dict:
        """Per source: the steps its view was missing from, its frames that came too late for
        their step, and (live) the frames its buffer dropped; for ``--stats-json``."""
        return {"steps": self.steps, "sources": [
            {"name": s.name, "offset_s": o, "missing_steps": m, "late_frames": late, "dropped_frames": d}
            for s, o, m, late, d in zip(self.sources, self.offsets, self.views_missing, self.late, self.dropped)]}

    def frames(self) -> Iterator[ViewSet]:
        """One :class:`ViewSet` per step until every source has ended (or :meth:`close`)."""
        if not self._started:
            self._started = True
            for r in self._readers:
                r.thread.start()
        readers = self._readers
        last = -float("inf")  # the last step's time: the common clock never goes back
        while not self._closed.is_set():
            with self._cond:
                self._drop_late(last)
                # The step starts with the first frame any source has.
                self._cond.wait_for(lambda: self._closed.is_set() or any(r.items for r in readers)
                                    or all(r.ended for r in readers))
                if self._closed.is_set() or not any(r.items for r in readers):
                    break  # every source has ended
                deadline = time.monotonic() + self.max_wait
                # The others get until the deadline to deliver their next frame.

                def ready() -> bool:
                    self._drop_late(last)  # a source catching up after a stall skips its late frames
                    return all(r.items or r.ended for r in readers) or self._closed.is_set()

                self._cond.wait_for(ready, max(0.0, deadline - time.monotonic()))
                heads = [r.items[0] if r.items else None for r in readers]
                if all(h is None for h in heads):
                    continue  # what had come was late
                t = min(h[0] for h in heads if h is not None)
                views: list[Frame | None] = []
                for r, h in zip(readers, heads):
                    if h is not None and h[0] <= t + self.tolerance:
                        r.items.popleft()
                        views.append(h[1])
                    else:
                        views.append(None)
                self._cond.notify_all()  # room in the buffers: the offline readers go on
            last = t
            yield self._view_set(views, t)

    def _drop_late(self, last: float) -> None:
        """Discard the frames of a source that fell behind (it stalled, then caught up): a
        frame within ``tolerance`` after the last step, or before it, belongs to a step gone."""
        for v, r in enumerate(self._readers):
            while r.items and r.items[0][0] < last + self.tolerance:
                r.items.popleft()
                self.late[v] += 1
                self._cond.notify_all()  # room for an offline reader

    def _view_set(self, views: list[Frame | None], t: float) -> ViewSet:
        for v, frame in enumerate(views):
            if frame is None:
                self.views_missing[v] += 1
                if self.views_missing[v] in (1, 10, 100, 1000):
                    log.warning("%s: missing from step %d (%d step(s) so far); fitting with the other views",
                                self.sources[v].name, self.steps, self.views_missing[v])
        ref = views[0]
        image = ref.image if ref is not None else np.zeros((self.size[1], self.size[0], 3), np.uint8)
        capture = min(f.capture_time for f in views if f is not None)
        out = ViewSet(index=self.steps, image=image, capture_time=capture, source_size=self.size, stream_time=t,
                      views=views)
        self.steps += 1
        return out

    def close(self) -> None:
        """Stop reading and close every source. A source is closed once its reader has let go
        of it (a decoder must not be closed under a thread using it); one stalled inside its
        own read is left to its daemon thread."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        for r in self._readers:
            if r.thread.is_alive():
                r.thread.join(2.0)
            if r.thread.is_alive():
                log.warning("%s: still stalled in a read at the end; left to its thread", r.source.name)
                continue
            try:
                r.source.close()
            except Exception as exc:  # noqa: BLE001 - closing the others matters more
                log.warning("closing %s: %s", r.source.name, exc)
        missing = {s.name: n for s, n in zip(self.sources, self.views_missing) if n}
        if missing:
            log.warning("views missing from steps (of %d): %s", self.steps,
                        ", ".join(f"{k} {v}" for k, v in missing.items()))


def open_sources(specs: Sequence[str], *, live: bool | None = None, offsets: Sequence[float] | None = None,
                 width: int | None = None, height: int | None = None, fps: float | None = None,
                 max_wait: float | None = None) -> SynchronisedSources:
    """Open every ``specs`` source (:func:`streamer.sources.open_source`) and synchronise
    them; a source that fails to open closes the ones already open."""
    from .sources import open_source

    opened = []
    try:
        for spec in specs:
            opened.append(open_source(spec, live=live, width=width, height=height, fps=fps))
        return SynchronisedSources(opened, offsets=offsets, live=live, max_wait=max_wait)
    except BaseException:
        for s in opened:
            s.close()
        raise

"""The stage graph: a source and a chain of stages, each in its own thread, joined by
bounded :class:`~streamer.queues.FrameQueue` s.

A stage is a small object with ``process(frame) -> frame | None`` (``None``: held back, e.g.
by a fixed-lag smoother, or consumed) and ``finish() -> list[frame]`` to release what it
held at the end of the stream. The pipeline stamps when each stage took and released each
frame, stops every thread when any stage fails (naming it), and on Ctrl-C / SIGTERM stops
the source and lets what is already queued drain, so every output is flushed and valid.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch

from engines.runtime.threads import lower_thread_priority

from .errors import PipelineError
from .frames import Frame, StageStamp
from .queues import END_OF_STREAM, FrameQueue, QueuePolicy

log = logging.getLogger("smplstream.graph")


class Stage:
    """Base class of pipeline stages; override what you need.

    ``start`` and ``close`` run in the stage's own thread (load models in ``start`` so the
    thread that uses them creates them). ``close`` always runs, after an error too.
    ``stop_event`` is set by the pipeline when the run is asked to stop. ``nice``: the
    stage's thread (and the threads it starts) runs this many nice levels below the others
    (Linux), so that where the cores are contended the stages after it get them first.
    """

    name = "stage"
    nice = 0
    stop_event: threading.Event

    def start(self) -> None:
        """Prepare for the first frame."""

    def process(self, frame: Frame) -> Frame | None:
        """Work on one frame; return it (or another held-back frame) to pass it on."""
        return frame

    def finish(self) -> list[Frame]:
        """End of stream: return frames still held back, oldest first."""
        return []

    def close(self) -> None:
        """Release resources and flush outputs."""


class FrameSource(Protocol):
    """What the pipeline needs of a source (see :mod:`streamer.sources`)."""

    name: str
    is_live: bool

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@dataclass
class RunResult:
    """What a finished run reports."""

    frames_in: int = 0
    frames_out: int = 0
    wall_time: float = 0.0
    stopped_by: str | None = None  # "SIGINT", "SIGTERM", "stop()" or None (end of source)
    queue_drops: dict[str, int] = field(default_factory=dict)
    queue_max_depth: dict[str, int] = field(default_factory=dict)
    # What the source survived: reconnects, seconds without frames, frames missed in gaps,
    # undecodable data (only the counters the source keeps, see SOURCE_FAULTS).
    source_faults: dict[str, float] = field(default_factory=dict)
    # What stages gave up to keep up (live): stage name -> its ``overload_report()``.
    overload: dict[str, dict] = field(default_factory=dict)


SOURCE_FAULTS = ("reconnects", "gap_seconds", "frames_missed", "decode_errors", "resized_frames")


class FrameObserver(Protocol):
    def record(self, frame: Frame) -> None: ...


class Pipeline:
    """Runs ``source -> stages[0] -> ... -> stages[-1]`` with one thread per element.

    ``queue_size`` and ``policy`` apply to every edge (live: 1 and ``drop_oldest``;
    offline: a few frames and ``block``). ``observer.record(frame)`` is called for every
    frame that leaves the last stage (latency statistics). The source's first frame is
    taken only once every stage's ``start`` has returned. ``source_nice``: the source's
    thread (and the decoder threads it starts) runs this many nice levels lower (Linux).
    """

    def __init__(
        self,
        source: FrameSource,
        stages: list[Stage],
        *,
        queue_size: int,
        policy: QueuePolicy,
        max_frames: int | None = None,
        observer: FrameObserver | None = None,
        grabber_name: str = "grab",
        source_nice: int = 0,
    ):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.source = source
        self.stages = stages
        self.max_frames = max_frames
        self.observer = observer
        self.grabber_name = grabber_name
        self.source_nice = int(source_nice)
        names = [grabber_name] + [s.name for s in stages]
        self.queues = [
            FrameQueue(f"{names[i]}->{names[i + 1]}", queue_size, policy) for i in range(len(stages))
        ]
        self.stop_event = threading.Event()
        # Set when a stage's thread has ended: the stage before it stops waiting for room
        # then. (Not stop_event: after a stop or another stage's failure, frames already
        # captured still drain through the stages that are alive.)
        self._exited = [threading.Event() for _ in stages]
        self._starting = len(stages)
        self._starting_lock = threading.Lock()
        self._all_started = threading.Event()
        self._errors: list[PipelineError] = []
        self._errors_lock = threading.Lock()
        self._stopped_by: str | None = None
        self._frames_in = 0
        self._frames_out = 0

    def stop(self, reason: str = "stop()") -> None:
        """Ask the run to end: the source stops, queued frames drain, outputs flush."""
        if not self.stop_event.is_set():
            self._stopped_by = self._stopped_by or reason
            self.stop_event.set()

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._errors_lock:
            self._errors.append(PipelineError(stage, error))
        log.error("stage '%s' failed: %s", stage, error, exc_info=not _is_user_error(error))
        self.stop_event.set()

    # -- threads ---------------------------------------------------------------

    def _run_source(self) -> None:
        out = self.queues[0]
        lower_thread_priority(self.source_nice)  # before the source opens its decoder's threads
        # The first frame waits until every stage has started (models loaded): a live source
        # would otherwise drop the frames of the loading time and count it as latency.
        while not self._all_started.wait(0.05) and not self.stop_event.is_set():
            pass
        try:
            for frame in self.source.frames():
                if self.stop_event.is_set():
                    break
                released = time.monotonic()
                frame.stamps.append(StageStamp(self.grabber_name, frame.capture_time, released))
                if not out.put(frame, self.stop_event):
                    break
                self._frames_in += 1
                if self.max_frames is not None and self._frames_in >= self.max_frames:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported with the stage name
            self._fail(self.grabber_name, exc)
        finally:
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing source %s: %s", self.source.name, exc)
            out.put(END_OF_STREAM)

    def _run_stage(self, index: int) -> None:
        stage = self.stages[index]
        inq = self.queues[index]
        outq = self.queues[index + 1] if index + 1 < len(self.queues) else None
        consumer_gone = self._exited[index + 1] if outq is not None else None
        failed = False
        # No stage needs gradients: without autograd's bookkeeping the lift and the fit,
        # which are mostly small tensor operations, cost about a tenth less CPU
        # (docs/performance.md). Constants cached for the whole process are built outside
        # it (engines.tensor_cache), so training in the same process is unaffected.
        with torch.inference_mode():
            try:
                lower_thread_priority(stage.nice)
                stage.start()
                with self._starting_lock:
                    self._starting -= 1
                    if self._starting == 0:
                        self._all_started.set()
                while True:
                    item = inq.get()
                    if item is END_OF_STREAM:
                        for frame in stage.finish():
                            self._emit(stage, frame, outq, consumer_gone)
                        break
                    item.stamps.append(StageStamp(stage.name, time.monotonic()))
                    result = stage.process(item)
                    if result is not None:
                        self._emit(stage, result, outq, consumer_gone)
            except BaseException as exc:  # noqa: BLE001 - reported with the stage name
                failed = True
                self._fail(stage.name, exc)
            finally:
                try:
                    stage.close()
                except BaseException as exc:  # noqa: BLE001
                    if not failed:
                        self._fail(stage.name, exc)
                self._exited[index].set()
                if outq is not None:
                    outq.put(END_OF_STREAM)

    def _emit(self, stage: Stage, frame: Frame, outq: FrameQueue | None,
              consumer_gone: threading.Event | None = None) -> None:
        now = time.monotonic()
        for stamp in reversed(frame.stamps):
            if stamp.stage == stage.name:
                stamp.released = now
                break
        if outq is None:
            self._frames_out += 1
            if self.observer is not None:
                self.observer.record(frame)
        else:
            outq.put(frame, consumer_gone)

    # -- driver ----------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> RunResult:
        """Run to the end of the source, a stop request, or a stage failure.

        Raises :class:`PipelineError` naming the first stage that failed, after every stage
        has been closed (outputs flushed).
        """
        for stage in self.stages:
            stage.stop_event = self.stop_event
        previous = self._install_signal_handlers() if handle_signals else {}
        started = time.monotonic()
        threads = [threading.Thread(target=self._run_source, name=self.grabber_name, daemon=True)]
        threads += [
            threading.Thread(target=self._run_stage, args=(i,), name=s.name, daemon=True)
            for i, s in enumerate(self.stages)
        ]
        try:
            for t in threads:
                t.start()
            for t in threads:
                # Short joins keep the main thread responsive to signals.
                while t.is_alive():
                    t.join(0.1)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        result = RunResult(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            wall_time=time.monotonic() - started,
            stopped_by=self._stopped_by,
            queue_drops={q.name: q.drops for q in self.queues},
            queue_max_depth={q.name: q.max_depth for q in self.queues},
            source_faults=source_faults(self.source),
            overload={s.name: s.overload_report() for s in self.stages if hasattr(s, "overload_report")},
        )
        if any(result.source_faults.values()):
            log.warning("source %s: %s", self.source.name,
                        ", ".join(f"{k.replace('_', ' ')} {_number(v)}" for k, v in result.source_faults.items()))
        self.result = result
        if self._errors:
            raise self._errors[0]
        return result

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def on_signal(signum, _frame):
            name = signal.Signals(signum).name
            if self.stop_event.is_set() and self._stopped_by == name == "SIGINT":
                raise KeyboardInterrupt  # a second Ctrl-C: the user really wants out
            log.warning("%s received: stopping, flushing outputs", name)
            self.stop(name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        return previous


def source_faults(source) -> dict[str, float]:
    """The fault counters ``source`` keeps (:data:`SOURCE_FAULTS`), rounded for reports."""
    out = {}
    for name in SOURCE_FAULTS:
        value = getattr(source, name, None)
        if isinstance(value, (int, float)):
            out[name] = round(float(value), 2) if isinstance(value, float) else int(value)
    return out


def _number(value: float) -> str:
    return f"{value:.1f} s" if isinstance(value, float) else str(value)


def _is_user_error(error: BaseException) -> bool:
    from .errors import SmplstreamError

    return isinstance(error, SmplstreamError)


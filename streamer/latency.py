"""Latency accounting: per-stage processing time, queue wait, glass-to-publish latency,
throughput and drops, as a table for people and a dict for ``--stats-json``."""

from __future__ import annotations

import math
import random
import threading
import time
from array import array

import numpy as np

from .frames import Frame
from .graph import RunResult

PERCENTILES = (50, 95, 99)

#: What each stored time spans (written into every summary as ``spans``; the table of them
#: is in docs/performance.md).
SPANS = {
    "stages.*.busy_ms": "a stage's time on one frame: from taking it off its input queue to handing it on "
                        "(a stage that holds frames for a lag, refine offline, counts the hold)",
    "stages.*.wait_ms": "a frame's time in the queue before that stage (since the previous stage released it)",
    "glass_to_publish_ms": "from the frame's capture time (the source's clock on its arrival) to its message "
                           "being sent; offline it includes the time spent queued behind earlier frames",
    "glass_to_output_ms": "from the frame's capture time to the last stage releasing it (publish, record, "
                          "preview handed over)",
    "fps": "frames out per second of wall time, first to last frame out",
}


class Samples:
    """Durations in seconds, kept compactly (float32) and bounded for hours-long runs: every
    value up to ``capacity``, then a uniform random sample of that many (reservoir sampling),
    so percentiles are exact for the first ``capacity`` frames and estimates after."""

    def __init__(self, capacity: int = 200_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0
        self._values = array("f")
        self._rng = random.Random(seed)

    def append(self, value: float) -> None:
        self.count += 1
        if len(self._values) < self.capacity:
            self._values.append(value)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.capacity:
                self._values[slot] = value

    def __len__(self) -> int:
        return self.count

    def values(self) -> np.ndarray:
        return np.frombuffer(self._values, dtype=np.float32).astype(np.float64)


def stage_spans(frame: Frame) -> list[tuple[str, float, float]]:
    """Per stage of a finished ``frame``, in order: its name, the frame's wait in the queue
    before it (since the previous stage released it, or since the capture) and its busy time
    in it, in seconds (``SPANS``)."""
    spans, previous_release = [], frame.capture_time
    for stamp in frame.stamps:
        spans.append((stamp.stage, stamp.taken - previous_release, stamp.released - stamp.taken))
        previous_release = stamp.released
    return spans


class LatencyStats:
    """Collects the stage stamps of every frame that leaves the pipeline. Memory is bounded:
    at most 200,000 samples per series (under 2 MB each; exact for about two hours at 30 fps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, Samples] = {}
        self._wait: dict[str, Samples] = {}
        self._glass_to_publish = Samples()
        self._glass_to_out = Samples()
        self._first: float | None = None
        self._last: float | None = None
        self.frames = 0

    def record(self, frame: Frame) -> None:
        """Add one finished frame (called by the pipeline for the last stage's output)."""
        with self._lock:
            self.frames += 1
            for stage, wait, busy in stage_spans(frame):
                if stage not in self._busy:
                    self._busy[stage], self._wait[stage] = Samples(), Samples()
                self._busy[stage].append(busy)
                self._wait[stage].append(wait)
            if frame.publish_time is not None:
                self._glass_to_publish.append(frame.publish_time - frame.capture_time)
            done = frame.stamps[-1].released if frame.stamps else time.monotonic()
            self._glass_to_out.append(done - frame.capture_time)
            self._first = done if self._first is None else self._first
            self._last = done

    def summary(self, result: RunResult | None = None) -> dict:
        """Percentiles in milliseconds, per stage and end to end, plus fps and drops."""
        with self._lock:
            stages = {}
            for name, busy in self._busy.items():
                stages[name] = {
                    "busy_ms": _percentiles(busy),
                    "wait_ms": _percentiles(self._wait[name]),
                    "frames": len(busy),
                }
            span = (self._last - self._first) if self.frames > 1 else 0.0
            out = {
                "frames": self.frames,
                "fps": (self.frames - 1) / span if span > 0 else None,
                "stages": stages,
                "glass_to_publish_ms": _percentiles(self._glass_to_publish),
                "glass_to_output_ms": _percentiles(self._glass_to_out),
                "spans": SPANS,
            }
        if result is not None:
            out["frames_captured"] = result.frames_in
            out["wall_time_s"] = round(result.wall_time, 3)
            out["drops"] = dict(result.queue_drops)
            out["drops_total"] = sum(result.queue_drops.values())
            out["queue_max_depth"] = dict(result.queue_max_depth)
            out["stopped_by"] = result.stopped_by
            out["source_faults"] = dict(getattr(result, "source_faults", {}))
            out["overload"] = dict(getattr(result, "overload", {}))
        return out


def _percentiles(samples: Samples) -> dict[str, float | None]:
    if not len(samples):
        return {f"p{p}": None for p in PERCENTILES}
    arr = samples.values() * 1000.0
    return {f"p{p}": round(float(np.percentile(arr, p)), 3) for p in PERCENTILES}


def format_overload(summary: dict) -> str:
    """One line on what live mode gave up to keep up: frames dropped, people left out by
    ``--max-persons``, fits skipped for late frames ('' when none of it happened)."""
    over = summary.get("overload") or {}
    parts = []
    if summary.get("drops_total"):
        parts.append(f"{summary['drops_total']} frames dropped")
    kp = over.get("keypoints") or {}
    if kp.get("persons_left_out"):
        parts.append(f"{kp['persons_left_out']} people left out in {kp['frames_over_cap']} frames "
                     f"(--max-persons {kp['max_persons']}: the {kp['choice']} followed)")
    fit = over.get("refine") or {}
    if fit.get("frames_fit_skipped"):
        parts.append(f"fit skipped on {fit['frames_fit_skipped']} of "
                     f"{fit['frames_fit_skipped'] + fit['frames_fitted']} frames "
                     f"(later than {fit['fit_deadline_ms']:g} ms: the lift's bodies published)")
    return "overload: " + "; ".join(parts) if parts else ""


def format_table(summary: dict) -> str:
    """The per-stage table printed at the end of a run."""

    def ms(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    drops = summary.get("drops", {})
    rows = [("stage", "p50 ms", "p95 ms", "p99 ms", "wait p50", "frames", "drops")]
    for name, st in summary["stages"].items():
        dropped = sum(n for q, n in drops.items() if q.endswith("->" + name))
        rows.append(
            (
                name,
                ms(st["busy_ms"]["p50"]),
                ms(st["busy_ms"]["p95"]),
                ms(st["busy_ms"]["p99"]),
                ms(st["wait_ms"]["p50"]),
                str(st["frames"]),
                str(dropped),
            )
        )
    live = summary.get("mode", "live") == "live"
    if live:
        # Live, the latency that matters: from the frame's capture to the message sent.
        g = summary["glass_to_publish_ms"]
        label = "capture -> publish"
        if g["p50"] is None:
            g, label = summary["glass_to_output_ms"], "capture -> output"
        rows.append((label, ms(g["p50"]), ms(g["p95"]), ms(g["p99"]), "", str(summary["frames"]),
                     str(summary.get("drops_total", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if live:
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
    fps = summary.get("fps")
    if live:
        lines.append(f"{summary['frames']} frames out, {'%.1f' % fps if fps else '-'} fps"
                     + (f", {summary['drops_total']} dropped" if "drops_total" in summary else ""))
    else:
        # Not the stages' times summed: the refine stage holds each frame for its lag, and
        # its times count the hold (an offline run of the clip: 465 ms p50 at 75 ms a frame).
        per_frame = f" ({1000 / fps:.1f} ms a frame)" if fps else ""
        lines.append(f"{summary['frames']} frames out, {'%.1f' % fps if fps else '-'} fps{per_frame}; offline, "
                     "frames queue, so capture-to-publish times measure the queue, not the pipeline, and a "
                     "stage that holds frames for a lag (refine) counts the hold in its times")
    if live and (line := format_overload(summary)):
        lines.append(line)
    lines.append("p50-p99: time a stage spent on a frame; wait: the frame's time in the queue before it "
                 "(docs/performance.md, 'What each time spans')")
    return "\n".join(lines)

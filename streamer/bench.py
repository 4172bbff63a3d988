"""``smplstream bench``: a source through the real pipeline, with latency per stage.

Runs a video file, camera or stream (as ``run`` takes them) or a synthetic camera (one real
frame of the test clip with 1 to 16 people pasted in, :mod:`streamer.synthetic_source`)
through :func:`streamer.app.build_pipeline`, in live or offline mode, and prints per stage
the busy time p50/p95/p99, the thread CPU time per frame (busy minus CPU is time spent
waiting for a core or the GIL), the stage's throughput bound, and end to end the
glass-to-publish latency p50/p95/p99, fps and drops. ``--json`` prints the same for machines.
``--compare A B ...`` runs the same source once per backend, one after the other, and prints
the runs side by side with ratios to the first (on a shared machine only ratios taken in one
invocation are comparable).

    smplstream bench --synthetic 2 --rate 30 --frames 300
    smplstream bench --source tests/data/sports2d_demo.mp4 --mode live
    smplstream bench --synthetic 1 --frames 60 --compare lift=onnxruntime lift=torch --json
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import sys
import time
from dataclasses import replace

from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS, REFINE_LAG
from engines.run_plan import PlanError, mode_defaults, stage_backends

from .app import RunConfig, build_pipeline
from .errors import SmplstreamError
from .frames import Frame
from .latency import LatencyStats, format_overload, stage_spans
from .machine import machine

log = logging.getLogger("smplstream.bench")
SYNTHETIC_FRAMES = 300


#: Frames kept with their stage times in a bench summary's ``slowest_frames``.
SLOWEST_FRAMES = 10


class _AfterWarmup:
    """Forwards to the statistics only frames at or after index ``warmup``, and keeps the
    slowest of them with each stage's times (what the tail of the latency is made of)."""

    def __init__(self, stats: LatencyStats, warmup: int) -> None:
        self.stats = stats
        self.warmup = warmup
        self.persons: list[int] = []
        self.latency_by_people: dict[int, list[float]] = {}
        self._slowest: list[tuple[float, int, dict]] = []  # a min-heap of (latency, index, row)

    def record(self, frame: Frame) -> None:
        if frame.index >= self.warmup:
            self.stats.record(frame)
            self.persons.append(len(frame.persons))
            done = frame.publish_time if frame.publish_time is not None else frame.stamps[-1].released
            latency = done - frame.capture_time
            self.latency_by_people.setdefault(len(frame.persons), []).append(latency)
            if len(self._slowest) < SLOWEST_FRAMES or latency > self._slowest[0][0]:
                row = {"frame": frame.index, "people": len(frame.persons), "end_to_end_ms": round(1000 * latency, 1),
                       "stages": _stage_times(frame)}
                push = heapq.heappush if len(self._slowest) < SLOWEST_FRAMES else heapq.heapreplace
                push(self._slowest, (latency, frame.index, row))

    def slowest(self) -> list[dict]:
        """The slowest frames, slowest first: index, people, end-to-end ms and per stage the
        wait before it and its busy time (ms)."""
        return [row for _, _, row in sorted(self._slowest, key=lambda item: -item[0])]

    def by_people(self) -> dict[str, dict]:
        """End-to-end latency (glass-to-publish, else -output) of the frames with n people."""
        import numpy as np

        out = {}
        for n, values in sorted(self.latency_by_people.items()):
            ms = np.asarray(values) * 1000
            out[str(n)] = {"frames": len(values), **{f"p{p}": round(float(np.percentile(ms, p)), 3)
                                                     for p in (50, 95, 99)}}
        return out

    def persons_summary(self) -> dict:
        """People found per measured frame: min, mean, max."""
        if not self.persons:
            return {"min": None, "mean": None, "max": None}
        return {"min": min(self.persons), "mean": round(sum(self.persons) / len(self.persons), 2),
                "max": max(self.persons)}


def _stage_times(frame: Frame) -> dict[str, dict]:
    """Per stage of ``frame``: ``wait_ms`` in the queue before it, ``busy_ms`` in it."""
    return {stage: {"wait_ms": round(1000 * wait, 1), "busy_ms": round(1000 * busy, 1)}
            for stage, wait, busy in stage_spans(frame)}


class _CpuMeter:
    """Thread CPU time of each stage's ``process`` calls (frames at or after ``warmup``)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stages: dict[str, object] = {}

    def watch(self, stage) -> None:
        process = stage.process
        name = stage.name
        self.stages[name] = stage

        def timed(frame: Frame):
            t0 = time.thread_time()
            out = process(frame)
            if frame.index >= self.warmup:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - t0
                self.calls[name] = self.calls.get(name, 0) + 1
            return out

        stage.process = timed

    def per_frame_ms(self) -> dict[str, float]:
        """CPU ms per frame of each stage, its helper threads included (a stage's
        ``background_cpu_seconds``: the keypoints stage's background detector in live mode;
        counted from the start, warm-up included)."""
        out = {}
        for k, v in self.cpu.items():
            if self.calls[k]:
                v += getattr(self.stages.get(k), "background_cpu_seconds", 0.0)
                out[k] = round(1000 * v / self.calls[k], 3)
        return out


def bench_once(config: RunConfig, *, synthetic: int | None = None, rate: float = 30.0, frames: int | None = None,
               warmup: int = 10, max_persons: int | None = None) -> dict:
    """One run of the pipeline; the latency summary (as ``--stats-json`` writes it) plus
    ``cpu_ms_per_frame`` per stage, ``process_cpu_cores`` (CPU seconds per wall second of the
    whole process) and ``throughput_fps`` per stage (1 / its mean CPU time per frame).
    ``slowest_frames`` holds the slowest frames with each stage's wait and busy time.
    ``max_persons``: with ``synthetic``, follow at most this many (default: every pasted
    person, or ``config.max_persons`` if that is more)."""
    source = None
    if synthetic is not None:
        from .synthetic_source import SyntheticPeopleSource

        source = SyntheticPeopleSource(synthetic, rate=rate, frames=frames or SYNTHETIC_FRAMES,
                                       realtime=config.mode != "offline")
        if config.detector_tile_size is None and source.detector_tile_size:
            config = replace(config, detector_tile_size=source.detector_tile_size)
        follow = max(config.max_persons, synthetic) if max_persons is None else max_persons
        config = replace(config, max_persons=follow, source=source.name)
    pipeline, stats, plan = build_pipeline(config, source=source)
    meter = _CpuMeter(warmup)
    for stage in pipeline.stages:
        meter.watch(stage)
    observer = pipeline.observer = _AfterWarmup(stats, warmup)
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = pipeline.run()
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    summary = stats.summary(result)
    cpu = meter.per_frame_ms()
    for name, st in summary["stages"].items():
        st["cpu_ms_per_frame"] = cpu.get(name)
        st["throughput_fps"] = round(1000 / cpu[name], 1) if cpu.get(name) else None
    summary.update(mode=plan.mode, plan=plan.to_dict(), source=pipeline.source.name, backend=config.backend,
                   warmup_frames=warmup,
                   process_cpu_cores=round(cpu_s / wall_s, 2) if wall_s > 0 else None,
                   detector_tile_size=config.detector_tile_size)
    summary["persons_per_frame"] = observer.persons_summary()
    summary["end_to_end_ms_by_people"] = observer.by_people()
    summary["slowest_frames"] = observer.slowest()
    return summary


def end_to_end(summary: dict) -> tuple[str, dict]:
    """Glass-to-publish where a publisher ran, else glass-to-output (the publish stage's release)."""
    g = summary["glass_to_publish_ms"]
    if g["p50"] is None:
        return "glass-to-output", summary["glass_to_output_ms"]
    return "glass-to-publish", g


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_run(summary: dict) -> str:
    """One run as a table: per stage busy p50/p95/p99, CPU per frame, throughput bound, drops."""
    drops = summary.get("drops", {})
    rows = [("stage", "p50 ms", "p95 ms", "p99 ms", "cpu ms/fr", "max fps", "frames", "drops")]
    for name, st in summary["stages"].items():
        dropped = sum(n for q, n in drops.items() if q.endswith("->" + name))
        b = st["busy_ms"]
        rows.append((name, _ms(b["p50"]), _ms(b["p95"]), _ms(b["p99"]), _ms(st.get("cpu_ms_per_frame")),
                     _ms(st.get("throughput_fps")), str(st["frames"]), str(dropped)))
    label, g = end_to_end(summary)
    rows.append((label, _ms(g["p50"]), _ms(g["p95"]), _ms(g["p99"]), "", "", str(summary["frames"]),
                 str(summary.get("drops_total", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    rule = "-" * len(lines[0])
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    fps = summary.get("fps")
    people = summary.get("persons_per_frame") or {}
    lines.append(f"people per frame: min {people.get('min')}, mean {people.get('mean')}, max {people.get('max')}")
    by_people = summary.get("end_to_end_ms_by_people") or {}
    if len(by_people) > 1:
        lines.append(f"{label} by people in the frame: " + "; ".join(
            f"{n}: p50 {_ms(v['p50'])} p99 {_ms(v['p99'])} ms ({v['frames']} frames)" for n, v in by_people.items()))
    kp = (summary.get("overload") or {}).get("keypoints") or {}
    if kp.get("newcomer_crops"):
        lines.append(f"landmark crops of regions not followed: {kp['newcomer_crops']}, "
                     f"{kp['newcomer_crops_kept']} of them someone then followed")
    if slowest := summary.get("slowest_frames"):
        lines.append("slowest frames (stage: wait + busy ms): " + "; ".join(
            f"{r['frame']} ({r['people']} people) {_ms(r['end_to_end_ms'])} ms: " + ", ".join(
                f"{n} {_ms(t['wait_ms'])}+{_ms(t['busy_ms'])}" for n, t in r["stages"].items() if n != "grab")
            for r in slowest[:3]))
    if overload := format_overload(summary):
        lines.append(overload)
    lines.append(f"{summary['frames']} frames measured (after {summary['warmup_frames']} warm-up), "
                 f"{_ms(fps)} fps, {summary.get('frames_captured')} captured, {summary.get('drops_total')} dropped, "
                 f"process CPU {summary.get('process_cpu_cores')} cores")
    return "\n".join(lines)


def format_compare(runs: list[dict]) -> str:
    """Runs side by side: per stage busy p50, end-to-end p50/p99 and fps, with each run's
    ratio to the first (time ratios: run / first; fps ratio: run / first)."""
    names = [r["backend"] for r in runs]
    stages = list(dict.fromkeys(s for r in runs for s in r["stages"]))
    rows: list[tuple[str, list[float | None]]] = []
    for s in stages:
        rows.append((f"{s} p50 ms", [r["stages"].get(s, {}).get("busy_ms", {}).get("p50") for r in runs]))
        rows.append((f"{s} cpu ms/fr", [r["stages"].get(s, {}).get("cpu_ms_per_frame") for r in runs]))
    label = end_to_end(runs[0])[0]
    for p in ("p50", "p99"):
        rows.append((f"{label} {p} ms", [end_to_end(r)[1][p] for r in runs]))
    rows.append(("fps", [r.get("fps") for r in runs]))
    rows.append(("dropped", [r.get("drops_total") for r in runs]))
    header = ["", *names] + [f"{n}/{names[0]}" for n in names[1:]]
    table = [header]
    for label_, values in rows:
        if all(v is None for v in values):
            continue
        ratios = []
        for v in values[1:]:
            # A ratio of two times under 0.05 ms (e.g. a grabber that only hands frames on) is noise.
            tiny = label_.endswith((" ms", " ms/fr")) and (values[0] or 0) < 0.05
            ratios.append("-" if v is None or not values[0] or tiny else f"{v / values[0]:.2f}")
        table.append([label_, *(_ms(v) if not isinstance(v, int) else str(v) for v in values), *ratios])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def ratios(runs: list[dict]) -> dict:
    """Per other run, its ratio to the first for every stage's busy p50 and end to end."""
    first = runs[0]
    out = {}
    for r in runs[1:]:
        entry = {}
        for s, st in r["stages"].items():
            a, b = first["stages"].get(s, {}).get("busy_ms", {}).get("p50"), st["busy_ms"]["p50"]
            entry[f"{s}_p50"] = round(b / a, 3) if a and b is not None else None
        for p in ("p50", "p99"):
            a, b = end_to_end(first)[1][p], end_to_end(r)[1][p]
            entry[f"end_to_end_{p}"] = round(b / a, 3) if a and b is not None else None
        entry["fps"] = round(r["fps"] / first["fps"], 3) if r.get("fps") and first.get("fps") else None
        out[r["backend"]] = entry
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smplstream bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="video file, folder, camera index or stream URL (as `run` takes)")
    src.add_argument("--synthetic", type=int, metavar="PEOPLE",
                     help="synthetic camera: one real frame with 1 to 16 people pasted in")
    p.add_argument("--rate", type=float, default=30.0, metavar="FPS", help="synthetic: frame rate (default 30)")
    p.add_argument("--frames", type=int, metavar="N",
                   help=f"synthetic: frames to send (default {SYNTHETIC_FRAMES}); other sources: stop after N frames")
    p.add_argument("--mode", choices=("live", "offline"),
                   help="live: paced, drop-oldest queues; offline: as fast as possible, nothing dropped "
                        "(default: live for cameras, streams and --synthetic; offline for files)")
    p.add_argument("--warmup", type=int, default=10, metavar="N",
                   help="leave the first N frames out of the statistics (default 10)")
    p.add_argument("--backend", default="auto",
                   help="engine backend for every stage, or per stage: lift=torch,refine=onnxruntime")
    p.add_argument("--compare", nargs="+", metavar="BACKEND",
                   help="run once per backend (same forms as --backend) and print the runs side by side")
    p.add_argument("--publish", default="none", metavar="ENDPOINT",
                   help="also publish over ZeroMQ (default none: glass-to-output is measured)")
    p.add_argument("--lift-steps", type=int, metavar="K", help=f"denoising steps (default: {mode_defaults(LIFT_STEPS)})")
    p.add_argument("--lift-samples", type=int, metavar="N", help=f"samples per person (default {LIFT_SAMPLES})")
    p.add_argument("--refine-lag", type=int, default=None, metavar="L", help=f"default: {mode_defaults(REFINE_LAG)}")
    p.add_argument("--refine-steps", type=int, metavar="S",
                   help="keypoint-fit iterations per denoiser call (default: 1 live, 2 offline)")
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--no-lift", action="store_true")
    p.add_argument("--denoiser-precision", choices=("fp32", "int8"),
                   help="lift and refinement network weights (default: int8 live on CPU, else fp32)")
    p.add_argument("--max-persons", type=int, metavar="N",
                   help="follow at most N people, the largest (default 6; synthetic: every pasted person)")
    p.add_argument("--detector-tiles", type=int, metavar="PIXELS",
                   help="also detect on tiles of this size (synthetic: chosen to fit the pasted people)")
    p.add_argument("--camera", metavar="CAM.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p


def main(argv: list[str] | None = None) -> int:
    """``smplstream bench``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.synthetic is not None and not 1 <= args.synthetic <= 16:
        print(f"smplstream bench: error: --synthetic takes 1 to 16 people, got {args.synthetic}", file=sys.stderr)
        return 2
    mode = args.mode or ("live" if args.synthetic is not None else None)
    config = RunConfig(
        source=args.source or "synthetic", mode=mode,
        publish=None if args.publish.lower() == "none" else args.publish,
        max_frames=None if args.synthetic is not None else args.frames,
        camera=args.camera, lift=not args.no_lift, lift_steps=args.lift_steps, lift_samples=args.lift_samples,
        refine=not args.no_refine, refine_lag=args.refine_lag, refine_steps=args.refine_steps, progress=False, max_persons=args.max_persons or 6,
        detector_tile_size=args.detector_tiles, denoiser_precision=args.denoiser_precision,
    )
    backends = args.compare or [args.backend]
    conditions = machine()
    runs = []
    try:
        for name in backends:
            stage_backends(name)
            log.info("bench: backend %s", name)
            runs.append(bench_once(replace(config, backend=name), synthetic=args.synthetic, rate=args.rate,
                                   frames=args.frames, warmup=args.warmup, max_persons=args.max_persons))
    except (SmplstreamError, PlanError) as exc:
        print(f"smplstream bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {"machine": conditions, "runs": runs}
        if len(runs) > 1:
            out["ratios_to_first"] = ratios(runs)
        print(json.dumps(out, indent=2))
        return 0
    print(f"{conditions['cpu']}, {conditions['cores']} cores, load {conditions['load_avg_1min']} at start")
    for r in runs:
        print(f"\n{r['source']} | {r['mode']} | backend {r['backend']}"
              + (f" | detector tiles {r['detector_tile_size']} px" if r.get("detector_tile_size") else ""))
        print(format_run(r))
    if len(runs) > 1:
        print()
        print(format_compare(runs))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    sys.exit(main())

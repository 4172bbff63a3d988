"""``smplstream batch``: many videos through the offline pipeline on Ray, one task per
video, with the results written as ``run --record`` writes them (``docs/batch.md``).

The driver (this process) expands the inputs, skips the videos already done with the same
settings, starts a local Ray or joins one, and hands the videos to ``--workers`` actors
(:class:`BatchWorker`). Each actor loads the networks once (:class:`EngineSet`) and runs
``streamer.app.run`` on one video after another into a private temporary folder; the
driver publishes each result under ``--out`` in one rename (:mod:`streamer.batch_manifest`)
and records it in ``manifest.jsonl``. An actor whose process dies is restarted by Ray and
its video retried; a video that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .app import RunConfig, check_config
from .batch_inputs import Video, content_hash, expand_inputs, probe
from .batch_manifest import Manifest, clear_partial, done_record, file_digest, job_key, publish, settings_key
from .errors import ConfigError, SmplstreamError
from .graph import Stage

log = logging.getLogger("smplstream.batch")

RAY_MISSING = ("smplstream batch runs on Ray, which is not installed: pip install 'smplstream[batch]' "
               "(or pip install 'ray[client]')")
TRACK_FILE = re.compile(r"track_\d+\.npz$")  # a track's SMPL file (not its keypoints)
PROGRESS_EVERY = 0.5  # seconds between a worker's frame counts to the driver


@dataclass
class BatchConfig:
    """Options of one ``batch`` invocation. ``run``: the settings every video runs with
    (its ``source``, ``record`` and ``stats_json`` are set per video)."""

    inputs: list[str]
    out: str
    run: RunConfig
    address: str | None = None  # None: a local Ray started and stopped here
    workers: int = 1
    threads: int = 1  # per worker: intra-op threads of each network, and the CPUs Ray reserves
    retries: int = 2  # restarts of a worker whose process died, each retrying its video
    progress: bool = True
    on_progress: Callable[[dict], None] | None = None  # called with each snapshot (tests, embedding)


@dataclass
class VideoResult:
    """One line of ``manifest.jsonl``."""

    video: str
    source: str
    status: str  # "done" or "failed"
    skipped: bool = False  # done by an earlier batch with the same settings
    frames: int | None = None
    video_fps: float | None = None  # the video's frame rate
    fps: float | None = None  # frames processed per second of the task's wall time
    wall_s: float | None = None
    worker: str | None = None
    attempts: int = 0
    tracks: int | None = None
    error: str | None = None
    key: str | None = None

    def line(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class BatchReport:
    """What a batch did: a result per video, the wall time, the per-worker table."""

    results: list[VideoResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status != "done"]

    def worker_table(self) -> str:
        """Throughput per worker of the videos processed now (skipped ones left out)."""
        rows: dict[str, list[VideoResult]] = {}
        for r in self.results:
            if r.worker and not r.skipped:
                rows.setdefault(r.worker, []).append(r)
        lines = [f"{'worker':<24}{'videos':>7}{'failed':>7}{'frames':>8}{'busy s':>9}{'frames/s':>10}{'videos/h':>10}"]
        total_frames = total_videos = 0
        for worker, results in sorted(rows.items()):
            done = [r for r in results if r.status == "done"]
            frames = sum(r.frames or 0 for r in done)
            busy = sum(r.wall_s or 0 for r in results)
            total_frames += frames
            total_videos += len(done)
            lines.append(f"{worker:<24}{len(done):>7}{len(results) - len(done):>7}{frames:>8}{busy:>9.1f}"
                         f"{frames / busy if busy else 0:>10.2f}{3600 * len(done) / busy if busy else 0:>10.1f}")
        skipped = sum(r.skipped for r in self.results)
        wall = self.wall_s or 1e-9
        lines.append(f"{'all (wall time)':<24}{total_videos:>7}{len(self.failed):>7}{total_frames:>8}{self.wall_s:>9.1f}"
                     f"{total_frames / wall:>10.2f}{3600 * total_videos / wall:>10.1f}")
        if skipped:
            lines.append(f"{skipped} video(s) skipped: done before with the same settings")
        return "\n".join(lines)


class FrameCounter(Stage):
    """Counts the frames of one video as they reach the outputs and tells the batch's
    progress actor every PROGRESS_EVERY seconds (and at the end)."""

    name = "batch-progress"

    def __init__(self, progress, video: str) -> None:
        self.progress = progress
        self.video = video
        self.frames = 0
        self._sent = 0.0

    def process(self, frame):
        self.frames += 1
        now = time.monotonic()
        if now - self._sent >= PROGRESS_EVERY:
            self._sent = now
            self.progress.frames.remote(self.video, self.frames)
        return frame

    def close(self) -> None:
        self.progress.frames.remote(self.video, self.frames)


class BatchProgress:
    """A Ray actor the workers report to: per video its frames so far, the worker on it and
    how many times it was started (a retried video starts again from frame 0)."""

    def __init__(self) -> None:
        self.videos: dict[str, dict] = {}

    def started(self, video: str, worker: str, pid: int) -> None:
        state = self.videos.setdefault(video, {"attempts": 0})
        state.update(frames=0, worker=worker, pid=pid, attempts=state["attempts"] + 1)

    def frames(self, video: str, count: int) -> None:
        self.videos.setdefault(video, {"attempts": 0})["frames"] = count

    def snapshot(self) -> dict:
        return {k: dict(v) for k, v in self.videos.items()}


class BatchWorker:
    """A Ray actor: the networks of the batch's plan, loaded once when it starts, then one
    video after another through :func:`streamer.app.run`."""

    def __init__(self, template: RunConfig, progress_name: str) -> None:
        import cv2
        import ray

        from engines.run_plan import plan_run
        from .stage_engines import EngineSet

        logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
        cv2.setNumThreads(1)
        self.template = template
        # Found by name, not passed in: a restarted actor gets its arguments again only if
        # they are small values, not references.
        self.progress = ray.get_actor(progress_name)
        self.engines = EngineSet(plan_run(template, "offline"))
        plan = self.engines.plan
        # Load every network now, not in the first video's time.
        if plan.keypoints is not None:
            self.engines.keypoints()
        if plan.lift is not None:
            self.engines.lifter()
        if plan.refine is not None:
            self.engines.refiner()
        self.pid = os.getpid()
        self.name = f"{_node_ip()}:{self.pid}"

    def process(self, video: str, source: str) -> dict:
        """Run ``source`` and return its result files (relative path -> bytes) and figures,
        or ``status: failed`` and the error. Never raises for a bad video."""
        import tempfile

        from .app import run

        self.progress.started.remote(video, self.name, self.pid)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="smplstream-batch-") as tmp:
            record = Path(tmp) / "out"
            config = replace(self.template, source=source, record=str(record),
                             stats_json=str(Path(tmp) / "stats.json"))
            counter = FrameCounter(self.progress, video)
            try:
                outcome = run(config, extra_stages=[counter], engines=self.engines)
            except SmplstreamError as exc:
                return self._failed(str(exc), started)
            except Exception as exc:  # noqa: BLE001 - one bad video must not stop the worker
                log.exception("%s failed", video)
                return self._failed(f"{type(exc).__name__}: {exc}", started)
            wall = time.monotonic() - started
            if outcome.result.stopped_by:
                return self._failed(f"stopped by {outcome.result.stopped_by}", started)
            (record / "stats.json").write_bytes(Path(config.stats_json).read_bytes())
            files = {str(p.relative_to(record)): p.read_bytes() for p in sorted(record.rglob("*")) if p.is_file()}
        frames = outcome.result.frames_out
        return {"status": "done", "files": files, "frames": frames, "wall_s": round(wall, 3),
                "fps": round(frames / wall, 3) if wall > 0 else None, "worker": self.name,
                "plan": outcome.summary.get("plan"), "tracks": sum(bool(TRACK_FILE.match(f)) for f in files)}

    def _failed(self, error: str, started: float) -> dict:
        return {"status": "failed", "error": error, "worker": self.name,
                "wall_s": round(time.monotonic() - started, 3)}


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        return "local"


def _is_loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = urlsplit(address if "://" in address else f"ray://{address}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def import_ray(address: str | None):
    """Import Ray for a local run or ``address``. Ray's own local clusters on one machine
    listen on the loopback interface only when told before it is imported (otherwise on
    the machine's address); usage statistics stay off unless asked for."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _check(config: BatchConfig) -> None:
    if config.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if config.threads < 1:
        raise ConfigError("--threads-per-worker must be at least 1")
    if config.retries < 0:
        raise ConfigError("--retries must be 0 or more")
    if config.run.camera is not None and not Path(config.run.camera).is_file():
        raise ConfigError(f"--camera {config.run.camera}: no such file (make one with `smplstream calibrate`)")
    check_config(config.run)
    if config.run.formats:
        from .motion_formats import parse_formats

        parse_formats(config.run.formats)


def run_batch(config: BatchConfig) -> BatchReport:
    """Process every video of ``config``; return what happened to each. Raises
    ConfigError for options or inputs that cannot work (before any video starts)."""
    from engines.run_plan import plan_run

    started = time.monotonic()
    template = replace(config.run, mode="offline", publish=None, progress=False, threads=config.threads,
                       record=None, stats_json=None, source="")
    _check(config)
    videos = expand_inputs(config.inputs)
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: {exc.strerror or exc}") from None
    plan = plan_run(template, "offline")  # a setting this machine cannot run fails here
    settings = settings_key(plan.to_dict(), {
        "formats": template.formats, "mcap_video": template.mcap_video, "max_frames": template.max_frames,
        "fps": template.fps, "camera": file_digest(template.camera)})
    clear_partial(out)
    manifest = Manifest(out)
    report = BatchReport()
    todo: list[tuple[Video, str]] = []
    for video in videos:
        try:
            key = job_key(content_hash(video), settings)
        except OSError as exc:
            result = VideoResult(video.name, video.source, "failed", error=f"cannot read {video.source}: "
                                 f"{exc.strerror or exc}")
            manifest.set(result.line())
            report.results.append(result)
            continue
        record = done_record(out, video.name, key)
        if record is not None:
            result = VideoResult(video.name, video.source, "done", skipped=True, key=key,
                                 **{k: record.get(k) for k in ("frames", "video_fps", "fps", "wall_s", "worker",
                                                               "attempts", "tracks")})
            manifest.set(result.line())
            report.results.append(result)
        else:
            todo.append((video, key))
    if todo:
        report.results += _process(config, template, todo, out, manifest)
    clear_partial(out)
    report.wall_s = round(time.monotonic() - started, 3)
    return report


def _process(config: BatchConfig, template: RunConfig, todo: list[tuple[Video, str]], out: Path,
             manifest: Manifest) -> list[VideoResult]:
    ray = import_ray(config.address)
    from ray.exceptions import RayActorError, RayError

    # Longest first: the last videos to finish are then short ones (better balance).
    sizes = {v.source: (0 if v.is_url else Path(v.source).stat().st_size) for v, _ in todo}
    todo = sorted(todo, key=lambda item: -sizes[item[0].source])
    probed = {v.name: probe(v) for v, _ in todo}  # (frames, frame rate) the containers announce
    try:
        if config.address is None:
            ray.init(num_cpus=config.workers * config.threads, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        else:
            ray.init(address=config.address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        where = "a local Ray" if config.address is None else f"Ray at {config.address}"
        raise ConfigError(f"batch: cannot start {where}: {exc}".splitlines()[0]) from None
    results: list[VideoResult] = []
    bar = None
    try:
        progress_name = f"smplstream-batch-progress-{uuid.uuid4().hex}"
        progress = ray.remote(num_cpus=0)(BatchProgress).options(name=progress_name).remote()
        worker_class = ray.remote(BatchWorker).options(num_cpus=config.threads, max_restarts=config.retries,
                                                       max_task_retries=config.retries)

        def new_worker():
            return worker_class.remote(template, progress_name)

        workers = [new_worker() for _ in range(min(config.workers, len(todo)))]
        if config.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=sum(f or 0 for f, _ in probed.values()) or None, unit="frame", dynamic_ncols=True,
                       desc=f"0/{len(todo)} videos")
        queue = list(todo)
        running: dict = {}  # task ref -> (worker slot, video, key)
        for slot in range(len(workers)):
            video, key = queue.pop(0)
            running[workers[slot].process.remote(video.name, video.source)] = (slot, video, key)
        finished = 0
        snapshot: dict = {}
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY)
            snapshot = ray.get(progress.snapshot.remote())
            if config.on_progress is not None:
                config.on_progress(snapshot)
            for ref in ready:
                slot, video, key = running.pop(ref)
                state = snapshot.get(video.name, {})
                try:
                    reply = ray.get(ref)
                except RayActorError as exc:
                    reply = {"status": "failed", "worker": state.get("worker"),
                             "error": f"the worker process died {config.retries + 1} time(s) on this video "
                                      f"({str(exc).splitlines()[0]})"}
                    workers[slot] = new_worker()  # the old one is gone for good
                except RayError as exc:
                    reply = {"status": "failed", "worker": state.get("worker"),
                             "error": str(exc).splitlines()[0]}
                reply.setdefault("video_fps", probed[video.name][1])
                result = _record(reply, video, key, max(1, state.get("attempts", 1)), out, manifest)
                results.append(result)
                finished += 1
                if result.status != "done":
                    log.warning("%s failed: %s", video.name, result.error)
                if queue:
                    nxt, nkey = queue.pop(0)
                    running[workers[slot].process.remote(nxt.name, nxt.source)] = (slot, nxt, nkey)
            if bar is not None:
                done_frames = sum(s.get("frames", 0) for s in snapshot.values())
                bar.n = done_frames
                failed = sum(r.status != "done" for r in results)
                bar.set_description(f"{finished}/{len(todo)} videos" + (f", {failed} failed" if failed else ""))
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
        ray.shutdown()
    return results


def _record(reply: dict, video: Video, key: str, attempts: int, out: Path, manifest: Manifest) -> VideoResult:
    """Publish a finished video's files and write its manifest line."""
    result = VideoResult(video.name, video.source, reply["status"], worker=reply.get("worker"),
                         wall_s=reply.get("wall_s"), attempts=attempts, error=reply.get("error"), key=key)
    if result.status == "done":
        result.frames, result.fps = reply["frames"], reply["fps"]
        result.video_fps, result.tracks = reply.get("video_fps"), reply.get("tracks")
        record = {**result.line(), "plan": reply.get("plan"), "files": sorted(reply["files"])}
        try:
            publish(out, video.name, reply["files"], record)
        except (OSError, ValueError, SmplstreamError) as exc:
            result.status, result.error = "failed", f"cannot write the result: {exc}"
    manifest.set(result.line())
    return result

"""The machine a benchmark runs on: what it is (:func:`machine`) and how fast its cores run
right now (:func:`core_speed`). Light on imports, so that the probe's worker processes start
quickly."""

from __future__ import annotations

import os
import platform
import time


def machine() -> dict:
    """The CPU, cores and load the figures were taken under."""
    model = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version()}


def _time_work_units(seconds: float, start: float = 0.0) -> list[float]:
    """Wall ms of each fixed unit of pure-Python work done in ``seconds``, from the wall-clock
    time ``start`` (``time.time()``; so that processes started one after another work at
    once)."""
    time.sleep(max(0.0, start - time.time()))
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        x = 0
        for i in range(100_000):
            x += i * i
        out.append(1000 * (time.perf_counter() - t))
    return out


def core_speed(seconds: float = 1.0) -> dict:
    """How fast the machine's cores run right now: the same fixed units of pure-Python work,
    first in one process alone, then in one process per core at once, ``seconds`` each. Wall
    ms per unit (alone: the 10th percentile, one core at its fastest, since a neighbour may
    take that core for part of the second too; with every core busy: p50 and p90), and
    ``share``: the speed of each core with all of them busy as a fraction of one alone (1.0:
    the cores are really there). On a shared virtual machine the neighbours' load shows here
    and nowhere else (the load average and /proc/stat's steal time do not see it): a
    benchmark round taken while ``share`` read low ran on fewer cores' worth of CPU."""
    import json
    import statistics
    import subprocess
    import sys

    cores = os.cpu_count() or 1
    # Plain interpreters rather than multiprocessing: nothing of the caller's main module is
    # imported again, whatever script calls this.
    code = ("import json, sys; from streamer.machine import _time_work_units; "
            "print(json.dumps(_time_work_units(float(sys.argv[1]), float(sys.argv[2]))))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))

    def units(processes: int) -> list[float]:
        # Every worker starts its units at one moment, after the interpreters have started.
        start = str(time.time() + 0.5)
        workers = [subprocess.Popen([sys.executable, "-c", code, str(seconds), start], stdout=subprocess.PIPE,
                                    text=True, env=env) for _ in range(processes)]
        return sorted(u for w in workers for u in json.loads(w.communicate()[0]))

    alone_units = units(1)
    alone = alone_units[len(alone_units) // 10]
    busy = units(cores)
    p50 = statistics.median(busy)
    return {"unit_ms_alone": round(alone, 2), "unit_ms_p50": round(p50, 2),
            "unit_ms_p90": round(busy[min(len(busy) - 1, int(0.9 * len(busy)))], 2),
            "share": round(alone / p50, 2), "cores": cores}

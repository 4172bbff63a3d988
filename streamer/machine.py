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


def _time_work_units(seconds: float) -> list[float]:
    """Wall ms of each fixed unit of pure-Python work done in ``seconds``."""
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
    """How fast the machine's cores run right now: one process per core does the same fixed
    units of pure-Python work for ``seconds`` at once; the wall ms per unit (p50, p90).
    On a shared virtual machine the neighbours' load shows here and nowhere else (the load
    average and /proc/stat's steal time do not see it), so a benchmark round taken while
    this read high ran on a slower machine."""
    import multiprocessing as mp
    import statistics

    cores = os.cpu_count() or 1
    with mp.get_context("spawn").Pool(cores) as pool:
        units = [u for part in pool.map(_time_work_units, [seconds] * cores) for u in part]
    units.sort()
    return {"unit_ms_p50": round(statistics.median(units), 2),
            "unit_ms_p90": round(units[min(len(units) - 1, int(0.9 * len(units)))], 2), "cores": cores}

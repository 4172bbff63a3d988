"""Thread scheduling: a thread that should give way to others when the cores are contended."""

from __future__ import annotations

import os
import sys
import threading


def lower_thread_priority(increment: int) -> None:
    """Schedule the calling thread ``increment`` nice levels below where it is (Linux, where a
    thread has a nice value of its own; elsewhere nothing happens). Threads it starts later
    inherit the lower priority. Where the cores are free this changes nothing; where they are
    contended the kernel runs the others first."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:  # a sandbox that forbids it: the thread keeps its priority
        pass

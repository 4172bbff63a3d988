"""Bounded queues between stages, with the two policies of the design:

- ``block``: a full queue makes the producer wait (offline: nothing is dropped).
- ``drop_oldest``: a full queue discards its oldest frame so the newest always gets in
  (live: latency first); every discarded frame is counted.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Literal

QueuePolicy = Literal["block", "drop_oldest"]

END_OF_STREAM = object()
"""Sentinel put after the last frame; never dropped."""


class FrameQueue:
    """A bounded FIFO between two stage threads."""

    def __init__(self, name: str, maxsize: int, policy: QueuePolicy):
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        if policy not in ("block", "drop_oldest"):
            raise ValueError(f"unknown queue policy {policy!r}")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.drops = 0
        self.max_depth = 0
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        """Add ``item``. Returns False if ``stop`` was set while waiting for room (block)."""
        with self._cond:
            if item is not END_OF_STREAM:
                if self.policy == "drop_oldest":
                    while len(self._items) >= self.maxsize and self._drop_one():
                        pass
                else:
                    while len(self._items) >= self.maxsize:
                        if stop is not None and stop.is_set():
                            return False
                        self._cond.wait(0.05)
            self._items.append(item)
            if item is not END_OF_STREAM:
                self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()
            return True

    def _drop_one(self) -> bool:
        for i, queued in enumerate(self._items):
            if queued is not END_OF_STREAM:
                del self._items[i]
                self.drops += 1
                return True
        return False

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; raises TimeoutError after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise TimeoutError(f"queue {self.name} stayed empty for {timeout} s")
            item = self._items.popleft()
            self._cond.notify_all()
            return item

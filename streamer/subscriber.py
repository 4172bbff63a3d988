"""A Python client for the stream: connect, receive, decode, notice gaps.

>>> with Subscriber("tcp://127.0.0.1:5555") as sub:
...     for msg in sub:
...         print(msg.frame.frame_index, [p.track_id for p in msg.frame.persons])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import zmq

from .wire import TOPIC, DecodedFrame, WireError, decode_message


@dataclass
class ReceivedFrame:
    """A decoded frame with what the subscriber observed when it arrived."""

    frame: DecodedFrame
    receive_time: float  # time.monotonic() on arrival
    missed: int  # sequence numbers skipped just before this one (0: no gap)

    @property
    def latency(self) -> float:
        """Publish-to-receive seconds; meaningful when publisher and subscriber share a host
        (both stamp with the system-wide monotonic clock)."""
        return self.receive_time - self.frame.header["publish_time"]


class Subscriber:
    """Subscribes to a smplstream publisher and yields :class:`ReceivedFrame` s.

    Malformed messages are counted in ``bad_messages`` and skipped (``strict=True`` raises
    :class:`~streamer.wire.WireError` instead); a message part over ``max_message_bytes``
    is never delivered: ZeroMQ closes that connection instead of buffering it. ``gaps`` and ``missed`` count sequence
    numbers that never arrived (messages dropped at a high-water mark).
    """

    def __init__(self, endpoint: str, *, rcvhwm: int = 1000, strict: bool = False,
                 context: zmq.Context | None = None, curve_keys: str | None = None,
                 max_message_bytes: int = 64 << 20):
        self.endpoint = endpoint
        self.strict = strict
        self.gaps = 0
        self.missed = 0
        self.bad_messages = 0
        self.received = 0
        self._last_seq: int | None = None
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        # A message part larger than this (a frame of 16 people is about 43 kB) makes ZeroMQ
        # close the connection instead of buffering it: a hostile or broken publisher cannot
        # make this process allocate gigabytes.
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self._sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        if curve_keys:
            from .security import secure_subscriber

            try:
                secure_subscriber(self._sock, curve_keys)
            except BaseException:
                self._sock.close(0)
                raise
        self._sock.connect(endpoint)

    def receive(self, timeout: float | None = None) -> ReceivedFrame | None:
        """The next valid frame, or None if nothing arrived within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms, zmq.POLLIN):
                return None
            parts = self._sock.recv_multipart()
            now = time.monotonic()
            try:
                frame = decode_message(parts)
            except WireError:
                self.bad_messages += 1
                if self.strict:
                    raise
                continue
            missed = 0
            if self._last_seq is not None and frame.seq > self._last_seq + 1:
                missed = frame.seq - self._last_seq - 1
                self.gaps += 1
                self.missed += missed
            self._last_seq = frame.seq
            self.received += 1
            return ReceivedFrame(frame=frame, receive_time=now, missed=missed)

    def __iter__(self) -> Iterator[ReceivedFrame]:
        while True:
            msg = self.receive()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

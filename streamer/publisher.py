"""The ZeroMQ publisher: an XPUB socket that sends one wire-v1 message per frame.

XPUB rather than PUB so the publisher sees subscriptions arrive: ``wait_for_subscribers``
holds the first frame until N subscribers have joined (no frame lost to ZeroMQ's
slow-joiner effect in offline runs). Sends never block: a subscriber that cannot keep up
loses messages at its high-water mark; the pipeline never waits for it.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from urllib.parse import urlparse

import zmq

from .errors import PublishError
from .frames import Frame
from .wire import TOPIC, encode_frame

log = logging.getLogger("smplstream.publish")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class ZmqPublisher:
    """Binds ``endpoint`` and publishes frames.

    ``hwm`` is the number of messages queued per subscriber before further ones are dropped
    for that subscriber. ``extra_header`` is merged into every header (camera, body model).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, hwm: int = 64,
                 extra_header: dict | None = None, context: zmq.Context | None = None,
                 curve_keys: str | None = None):
        if "\0" in endpoint:
            raise PublishError(f"cannot publish on {endpoint!r}: the endpoint contains a NUL byte")
        self.endpoint = endpoint
        self.extra_header = dict(extra_header or {})
        self.seq = 0
        self.subscribers = 0
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.XPUB)
        # Verbose(r): see every subscribe and unsubscribe, not only the first and last.
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._auth = None
        if curve_keys:
            from .security import secure_publisher

            try:
                self._auth = secure_publisher(self._sock, curve_keys, self._ctx)
            except BaseException:
                self._sock.close(0)
                raise
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            if exc.errno == errno.EADDRINUSE:
                raise PublishError(
                    f"cannot publish on {endpoint}: address already in use (another smplstream "
                    "running? choose another port with --publish tcp://127.0.0.1:PORT)") from None
            raise PublishError(f"cannot publish on {endpoint}: {exc.strerror} (expected e.g. "
                               "tcp://127.0.0.1:5555 or ipc:///tmp/smplstream)") from None
        self.bound_endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        host = urlparse(self.bound_endpoint).hostname or ""
        if host in ("0.0.0.0", "*", "::", "[::]") and not curve_keys:
            log.warning("publishing on all network interfaces (%s): anyone who can reach this "
                        "machine can subscribe; bind 127.0.0.1 unless you mean it, or use --curve-keys",
                        self.bound_endpoint)

    def poll_subscriptions(self, timeout_ms: int = 0) -> int:
        """Read pending (un)subscribe notices; returns the current subscriber count."""
        while self._sock.poll(timeout_ms, zmq.POLLIN):
            msg = self._sock.recv()
            if msg[:1] == b"\x01" and TOPIC.startswith(msg[1:]):
                self.subscribers += 1
            elif msg[:1] == b"\x00" and TOPIC.startswith(msg[1:]):
                self.subscribers = max(0, self.subscribers - 1)
            timeout_ms = 0
        return self.subscribers

    def wait_for_subscribers(self, count: int, stop: threading.Event | None = None,
                             timeout: float | None = None) -> bool:
        """Block until ``count`` subscribers have subscribed; False on stop or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while self.poll_subscriptions(100) < count:
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            if not announced:
                log.info("waiting for %d subscriber(s) on %s", count, self.bound_endpoint)
                announced = True
        return True

    def publish(self, frame: Frame) -> None:
        """Send ``frame`` (stamping its publish time); never blocks."""
        self.poll_subscriptions()
        now = time.monotonic()
        frame.publish_time = now
        parts = encode_frame(frame, self.seq, now, wall_time=time.time(), extra=self.extra_header)
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # XPUB drops at the HWM rather than raising; kept for safety
        self.seq += 1

    def close(self) -> None:
        self._sock.close()
        if self._auth is not None:
            self._auth.stop()

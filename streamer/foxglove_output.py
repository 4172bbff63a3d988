"""``--foxglove [HOST:PORT]``: a live Foxglove WebSocket server (the ``foxglove-sdk``
package, optional extra ``robots``) with the same ROS 2 channels as the MCAP file
(:mod:`streamer.ros2_messages`, CDR with ``ros2msg`` schemas): open Foxglove, connect to
``ws://HOST:PORT`` and the people appear in 3D over the camera image.

A channel's message is built and encoded only while a client is subscribed to it, so an
idle server costs next to nothing; the JPEG only while someone watches the image.
"""

from __future__ import annotations

import logging
import time

from . import ros2_messages as rm
from .errors import ConfigError
from .frames import Frame

log = logging.getLogger("smplstream.foxglove")

DEFAULT_ADDRESS = "127.0.0.1:8765"
STATIC_EVERY_SECONDS = 1.0  # /tf_static and camera info are repeated for clients that join late


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); raises ConfigError."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--foxglove {text}: give HOST:PORT, e.g. {DEFAULT_ADDRESS}")
    return host, int(port)


def _import_foxglove():
    try:
        import foxglove
    except ImportError:
        raise ConfigError("--foxglove needs the foxglove-sdk package: pip install 'smplstream[robots]'") from None
    return foxglove


class FoxgloveServer:
    """Serves the run's frames to Foxglove clients on ``address`` (``HOST:PORT``; port 0
    picks a free one, see :attr:`port`). ``camera`` is the run's
    :class:`calibration.camera.Camera`. Raises ConfigError when it cannot listen."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, camera, image: bool = True,
                 jpeg_quality: int = rm.JPEG_QUALITY, max_image_width: int = rm.MAX_IMAGE_WIDTH,
                 clock_offset: float | None = None):
        host, port = parse_address(address)
        foxglove = _import_foxglove()
        self.encoder = rm.CdrEncoder("--foxglove")
        self.camera = camera
        self.image = image
        self.jpeg_quality = int(jpeg_quality)
        self.image_size = rm.image_size(camera.width, camera.height, max_image_width)
        self.clock_offset = time.time() - time.monotonic() if clock_offset is None else clock_offset
        self.tracks = rm.TrackSet()
        self.frames = 0
        self._last_static: float | None = None
        # A context of its own: channels and server live and die with this output.
        self._context = foxglove.Context()
        self._channels = {}
        for topic, type_name in rm.TOPICS.items():
            if topic == rm.TOPIC_IMAGE and not image:
                continue
            schema = foxglove.Schema(name=type_name, encoding="ros2msg", data=rm.definition(type_name).encode())
            self._channels[topic] = foxglove.Channel(topic, schema=schema, message_encoding="cdr",
                                                     context=self._context)
        try:
            self.server = foxglove.start_server(name="smplstream", host=host, port=port, context=self._context)
        except Exception as exc:  # the SDK raises RuntimeError for an address in use or not ours
            self._close_channels()
            raise ConfigError(f"--foxglove {address}: cannot listen there: {exc}") from None
        self.host, self.port = host, int(self.server.port)
        log.info("Foxglove: open Foxglove and connect to ws://%s:%d", host, self.port)

    def _log(self, topic: str, message: dict, stamp: int) -> None:
        self._channels[topic].log(self.encoder.encode(rm.TOPICS[topic], message), log_time=stamp)

    def _watched(self, topic: str) -> bool:
        channel = self._channels.get(topic)
        return channel is not None and channel.has_sinks()

    def write(self, frame: Frame) -> None:
        """Send one frame's messages to the subscribed clients."""
        stamp = rm.stamp_ns(frame.capture_time, self.clock_offset)
        self.frames += 1
        now = time.monotonic()
        repeat = self._last_static is None or now - self._last_static >= STATIC_EVERY_SECONDS
        if repeat:
            self._last_static = now
            if self._watched(rm.TOPIC_TF_STATIC):
                self._log(rm.TOPIC_TF_STATIC, rm.static_tf_message(stamp), stamp)
        if self._watched(rm.TOPIC_TF):
            tf = rm.tf_message(frame.persons, stamp)
            if tf["transforms"]:
                self._log(rm.TOPIC_TF, tf, stamp)
        gone = self.tracks.update(frame.persons)  # always: a track that left is deleted once
        if self._watched(rm.TOPIC_SKELETON):
            markers = rm.skeleton_markers(frame.persons, stamp, gone)
            if markers["markers"]:
                self._log(rm.TOPIC_SKELETON, markers, stamp)
        sent_image = self.image and frame.image is not None and self._watched(rm.TOPIC_IMAGE)
        if sent_image:
            jpeg = rm.jpeg_bytes(frame.image, self.image_size, self.jpeg_quality)
            self._log(rm.TOPIC_IMAGE, rm.compressed_image(jpeg, stamp), stamp)
        # With every image (as camera drivers do), else once a second.
        if (sent_image or repeat) and self._watched(rm.TOPIC_CAMERA_INFO):
            self._log(rm.TOPIC_CAMERA_INFO, rm.camera_info(self.camera, self.image_size, stamp), stamp)

    def _close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def close(self) -> None:
        """Stop the server (clients are disconnected)."""
        try:
            self._close_channels()
            self.server.stop()
        except Exception as exc:  # stopping must not hide the run's own outcome
            log.warning("Foxglove: stopping the server: %s", exc)
        log.info("Foxglove: served %d frame(s)", self.frames)

"""``--record DIR --formats mcap``: one MCAP file per run with ROS 2 messages (CDR, standard
types), written with the ``mcap`` and ``mcap-ros2-support`` packages (optional extra
``robots``; no ROS install needed). ``docs/robots.md`` lists the topics and frames.

The file is written as the run goes: chunks of messages (zstd), each chunk on disk and
fsync'd at least every :data:`FLUSH_SECONDS`; closing the run (end, Ctrl-C, SIGTERM, a failed
stage) writes the summary (indexes, statistics). A file whose process was killed has no
summary but every flushed chunk: readers that stream it read them, and ``mcap recover``
(the MCAP command-line tool) rebuilds the summary.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

from . import ros2_messages as rm
from .errors import ConfigError, RecordError
from .frames import Frame

log = logging.getLogger("smplstream.mcap")

FLUSH_SECONDS = 2.0  # at most this much of a killed run is lost, as with the motion files' chunks
CHUNK_BYTES = 1 << 20
INSTALL_HINT = "pip install 'smplstream[robots]'"


def _import_mcap_writer():
    try:
        from mcap.writer import CompressionType, Writer
    except ImportError:
        raise ConfigError(f"--formats mcap needs the mcap and mcap-ros2-support packages: {INSTALL_HINT}") from None
    return Writer, CompressionType


def run_file_name(directory: Path, started: float | None = None) -> Path:
    """``DIR/smplstream-YYYYMMDD-HHMMSS.mcap`` (local time), with ``-2``, ``-3``... when taken."""
    stem = "smplstream-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(started or time.time()))
    path, n = directory / f"{stem}.mcap", 1
    while path.exists():
        n += 1
        path = directory / f"{stem}-{n}.mcap"
    return path


class McapRecorder:
    """Writes a run's frames to one ``.mcap`` in ``directory``: ``/tf`` and
    ``/smplstream/skeleton`` every frame with people, ``/tf_static`` once,
    ``/camera/camera_info`` once (every frame with ``video``), and with ``video`` the frames
    as JPEG on ``/camera/image/compressed``. ``camera`` is the run's
    :class:`calibration.camera.Camera`; stamps are capture times on the Unix epoch clock.
    Raises ConfigError when the file cannot be created."""

    def __init__(self, directory, *, camera, video: bool = False, jpeg_quality: int = rm.JPEG_QUALITY,
                 max_image_width: int = rm.MAX_IMAGE_WIDTH, metadata: dict[str, str] | None = None,
                 clock_offset: float | None = None):
        Writer, CompressionType = _import_mcap_writer()
        self.encoder = rm.CdrEncoder("--formats mcap")
        self.camera = camera
        self.video = video
        self.jpeg_quality = int(jpeg_quality)
        self.image_size = rm.image_size(camera.width, camera.height, max_image_width)
        # One offset for the run: stamps keep the monotonic clock's order and spacing.
        self.clock_offset = time.time() - time.monotonic() if clock_offset is None else clock_offset
        self.tracks = rm.TrackSet()
        self.frames = self.messages = 0
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = run_file_name(directory)
            self._file = open(self.path, "xb")
        except OSError as exc:
            raise ConfigError(f"--record {directory}: cannot create the MCAP file: {exc.strerror or exc}") from None
        self._writer = Writer(self._file, chunk_size=CHUNK_BYTES, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="smplstream (mcap, mcap-ros2-support)")
        self._channels: dict[str, int] = {}
        for type_name in dict.fromkeys(rm.TOPICS.values()):
            schema = self._writer.register_schema(type_name, "ros2msg", rm.definition(type_name).encode())
            for topic in (t for t, n in rm.TOPICS.items() if n == type_name):
                if topic != rm.TOPIC_IMAGE or video:
                    self._channels[topic] = self._writer.register_channel(topic, "cdr", schema)
        self._writer.add_metadata("smplstream", {"frames": "camera: optical (x right, y down, z forward); "
                                                           "person_<id>/<smpl joint>", **(metadata or {})})
        self._last_flush = time.monotonic()
        self._closed = False
        log.info("recording ROS 2 messages to %s", self.path)

    def _add(self, topic: str, message: dict, stamp: int) -> None:
        data = self.encoder.encode(rm.TOPICS[topic], message)
        self._writer.add_message(self._channels[topic], log_time=stamp, publish_time=stamp, data=data,
                                 sequence=self.messages)
        self.messages += 1

    def write(self, frame: Frame) -> None:
        """Add one frame's messages."""
        stamp = rm.stamp_ns(frame.capture_time, self.clock_offset)
        try:
            if self.frames == 0:
                self._add(rm.TOPIC_TF_STATIC, rm.static_tf_message(stamp), stamp)
            for topic, message in rm.frame_messages(frame.persons, stamp, self.tracks):
                self._add(topic, message, stamp)
            if self.video and frame.image is not None:
                jpeg = rm.jpeg_bytes(frame.image, self.image_size, self.jpeg_quality)
                self._add(rm.TOPIC_IMAGE, rm.compressed_image(jpeg, stamp), stamp)
            if self.frames == 0 or (self.video and frame.image is not None):
                self._add(rm.TOPIC_CAMERA_INFO, rm.camera_info(self.camera, self.image_size, stamp), stamp)
            self.frames += 1
            if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self.flush()
        except OSError as exc:
            raise RecordError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def flush(self) -> None:
        """Write the chunk in progress and fsync: a killed run keeps everything up to here."""
        self._writer.flush()
        os.fsync(self._file.fileno())
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the file: the last chunk, then the summary (indexes and statistics)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("could not finish %s: %s", self.path, exc.strerror or exc)
        finally:
            self._file.close()
        log.info("%d frame(s), %d message(s) in %s", self.frames, self.messages, self.path)


#: An MCAP file unchanged this long is no longer being written (a live one is flushed every
#: couple of seconds), so `smplstream recover` may complete it.
IDLE_SECONDS = 10.0


def mcap_is_complete(path) -> bool:
    """Whether the MCAP file at ``path`` ends with its summary (closed by its writer)."""
    from mcap.exceptions import McapError
    from mcap.reader import SeekingReader

    try:
        with open(path, "rb") as f:
            return SeekingReader(f).get_summary() is not None
    except (McapError, OSError, ValueError, EOFError, struct.error):
        return False


def recover_mcap_files(directory, idle_seconds: float = IDLE_SECONDS) -> list[tuple[Path, int]]:
    """Complete every ``.mcap`` in ``directory`` that a killed run left without its summary
    (:func:`recover_mcap`), leaving alone files written to within ``idle_seconds`` (a run
    may still be writing them). Returns (file, messages kept) per file recovered."""
    done = []
    for path in sorted(Path(directory).glob("*.mcap")):
        if time.time() - path.stat().st_mtime < idle_seconds or mcap_is_complete(path):
            continue
        done.append((path, recover_mcap(path)))
    return done


def recover_mcap(path) -> int:
    """Make a run's ``.mcap`` whose process was killed (no summary; maybe a half-written
    last chunk) complete again: every whole chunk is copied, in order, into a new file with
    a summary, which then replaces ``path``. Returns the number of messages kept. (The MCAP
    command-line tool's ``mcap recover`` does the same.)"""
    from mcap.exceptions import McapError
    from mcap.reader import NonSeekingReader

    Writer, CompressionType = _import_mcap_writer()
    path = Path(path)
    tmp = path.with_name(path.name + ".recovering")
    kept = 0
    with open(path, "rb") as src:
        header = NonSeekingReader(src).get_header()  # a non-seeking reader answers one query
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        reader = NonSeekingReader(src)
        writer = Writer(dst, chunk_size=CHUNK_BYTES, compression=CompressionType.ZSTD)
        writer.start(profile=header.profile, library=header.library)
        schemas: dict[int, int] = {}
        channels: dict[int, int] = {}
        try:
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                if schema is not None and schema.id not in schemas:
                    schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                if channel.id not in channels:
                    channels[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                   schemas.get(channel.schema_id, 0), channel.metadata)
                writer.add_message(channels[channel.id], log_time=message.log_time, data=message.data,
                                   publish_time=message.publish_time, sequence=message.sequence)
                kept += 1
        except McapError:
            pass  # the end of what was written: a file without summary, or a chunk cut short
        writer.finish()
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return kept

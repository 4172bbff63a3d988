"""Frame sources (the grabber): video files and network streams through PyAV, local cameras
through OpenCV, and folders of images. :func:`open_source` picks one from a string.

Every source yields :class:`~streamer.frames.Frame` s (RGB ``uint8``) with a frame index,
the monotonic capture time and the source size. Opening problems raise
:class:`~streamer.errors.SourceError` with one line naming the source and the likely fix.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import av
import cv2
import numpy as np

from .errors import SourceError
from .frames import Frame
from .security import redact_url

log = logging.getLogger("smplstream.source")

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "tcp", "udp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class VideoFileSource:
    """A video file decoded by PyAV, frame by frame.

    ``realtime=True`` paces frames at the file's own rate, as a camera would deliver them
    (used in live mode, so a file behaves like a live feed and slow stages drop frames).
    A packet that fails to decode is skipped with a warning naming the frame number.
    """

    is_live = False

    def __init__(self, path: str | os.PathLike, *, realtime: bool = False):
        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.decode_errors = 0
        if not self.path.exists():
            raise SourceError(f"{self.name}: no such file (check the path)")
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise SourceError(f"{self.name}: the file is empty (0 bytes); was the recording finished?")
        self._container = _open_container(self.name, self.name, timeout=None)
        self._stream = _video_stream(self._container, self.name)
        self.size = (self._stream.codec_context.width, self._stream.codec_context.height)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.frame_count = self._stream.frames or None

    def frames(self) -> Iterator[Frame]:
        index = 0
        start_wall = None
        start_pts = None
        previous = None
        for frame in _decode(self._container, self._stream, self):
            t = frame.time
            if self.fps and t is not None and previous is not None and t - previous > 1.5 / self.fps:
                missing = round((t - previous) * self.fps) - 1
                self.decode_errors += 1
                log.warning("%s: about %d frame(s) missing after frame %d (%.2f s to %.2f s): damaged data?",
                            self.name, missing, index - 1, previous, t)
            previous = t if t is not None else previous
            out = _to_frame(frame, index, t, self)
            if self.realtime and t is not None:
                # Decoded and converted ahead, then handed on at its due time and stamped
                # with it, as a camera's frame: a late decode counts as latency, not hidden.
                if start_wall is None:
                    start_wall, start_pts = time.monotonic(), t
                due = start_wall + (t - start_pts)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                out.capture_time = due
            yield out
            index += 1
        if self.frame_count and index < self.frame_count:
            log.warning("%s: decoded %d of the %d frames the file announces (truncated or damaged?)",
                        self.name, index, self.frame_count)

    @property
    def paced(self) -> bool:
        """Whether frames are decoded ahead of a clock and stamped with their due time (a
        file played like a camera): the pipeline may then run the decoding at a lower
        priority (``RunPlan.decoder_nice``) without hiding its delays."""
        return self.realtime

    def close(self) -> None:
        self._container.close()


class LoopingVideoSource:
    """A video file played again and again at its own rate, like a camera that never stops
    (soak tests and benchmarks). Frame indices and stream times keep counting across loops;
    the file is reopened at each loop, so nothing accumulates. ``max_seconds`` ends it."""

    is_live = True
    paced = True  # as VideoFileSource.paced

    def __init__(self, path: str | os.PathLike, *, max_seconds: float | None = None):
        self.path = Path(path)
        self.name = f"{path} (looping)"
        self.max_seconds = max_seconds
        self.decode_errors = 0
        self.loops = 0
        probe = VideoFileSource(path)
        self.size, self.fps = probe.size, probe.fps or 30.0
        probe.close()

    def frames(self) -> Iterator[Frame]:
        index = 0
        start = time.monotonic()
        while True:
            source = VideoFileSource(self.path)
            try:
                for frame in source.frames():
                    due = start + index / self.fps
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if self.max_seconds is not None and time.monotonic() - start >= self.max_seconds:
                        return
                    frame.index, frame.stream_time = index, index / self.fps
                    frame.capture_time = due  # as VideoFileSource's paced frames
                    yield frame
                    index += 1
            finally:
                self.decode_errors += source.decode_errors
                source.close()
            self.loops += 1

    def close(self) -> None:
        pass


class NetworkStreamSource:
    """A network stream (RTSP, HTTP(S), SRT, TCP, UDP, RTMP) read by PyAV.

    When the stream drops it is reopened with exponential backoff (0.5 s doubling to 8 s);
    reconnects and the frames missed during the gap are counted and logged. After
    ``max_retries`` failed attempts in a row the stream ends.

    Frame indices and stream times follow the clock across a gap, as a camera's would: the
    first frame after a reconnect gets the index and time it would have had if the stream had
    never stopped (the server's own timestamps restart with each connection). Motion files
    therefore keep true timing, and the tracker sees how long the people went unseen.
    """

    is_live = True

    def __init__(self, url: str, *, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 max_retries: int = 10):
        self.url = url  # used only to open the stream: it may hold credentials
        self.name = redact_url(url)  # what is shown and stored (streamer.security)
        self.timeout = (open_timeout, read_timeout)
        self.max_retries = max_retries
        self.reconnects = 0
        self.decode_errors = 0
        self.gap_seconds = 0.0
        self.frames_missed = 0  # estimated from the gaps' durations and the frame rate
        self._container = _open_container(url, self.name, timeout=self.timeout, options=self._options())
        self._stream = _video_stream(self._container, self.name)
        self.size = (self._stream.codec_context.width, self._stream.codec_context.height)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None

    def _options(self) -> dict[str, str]:
        # Probe half a second of stream, not FFmpeg's default five: every (re)connect waits
        # for the probe, and a live stream's frames are late by it.
        options = {"analyzeduration": "500000"}
        scheme = urlparse(self.url).scheme
        if scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = "tcp"
        return options

    def frames(self) -> Iterator[Frame]:
        index = 0
        last_time = last_wall = None  # the previous frame's stream time and monotonic arrival
        while True:
            offset = None  # maps this connection's timestamps onto the run's clock
            try:
                for frame in _decode(self._container, self._stream, self):
                    now = time.monotonic()
                    t = frame.time
                    if offset is None:
                        if last_wall is None:  # first connection: the stream's own clock
                            offset = 0.0
                        else:  # after a reconnect: continue the clock over the gap
                            # The gap ends when the connection that worked was opened: what
                            # arrives from then on (probed and buffered while opening) is the
                            # stream going on, not more gap.
                            gap = max(self._connected_at - last_wall, 0.0)
                            self.gap_seconds += gap
                            period = 1.0 / self.fps if self.fps else gap
                            skipped = max(0, round(gap / period) - 1) if self.fps else 0
                            index += skipped
                            self.frames_missed += skipped
                            first = last_time + gap if last_time is not None else None
                            offset = (first - t) if first is not None and t is not None else 0.0
                            log.warning("%s: about %d frame(s) missed during the %.1f s gap; "
                                        "resuming at frame %d", self.name, skipped, gap, index)
                    stream_time = t + offset if t is not None else None
                    yield _to_frame(frame, index, stream_time, self)
                    last_time, last_wall = stream_time, now
                    index += 1
                log.warning("%s: stream ended", self.name)
            except av.error.FFmpegError as exc:
                log.warning("%s: stream dropped after frame %d: %s", self.name, index - 1,
                            str(exc).replace(self.url, self.name))
            if not self._reconnect():
                return

    def _reconnect(self) -> bool:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass
        lost_at = time.monotonic()
        delay = 0.5
        for attempt in range(1, self.max_retries + 1):
            time.sleep(delay)
            self._connected_at = time.monotonic()
            try:
                self._container = _open_container(self.url, self.name, timeout=self.timeout,
                                                  options=self._options())
                self._stream = _video_stream(self._container, self.name)
            except SourceError as exc:
                log.warning("%s: reconnect attempt %d/%d failed: %s", self.name, attempt,
                            self.max_retries, exc)
                delay = min(delay * 2, 8.0)
                continue
            self.reconnects += 1
            log.warning("%s: reconnected after %.1f s (reconnect #%d)", self.name,
                        self._connected_at - lost_at, self.reconnects)
            return True
        log.error("%s: gave up after %d reconnect attempts", self.name, self.max_retries)
        return False

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001
            pass


class CameraSource:
    """A local camera (index or ``/dev/videoN``) read through OpenCV's V4L2 backend.

    Width, height and fps are requests: the camera may choose the nearest mode it has; the
    mode it actually delivers is logged and used. A camera that stops delivering frames
    ends the stream with an error (the pipeline then flushes its outputs).
    """

    is_live = True

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, capture=None):
        """``capture``: an already opened ``cv2.VideoCapture``-like object to read instead of
        opening ``device`` (another backend, or a test's stand-in)."""
        self.device = device
        self.name = f"camera {device}"
        if capture is None:
            path = f"/dev/video{device}" if isinstance(device, int) else str(device)
            if os.name == "posix" and Path("/dev").exists() and not Path(path).exists():
                raise SourceError(
                    f"{self.name}: no such device {path} (list cameras with `v4l2-ctl --list-devices` "
                    "or `ls /dev/video*`; is it plugged in?)")
            _quiet_opencv()
            backend = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
            capture = cv2.VideoCapture(device if isinstance(device, int) else path, backend)
        self._cap = capture
        if not self._cap.isOpened():
            raise SourceError(
                f"{self.name}: could not be opened (is another program using it? do you have "
                "permission, e.g. membership of the 'video' group?)")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"{self.name}: opened but delivered no frame (is it a capture device?)")
        self._first = first
        self.size = (first.shape[1], first.shape[0])
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        log.info("%s: %dx%d at %s fps", self.name, self.size[0], self.size[1], self.fps)

    def frames(self) -> Iterator[Frame]:
        index = 0
        image = self._first
        while True:
            if image is None:
                ok, image = self._cap.read()
                if not ok or image is None:
                    raise SourceError(
                        f"{self.name}: stopped delivering frames after frame {index - 1} "
                        "(unplugged or taken by another program?)")
            now = time.monotonic()
            rgb = fit_size(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), index, self)
            yield Frame(index=index, image=rgb, capture_time=now, source_size=self.size)
            index += 1
            image = None

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource:
    """The images of a folder in natural name order (``img2.png`` before ``img10.png``).

    ``fps`` gives the frames their stream timestamps (default 30). An image that cannot be
    read is skipped with a warning naming it and its frame number.
    """

    is_live = False

    def __init__(self, folder: str | os.PathLike, *, fps: float | None = None):
        self.folder = Path(folder)
        self.name = str(folder)
        self.fps = fps or 30.0
        self.decode_errors = 0
        self.files = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: _natural_key(p.name))
        if not self.files:
            raise SourceError(
                f"{self.name}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
        # IMREAD_COLOR gives 8-bit BGR from grey, 16-bit and alpha images alike.
        first = next((image for image in map(_read_image, self.files[:50]) if image is not None), None)
        if first is None:
            raise SourceError(f"{self.name}: none of the first {min(50, len(self.files))} images is readable "
                              f"(first: {self.files[0].name})")
        self.size = (first.shape[1], first.shape[0])
        self.frame_count = len(self.files)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            image = _read_image(path)
            if image is None:
                self.decode_errors += 1
                log.warning("%s: frame %d (%s) is not a readable image; skipped", self.name, index,
                            path.name)
                continue
            rgb = fit_size(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), index, self)
            yield Frame(index=index, image=rgb, capture_time=time.monotonic(),
                        source_size=self.size, stream_time=index / self.fps)

    def close(self) -> None:
        pass


Source = VideoFileSource | LoopingVideoSource | NetworkStreamSource | CameraSource | ImageFolderSource


def open_source(spec: str, *, live: bool | None = None, width: int | None = None,
                height: int | None = None, fps: float | None = None) -> Source:
    """Open the source named by ``spec``.

    - a number (``0``) or ``/dev/videoN``: a local camera;
    - ``rtsp://``, ``http(s)://``, ``srt://``, ``tcp://``, ``udp://``, ``rtmp://``: a network stream;
    - a folder: its images in name order;
    - anything else: a video file. In live mode (``live=True``) a file is paced at its
      own frame rate, like a camera.
    """
    spec = str(spec)
    if re.fullmatch(r"\d+", spec):
        return CameraSource(int(spec), width=width, height=height, fps=fps)
    if spec.startswith("/dev/video"):
        return CameraSource(spec, width=width, height=height, fps=fps)
    scheme = urlparse(spec).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        return NetworkStreamSource(spec)
    if scheme and len(scheme) > 1 and "://" in spec:
        raise SourceError(f"{redact_url(spec)}: unsupported scheme '{scheme}://' (use one of "
                          f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}, a file, a folder or a camera index)")
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps)
    return VideoFileSource(path, realtime=bool(live))


def _open_container(target: str, name: str, *, timeout, options: dict[str, str] | None = None):
    try:
        return av.open(target, mode="r", timeout=timeout, options=options or {})
    except FileNotFoundError:
        raise SourceError(f"{name}: no such file (check the path)") from None
    except PermissionError:
        raise SourceError(f"{name}: permission denied (check the file's permissions)") from None
    except av.error.ExitError:
        raise SourceError(f"{name}: timed out waiting for data (is the stream live and the URL "
                          "right?)") from None
    except av.error.FFmpegError as exc:
        # FFmpeg's message may quote the URL it was given: only the shown name goes out.
        reason = (getattr(exc, "strerror", None) or str(exc)).replace(target, name)
        if "://" in name:
            raise SourceError(f"{name}: could not open stream: {reason} (is the server running and "
                              "the URL right?)") from None
        hint = "is it a video file FFmpeg can decode?"
        if Path(name).suffix.lower() in (".mp4", ".mov", ".m4v"):
            hint += (" an MP4/MOV whose recording was interrupted lacks its index (moov atom) and "
                     "cannot be read; record to .mkv or .ts, or with -movflags +faststart, to avoid this")
        raise SourceError(f"{name}: not a readable video: {reason} ({hint})") from None


def _video_stream(container, name: str):
    if not container.streams.video:
        container.close()
        raise SourceError(f"{name}: has no video stream (is it a video file?)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _decode(container, stream, owner) -> Iterator[av.VideoFrame]:
    """Decode packet by packet so corrupt data costs the frames it holds, not the run.
    A run of undecodable packets is reported once, with the frame number where it began."""
    decoded = 0
    bad_run = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:
            owner.decode_errors += 1
            if bad_run == 0:
                log.warning("%s: undecodable data after frame %d (%s); skipping it", owner.name,
                            decoded - 1, str(exc).split(":")[0])
            bad_run += 1
            continue
        if frames:
            bad_run = 0
        for frame in frames:
            decoded += 1
            yield frame


def fit_size(rgb: np.ndarray, index: int, source) -> np.ndarray:
    """``rgb`` at ``source.size``: a frame whose size differs (the resolution changed
    mid-stream, a folder of mixed image sizes, a reconnect to another mode) is scaled to the
    size the run started with, so the camera intrinsics, preview, motion files and wire
    header stay consistent. Each new size is reported once with its first frame number;
    ``source.resized_frames`` counts the frames scaled."""
    width, height = source.size
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    seen = source.__dict__.setdefault("_sizes_reported", set())
    if (rgb.shape[1], rgb.shape[0]) not in seen:
        seen.add((rgb.shape[1], rgb.shape[0]))
        log.warning("%s: frame %d is %dx%d, not %dx%d (resolution changed mid-stream); frames of this "
                    "size are scaled to %dx%d", source.name, index, rgb.shape[1], rgb.shape[0], width,
                    height, width, height)
    source.resized_frames = getattr(source, "resized_frames", 0) + 1
    shrink = rgb.shape[1] > width or rgb.shape[0] > height
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _to_frame(frame: av.VideoFrame, index: int, stream_time: float | None, source) -> Frame:
    now = time.monotonic()
    # rgb24 from any pixel format (grey, 10/16-bit, alpha): FFmpeg's swscale converts and
    # scales the depth down to 8 bits per channel.
    rgb = fit_size(frame.to_ndarray(format="rgb24"), index, source)
    return Frame(index=index, image=rgb, capture_time=now, source_size=source.size,
                 stream_time=stream_time)


def _read_image(path: Path) -> np.ndarray | None:
    """8-bit BGR image, or None when the file is not a readable image (OpenCV may also raise
    on some damaged files; that counts as unreadable)."""
    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _quiet_opencv() -> None:
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # older builds without the logging module
        pass


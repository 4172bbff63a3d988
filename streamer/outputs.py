"""The last stage: publish each frame over ZeroMQ, add it to the motion files and the preview
video, advance the progress bar. One stage, so a frame that was published is also recorded
(no queue between them could drop it)."""

from __future__ import annotations

import logging
from typing import Sequence

from .frames import Frame
from .graph import Stage
from .motion_files import MotionRecorder
from .preview import PreviewWriter
from .publisher import ZmqPublisher

log = logging.getLogger("smplstream.publish")


class OutputStage(Stage):
    """Publishes and records frames. ``wait_subscribers`` holds the first frame until that
    many subscribers have joined the publisher (the source waits behind it)."""

    name = "publish"

    def __init__(self, publisher: ZmqPublisher | None = None, recorder: MotionRecorder | None = None,
                 *, preview: PreviewWriter | None = None, wait_subscribers: int = 0, progress=None,
                 viewer=None, outputs: Sequence = ()):
        self.publisher = publisher
        self.viewer = viewer  # a streamer.viewer.RerunViewer, or None
        # More outputs, each with write(frame) and close(): the MCAP file, the Foxglove server, the VMC sender.
        self.outputs = tuple(outputs)
        self.recorder = recorder
        self.preview = preview
        self.wait_subscribers = wait_subscribers
        self.progress = progress

    def start(self) -> None:
        if self.publisher is not None and self.wait_subscribers > 0:
            self.publisher.wait_for_subscribers(self.wait_subscribers, self.stop_event)

    def process(self, frame: Frame) -> Frame:
        if self.publisher is not None:
            self.publisher.publish(frame)
        if self.recorder is not None:
            self.recorder.write(frame)
        if self.preview is not None:
            self.preview.write(frame)
        if self.viewer is not None:
            self.viewer.write(frame)
        for output in self.outputs:
            output.write(frame)
        if self.progress is not None:
            self.progress.update(1)
        frame.image = None  # the pixels are no longer needed; free them early
        return frame

    def close(self) -> None:
        try:
            if self.recorder is not None:
                self.recorder.close()
        finally:
            if self.preview is not None:
                self.preview.close()
            if self.viewer is not None:
                self.viewer.close()
            for output in self.outputs:
                try:
                    output.close()
                except Exception as exc:  # one output failing to close must not keep the others open
                    log.error("closing %s: %s", type(output).__name__, exc)
            if self.publisher is not None:
                self.publisher.close()
            if self.progress is not None:
                self.progress.close()

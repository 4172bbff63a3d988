"""The run's outputs for ROS 2 tools (``docs/robots.md``): the MCAP file of ``--record DIR
--formats mcap`` and the Foxglove server of ``--foxglove``, opened from the run's options."""

from __future__ import annotations

import time

from .errors import ConfigError


def open_robot_outputs(config, camera, *, source_name: str, body_model: str) -> list:
    """The outputs ``config`` (a :class:`streamer.app.RunConfig`) asks for, opened: a
    :class:`~streamer.mcap_output.McapRecorder` and/or a
    :class:`~streamer.foxglove_output.FoxgloveServer`. Raises ConfigError (with nothing
    left open) for a bad option, a missing package or an address or folder it cannot use."""
    from .motion_formats import parse_formats

    mcap = bool(config.record) and "mcap" in parse_formats(config.formats)
    if config.mcap_video and not mcap:
        raise ConfigError("--mcap-video needs --record DIR --formats ...,mcap")
    opened: list = []
    clock_offset = time.time() - time.monotonic()  # one for both: the file and the live view carry the same stamps
    try:
        if config.foxglove:
            from .foxglove_output import FoxgloveServer

            opened.append(FoxgloveServer(config.foxglove, camera=camera, clock_offset=clock_offset))
        if mcap:
            from .mcap_output import McapRecorder

            opened.append(McapRecorder(config.record, camera=camera, video=config.mcap_video,
                                       metadata={"source": str(source_name), "body_model": str(body_model)},
                                       clock_offset=clock_offset))
    except BaseException:
        for output in opened:
            output.close()
        raise
    return opened

"""The run's outputs for ROS 2 tools (``docs/robots.md``): the MCAP file of ``--record DIR
--formats mcap`` and the Foxglove server of ``--foxglove``, opened from the run's options."""

from __future__ import annotations

import time

from .errors import ConfigError

_PACKAGES = {"mcap": "mcap", "mcap_ros2": "mcap-ros2-support", "foxglove": "foxglove-sdk"}  # module -> PyPI name


def _wants_mcap(config) -> bool:
    from .motion_formats import parse_formats

    return bool(config.record) and "mcap" in parse_formats(config.formats)


def check_robot_options(config) -> None:
    """Fail early, before the models load, on a bad ``--foxglove`` address, ``--mcap-video``
    without ``--formats mcap``, or a package the options need that is not installed.
    Raises ConfigError."""
    from importlib.util import find_spec

    mcap = _wants_mcap(config)
    if config.mcap_video and not mcap:
        raise ConfigError("--mcap-video needs --record DIR --formats ...,mcap")
    if config.foxglove:
        from .foxglove_output import parse_address

        parse_address(config.foxglove)
    needed = (["mcap", "mcap_ros2"] if mcap or config.foxglove else []) + (["foxglove"] if config.foxglove else [])
    missing = [_PACKAGES[name] for name in needed if find_spec(name) is None]
    if missing:
        option = "--foxglove" if config.foxglove else "--formats mcap"
        raise ConfigError(f"{option} needs {', '.join(missing)}: pip install 'smplstream[robots]'")


def open_robot_outputs(config, camera, *, source_name: str, body_model: str) -> list:
    """The outputs ``config`` (a :class:`streamer.app.RunConfig`) asks for, opened: a
    :class:`~streamer.mcap_output.McapRecorder` and/or a
    :class:`~streamer.foxglove_output.FoxgloveServer`. Raises ConfigError (with nothing
    left open) for a bad option, a missing package or an address or folder it cannot use."""
    check_robot_options(config)
    mcap = _wants_mcap(config)
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

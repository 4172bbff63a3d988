import socket
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CLIP = DATA / "sports2d_demo.mp4"  # 230 frames, 30 fps, 1768x994 (BSD-3, see data/README.md)
CLIP_FRAMES = 230


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """Compiled and quantised engines (live runs make the int8 denoiser) go to a folder of
    the test session, not the user's ~/.cache."""
    import os

    if "SMPLSTREAM_CACHE" not in os.environ:
        os.environ["SMPLSTREAM_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield


def free_tcp_endpoint() -> str:
    """A loopback endpoint on a port nobody is listening on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def endpoint() -> str:
    return free_tcp_endpoint()


@pytest.fixture
def clip() -> Path:
    return CLIP


@pytest.fixture(scope="session")
def frame120():
    """Frame 120 of the clip as RGB (both people in view)."""
    import av

    with av.open(str(CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 120:
                return f.to_ndarray(format="rgb24")
    raise AssertionError("clip too short")

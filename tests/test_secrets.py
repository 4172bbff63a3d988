"""Credentials in a source URL never leave the process: a live run of the real clip from a
local stream server, opened with a user, a password and a token in its URL, leaves none of
them in stdout, stderr, the published messages, --stats-json or any recorded file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq

from conftest import CLIP, free_tcp_endpoint
from streamer.security import Redactor, redact_url

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).parent
SECRETS = (b"alice", b"S3cretPass", b"T0kenXYZ", b"k3yABC")


@pytest.mark.parametrize("url, shown", [
    ("rtsp://alice:S3cretPass@cam.local:554/live?channel=2&token=T0kenXYZ",
     "rtsp://***@cam.local:554/live?channel=2&token=***"),
    ("http://cam/mjpg?user=bob&Password=pw123&api_key=k3yABC", "http://cam/mjpg?user=bob&Password=***&api_key=***"),
    ("srt://127.0.0.1:9000?streamid=cam1", "srt://127.0.0.1:9000?streamid=cam1"),
    ("videos/walk.mp4", "videos/walk.mp4"),
])
def test_redact_url_hides_userinfo_and_secret_query_values(url, shown):
    assert redact_url(url) == shown


def test_redactor_cleans_text_with_the_url_or_its_parts():
    url = "rtsp://alice:S3cret%21@cam/live?token=T0kenXYZ"
    redact = Redactor(url)
    text = redact(f"cannot open {url}: password S3cret! refused, token T0kenXYZ")
    assert "S3cret" not in text and "T0kenXYZ" not in text and "alice" not in text
    assert Redactor(None)("nothing to hide") == "nothing to hide"


def _serve_clip(port: int) -> subprocess.Popen:
    # Clip frames 100-129 at 10 fps, 640 px wide, one connection.
    return subprocess.Popen([sys.executable, str(HERE / "stream_server.py"), "clip", str(port), str(CLIP),
                             "640", "10", "100", "130", "1", "130"], stdout=subprocess.DEVNULL)


def _collect(endpoint: str, received: list[bytes], stop: threading.Event) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    try:
        while not stop.is_set():
            if sock.poll(200):
                received.extend(sock.recv_multipart())
    finally:
        sock.close(0)


def test_a_run_with_credentials_in_the_source_url_leaks_none_of_them(tmp_path):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    url = f"tcp://alice:S3cretPass@127.0.0.1:{port}?token=T0kenXYZ&key=k3yABC"
    server = _serve_clip(port)
    endpoint = free_tcp_endpoint()
    received: list[bytes] = []
    stop = threading.Event()
    subscriber = threading.Thread(target=_collect, args=(endpoint, received, stop))
    subscriber.start()
    record, stats = tmp_path / "rec", tmp_path / "stats.json"
    args = ["-v", "run", "--source", url, "--publish", endpoint, "--wait-subscribers", "1", "--max-frames", "12",
            "--record", str(record), "--formats", "npz,bvh,smpl", "--stats-json", str(stats)]
    if importlib.util.find_spec("rerun") is not None:  # the viewer extra
        args += ["--viewer-save", str(tmp_path / "run.rrd")]
    try:
        for _ in range(3):  # the server decodes the clip before it listens
            run = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args], cwd=ROOT,
                                 capture_output=True, timeout=300)
            if b"could not open stream" not in run.stderr:
                break
    finally:
        stop.set()
        subscriber.join(5)
        server.kill()
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert stats in files and list(record.glob("track_*.npz")) and list(record.glob("*.bvh"))
    assert received, "nothing was published"
    # The stream was opened and is shown, redacted, where a source is shown.
    assert f"tcp://***@127.0.0.1:{port}?token=***&key=***".encode() in stats.read_bytes()
    assert any(b"***@127.0.0.1" in part for part in received)  # the wire header's source
    outputs = {"stdout": run.stdout, "stderr": run.stderr, "messages": b"".join(received),
               **{str(p.relative_to(tmp_path)): p.read_bytes() for p in files}}
    leaks = [(where, secret) for where, data in outputs.items() for secret in SECRETS if secret in data]
    assert not leaks


def test_a_refused_connection_names_the_source_without_its_credentials():
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])  # nobody listens there
    run = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "-v", "run", "--source",
                          f"tcp://alice:S3cretPass@127.0.0.1:{port}?token=T0kenXYZ", "--publish", "none"],
                         cwd=ROOT, capture_output=True, timeout=120)
    assert run.returncode == 2
    assert f"tcp://***@127.0.0.1:{port}?token=***".encode() in run.stderr
    assert not [s for s in SECRETS if s in run.stdout + run.stderr]

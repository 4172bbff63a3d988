"""``smplstream batch`` on a real Ray (docs/batch.md): a short cut of the bundled clip,
copied, through a local Ray with two workers, through a separately started head, and with
a worker killed mid-video; the results must equal ``run --mode offline`` on the same file.

Everything Ray starts is on 127.0.0.1, with its session files in a temporary folder, and is
stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import CLIP

# Before Ray is imported: its clusters on this machine listen on the loopback interface only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from streamer.app import RunConfig, run  # noqa: E402
from streamer.batch_inputs import expand_inputs  # noqa: E402

FIRST, FRAMES = 70, 40  # clip frames 70-109
SMPLSTREAM = [str(Path(sys.executable).with_name("smplstream"))]
def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


needs_ray = pytest.mark.skipif(not _has_ray(), reason="Ray is not installed (pip install -e '.[batch]')")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """40 frames of the bundled clip, both people in view, re-encoded with PyAV."""
    path = tmp_path_factory.mktemp("clip") / "cut.mp4"
    with av.open(str(CLIP)) as src:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(FIRST + FRAMES), src.decode(video=0))
                  if i >= FIRST]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.bit_rate = 4_000_000
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def reference(short_clip, tmp_path_factory) -> Path:
    """What ``run --mode offline --record`` writes for the short clip."""
    out = tmp_path_factory.mktemp("reference")
    run(RunConfig(source=str(short_clip), mode="offline", publish=None, record=str(out), progress=False))
    return out


@pytest.fixture
def ray_env(monkeypatch):
    """Ray's session files in a short temporary folder (its socket paths must stay short),
    and a token of this test's own for its cluster."""
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    yield dict(os.environ)
    shutil.rmtree(temp, ignore_errors=True)


def assert_same_as_run(result: Path, reference: Path) -> None:
    """The same track files, frames and ids; poses, translations and joints equal to float
    tolerance."""
    names = sorted(p.name for p in reference.glob("track_*.npz"))
    assert names, "the reference run found nobody"
    assert sorted(p.name for p in result.glob("track_*.npz")) == names
    for name in names:
        a, b = np.load(reference / name), np.load(result / name)
        assert sorted(a.files) == sorted(b.files)
        np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
        for key in ("poses", "trans", "joints", "betas", "keypoints"):
            if key in a.files:
                np.testing.assert_allclose(b[key], a[key], atol=1e-5, err_msg=f"{name}: {key}")


def manifest(out: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len({line["video"] for line in lines}) == len(lines)  # one line per video
    return {line["video"]: line for line in lines}


def batch_cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*SMPLSTREAM, "-q", "batch", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parent.parent)


@needs_ray
def test_three_copies_and_a_corrupt_file_on_two_local_workers_then_a_rerun_skips_them(
        short_clip, reference, ray_env, tmp_path):
    inputs = tmp_path / "videos"
    (inputs / "more").mkdir(parents=True)
    for name in ("one.mp4", "two.mp4", "more/three.mp4"):
        shutil.copy(short_clip, inputs / name)
    (inputs / "broken.mp4").write_bytes(bytes(range(256)) * 64)  # not a video
    out = tmp_path / "out"

    first = batch_cli(str(inputs), "--out", str(out), "--workers", "2", env=ray_env)
    assert first.returncode == 1, first.stderr  # one video failed, the others did not stop
    lines = manifest(out)
    assert sorted(lines) == ["broken", "one", "three", "two"]
    for name in ("one", "two", "three"):
        line = lines[name]
        assert line["status"] == "done" and line["frames"] == FRAMES and line["attempts"] == 1, line
        assert line["tracks"] == len(list(reference.glob("track_????.npz"))) and line["video_fps"] == 30.0 and line["fps"] > 0 and line["wall_s"] > 0
        assert_same_as_run(out / name, reference)
        assert json.loads((out / name / "batch.json").read_text())["key"] == line["key"]
    assert len({lines[n]["worker"] for n in lines}) == 2  # both workers took videos
    broken = lines["broken"]
    assert broken["status"] == "failed" and "not a readable video" in broken["error"]
    assert not (out / "broken").exists()
    assert "broken: failed: " in first.stderr and "frames/s" in first.stderr  # the error and the table
    stamps = {n: (out / n / "batch.json").stat().st_mtime_ns for n in ("one", "two", "three")}

    second = batch_cli(str(inputs), "--out", str(out), "--workers", "2", env=ray_env)
    assert second.returncode == 1, second.stderr
    lines = manifest(out)
    assert all(lines[n]["skipped"] and lines[n]["status"] == "done" for n in ("one", "two", "three"))
    assert {n: (out / n / "batch.json").stat().st_mtime_ns for n in stamps} == stamps  # not written again
    assert lines["broken"]["status"] == "failed" and not lines["broken"]["skipped"]  # tried again
    assert "3 video(s) skipped" in second.stderr

    # Other settings are another key: the same video is done again.
    third = batch_cli(str(inputs / "one.mp4"), "--out", str(out), "--lift-samples", "4", env=ray_env)
    assert third.returncode == 0, third.stderr
    assert not manifest(out)["one"]["skipped"]
    assert list(out.glob(".batch-partial*")) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_on(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (from /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            host, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(host)
    return found


def _stop_session(leader: subprocess.Popen) -> None:
    """Stop ``ray start --block`` and every process of its session (the head's servers and
    workers, all started by this test); not `ray stop`, which stops every Ray on the machine."""
    sid = leader.pid  # the session leader: start_new_session=True
    leader.send_signal(signal.SIGTERM)
    try:
        leader.wait(20)
    except subprocess.TimeoutExpired:
        leader.kill()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # field 6 of stat: the session id
                pids.append(int(stat.parent.name))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids and sig == signal.SIGTERM:
            time.sleep(3)


@needs_ray
def test_batch_joins_a_separately_started_head(short_clip, reference, ray_env, tmp_path):
    port, client_port = _free_port(), _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--ray-client-server-port", str(client_port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", ray_env["RAY_TMPDIR"], "--block"],
        env=ray_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _listening_on(port):
            assert head.poll() is None, head.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        # Loopback only: 127.0.0.1, or its IPv4-mapped IPv6 form.
        assert _listening_on(port) <= {"0100007F", "0000000000000000FFFF00000100007F"}, _listening_on(port)
        shutil.copy(short_clip, tmp_path / "cut.mp4")
        done = batch_cli(str(tmp_path / "cut.mp4"), "--out", str(tmp_path / "out"),
                         "--address", f"127.0.0.1:{port}", env=ray_env)
        assert done.returncode == 0, done.stderr
        line = manifest(tmp_path / "out")["cut"]
        assert line["status"] == "done" and line["frames"] == FRAMES
        assert_same_as_run(tmp_path / "out" / "cut", reference)
    finally:
        _stop_session(head)


@needs_ray
def test_a_worker_killed_mid_video_is_restarted_and_the_video_ends_done_once(
        short_clip, reference, ray_env, tmp_path):
    from streamer.batch import BatchConfig, run_batch

    killed: list[int] = []

    def kill_once(snapshot: dict) -> None:
        state = snapshot.get("cut", {})
        if not killed and state.get("attempts") == 1 and state.get("frames", 0) >= 3:
            killed.append(state["pid"])
            os.kill(state["pid"], signal.SIGKILL)  # the worker process, mid-video

    shutil.copy(short_clip, tmp_path / "cut.mp4")
    out = tmp_path / "out"
    report = run_batch(BatchConfig(inputs=[str(tmp_path / "cut.mp4")], out=str(out), run=RunConfig(source=""),
                                   workers=1, retries=2, progress=False, on_progress=kill_once))
    assert killed, "the video finished before the worker could be killed"
    [result] = report.results
    assert result.status == "done" and result.attempts == 2 and result.frames == FRAMES
    assert result.worker != f"127.0.0.1:{killed[0]}"  # finished by the restarted process
    line = manifest(out)["cut"]
    assert line["status"] == "done" and line["attempts"] == 2
    assert_same_as_run(out / "cut", reference)
    assert sorted(p.name for p in out.iterdir()) == ["cut", "manifest.jsonl"]  # nothing half-written left


def test_batch_without_ray_says_how_to_install_it(monkeypatch, short_clip, tmp_path, capsys):
    from streamer.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["batch", str(short_clip), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'smplstream[batch]'" in capsys.readouterr().err


def test_inputs_expand_folders_globs_and_lists_with_unique_names(tmp_path, capsys):
    from streamer.cli import main

    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for path in ("a/walk.mp4", "a/deep/run.MOV", "a/notes.md", "b/walk.mp4", "b/jump.mkv"):
        (tmp_path / path).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# two of them\nb/walk.mp4\n\nrtsp://cam.local/live/stream1\nb/*.mkv\n")
    videos = expand_inputs([str(tmp_path / "a"), str(tmp_path / "list.txt"), str(tmp_path / "a" / "walk.mp4")])
    assert [Path(v.source).name for v in videos] == ["run.MOV", "walk.mp4", "walk.mp4", "stream1", "jump.mkv"]
    names = [v.name for v in videos]
    assert names[0] == "run" and names[3] == "stream1" and names[4] == "jump"
    assert names[1].startswith("walk-") and names[2].startswith("walk-") and names[1] != names[2]
    assert main(["batch", str(tmp_path / "missing*.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "the pattern matches no file" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("b/walk.mp4\nnowhere.mp4\n")
    assert main(["batch", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere.mp4: no such file, folder or URL (line 2 of" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err

"""The command line as a user meets it: errors are one clear line and a non-zero exit;
Ctrl-C and SIGTERM leave complete, loadable motion files; subscribe prints frames."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]


def smplstream(*args, timeout=60):
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("smplstream: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_missing_file(tmp_path):
    proc = smplstream("run", "--source", str(tmp_path / "nope.mp4"), "--publish", "none")
    assert_one_line_error(proc, "nope.mp4", "no such file")


def test_bad_camera_index():
    proc = smplstream("run", "--source", "57", "--publish", "none")
    assert_one_line_error(proc, "camera 57", "/dev/video57")


def test_port_already_in_use(clip, endpoint):
    blocker = zmq.Context.instance().socket(zmq.PUB)
    blocker.bind(endpoint)
    try:
        proc = smplstream("run", "--source", str(clip), "--publish", endpoint, "--max-frames", "3")
    finally:
        blocker.close(0)
    assert_one_line_error(proc, endpoint, "already in use", "--publish")


def test_unwritable_record_directory(clip, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # root ignores permissions; a file as parent never works
    proc = smplstream("run", "--source", str(clip), "--publish", "none", "--record",
                      str(blocker / "rec"), "--max-frames", "3")
    assert_one_line_error(proc, "cannot record", "a-file")


def test_malformed_camera_file_names_the_field(clip, tmp_path):
    cam = tmp_path / "cam.yaml"
    cam.write_text("%YAML:1.0\n---\nmodel: pinhole\nimage_width: 640\n")
    proc = smplstream("run", "--source", str(clip), "--publish", "none", "--camera", str(cam))
    assert_one_line_error(proc, "cam.yaml", "image_height")


def test_calibrate_is_a_subcommand():
    proc = smplstream("calibrate", "--help")
    assert proc.returncode == 0 and "--board COLSxROWS" in proc.stdout


def test_not_a_video(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(os.urandom(4096))
    proc = smplstream("run", "--source", str(bad), "--publish", "none")
    assert_one_line_error(proc, "garbage.mp4")


def test_stats_json_and_subscribe_command(clip, endpoint, tmp_path):
    sub = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "subscribe", endpoint,
                            "--count", "20", "--json", "--timeout", "30"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats = tmp_path / "stats.json"
    proc = smplstream("run", "--source", str(clip), "--publish", endpoint, "--wait-subscribers", "1",
                      "--max-frames", "20", "--stats-json", str(stats), "--no-perception")
    out, err = sub.communicate(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "frames out" in proc.stderr and "ms a frame" in proc.stderr  # the offline table at the end
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(20))
    assert all(line["persons"] == [] and line["latency_ms"] >= 0 for line in lines)
    assert "received 20 frame(s), 0 gap(s)" in err
    summary = json.loads(stats.read_text())
    assert summary["frames"] == 20 and summary["drops_total"] == 0
    assert set(summary["stages"]) == {"grab", "publish"}
    assert summary["glass_to_publish_ms"]["p99"] > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_complete_loadable_motion_files(clip, endpoint, tmp_path, signum):
    record = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "synthetic.py"), str(clip),
                             str(record), endpoint, "3"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Wait until the first periodic flush has happened (a chunk on disk; the final files are
    # assembled at the end), then interrupt mid-run.
    deadline = time.monotonic() + 30
    while not list(record.glob(".smplstream-run-*/*.npz")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert f"stopped_by={signal.Signals(signum).name}" in out, err
    frames_out = int(out.split("frames=")[1].split()[0])
    assert 0 < frames_out < 230  # really interrupted mid-run
    assert "frames out" in err  # the final stats table was printed
    files = sorted(record.glob("*.npz"))
    assert [f.name for f in files] == [f"track_000{i}{s}.npz" for i in (1, 2, 3)
                                        for s in ("", "_blazepose33")]
    assert not list(record.glob(".*tmp"))  # no temporary leftovers
    for f in files:
        with np.load(f, allow_pickle=False) as data:  # loadable without pickle
            n = len(data["frame_index"])
            assert n == frames_out  # every frame that went out is in the file
            if "poses" in data:
                assert data["poses"].shape == (n, 72) and np.isfinite(data["poses"]).all()


def test_failing_stage_leaves_complete_motion_files_and_the_stats_table(clip, endpoint, tmp_path):
    record = tmp_path / "rec"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "synthetic.py"), str(clip), str(record),
                           endpoint, "2", "40"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "stage 'lift' failed: RuntimeError: synthetic failure at frame 40" in proc.stderr
    assert "frames out" in proc.stderr  # the final table still printed
    for f in sorted(record.glob("*.npz")):
        with np.load(f, allow_pickle=False) as data:
            np.testing.assert_array_equal(data["frame_index"], np.arange(40))


def test_first_live_run_says_three_lines_before_it_runs(clip, tmp_path):
    """A fresh engine cache (the int8 denoiser is built on this run): the camera note, the
    one line about building int8 weights, and the run's start; no library chatter."""
    env = {**os.environ, "SMPLSTREAM_CACHE": str(tmp_path / "fresh-cache")}
    run = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "run_stream.py"), "run",
                          "--source", str(clip), "--mode", "live", "--publish", "none", "--max-frames", "3"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "running" in line and "in live mode" in line)
    assert start + 1 <= 3, lines[: start + 1]
    assert any("building int8 weights" in line for line in lines[:start])
    assert not [line for line in lines if " root: " in line]

"""The C subscriber of examples/c_subscriber: built with the system C compiler and libzmq,
run against a live publisher (the project's ZmqPublisher); it must print every frame's track
ids and root positions and drop malformed messages without crashing.

Skips only when there is no C compiler or no libzmq headers (Debian: apt-get install
libzmq3-dev)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.frames import Frame, Person
from streamer.publisher import ZmqPublisher
from streamer.wire import TOPIC, encode_frame

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "c_subscriber" / "smplstream_sub.c"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def subscriber_binary(tmp_path_factory) -> Path:
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang)")
    tmp = tmp_path_factory.mktemp("csub")
    probe = tmp / "probe.c"
    probe.write_text("#include <zmq.h>\nint main(void) { return ZMQ_SUB == 2 ? 0 : 1; }\n")
    if subprocess.run([CC, str(probe), "-o", str(tmp / "probe"), "-lzmq"], capture_output=True).returncode:
        pytest.skip("no libzmq headers or library (Debian: apt-get install libzmq3-dev)")
    binary = tmp / "smplstream_sub"
    build = subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", str(SOURCE), "-o", str(binary),
                            "-lzmq"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr  # the example must build cleanly where libzmq is present
    return binary


def _frame(i: int) -> Frame:
    persons = [Person(7, 0.9, {"box_xyxy": np.array([1, 2, 3, 4], np.float32),
                               "poses": np.zeros(72, np.float32),
                               "trans": np.array([0.25 + i, -0.5, 3.0 + 0.125 * i], np.float32),
                               "joints": np.zeros((24, 3), np.float32)})]
    if i % 2:
        persons.append(Person(12, 0.5, {"keypoints_blazepose33": np.ones((33, 3), np.float32)}))  # no trans
    return Frame(index=100 + i, image=None, capture_time=time.monotonic(), source_size=(640, 480), persons=persons)


def test_c_subscriber_prints_track_ids_and_root_positions(subscriber_binary):
    publisher = ZmqPublisher("tcp://127.0.0.1:*", extra_header={"camera": {"camera_matrix": [[1, 0], [0, 1]]},
                                                                "note": "caf\u00e9 \"quoted\" {not an object}"})
    proc = subprocess.Popen([str(subscriber_binary), publisher.bound_endpoint, "4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert publisher.wait_for_subscribers(1, timeout=10), "the C subscriber did not subscribe"
        sock = publisher._sock  # malformed messages, sent raw: each must be dropped, not crash it
        header = json.loads(encode_frame(_frame(0), 0, 0.0, wall_time=0.0)[1])
        header["persons"][0]["arrays"][2]["offset"] = 10 ** 6  # `trans` outside the payload
        good = encode_frame(_frame(0), 0, 0.0, wall_time=0.0)
        sock.send_multipart([TOPIC, json.dumps(header).encode(), good[2]])
        sock.send_multipart([TOPIC, b'{"schema":"smplstream.frame","version":1,"persons":[{', b""])
        sock.send_multipart([TOPIC, good[1], good[2] + bytes(8)])  # payload longer than payload_bytes
        sock.send_multipart([TOPIC, good[1]])  # two parts
        for i in range(4):
            publisher.publish(_frame(i))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        publisher.close()
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4, out
    for i, line in enumerate(lines):
        expect = f"seq {i} frame {100 + i} persons {1 + i % 2} | id 7 trans {0.25 + i:.3f} -0.500 {3 + 0.125 * i:.3f}"
        if i % 2:
            expect += " | id 12 (no trans)"
        assert line == expect
    assert len(re.findall("dropped a malformed message", err)) == 4, err
    assert "outside the payload" in err and "payload_bytes" in err and "3 message parts" in err
    print(out, err, file=sys.stderr)

"""CurveZMQ: with --curve-keys the stream is encrypted and only authorised subscribers get it."""

import threading

import pytest
import zmq

from streamer.app import RunConfig, run
from streamer.errors import ConfigError
from streamer.security import generate_keys
from streamer.subscriber import Subscriber


def receive_into(results, name, endpoint, keys, count=5, timeout=8):
    def loop():
        got = []
        try:
            with Subscriber(endpoint, curve_keys=keys) as sub:
                while len(got) < count:
                    msg = sub.receive(timeout=timeout)
                    if msg is None:
                        break
                    got.append(msg.frame.seq)
        finally:
            results[name] = got
    t = threading.Thread(target=loop)
    t.start()
    return t


def test_only_authorised_subscribers_receive(clip, endpoint, tmp_path):
    keys = generate_keys(tmp_path / "keys")
    stranger = generate_keys(tmp_path / "stranger")  # valid keys, not authorised by the publisher
    results = {}
    threads = [receive_into(results, "authorised", endpoint, str(keys)),
               receive_into(results, "stranger", endpoint, str(stranger)),
               receive_into(results, "plain", endpoint, None)]
    run(RunConfig(source=str(clip), publish=endpoint, curve_keys=str(keys), wait_subscribers=1,
                  max_frames=30, perception=False, progress=False))
    for t in threads:
        t.join(20)
    assert results["authorised"] == [0, 1, 2, 3, 4]
    assert results["stranger"] == [] and results["plain"] == []


def test_missing_or_existing_keys_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="server.key_secret is missing"):
        from streamer.publisher import ZmqPublisher
        ZmqPublisher("tcp://127.0.0.1:0", curve_keys=str(tmp_path))
    generate_keys(tmp_path / "k")
    with pytest.raises(ConfigError, match="exist already"):
        generate_keys(tmp_path / "k")
    assert oct((tmp_path / "k" / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    assert zmq.has("curve")

"""Security: CurveZMQ (with --curve-keys the stream is encrypted and only authorised
subscribers get it), loopback by default, files that would run code refused, and paths
from data never naming files outside their directory."""

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from streamer.app import RunConfig, run
from streamer.errors import ConfigError, RecordError
from streamer.frames import Frame
from streamer.motion_files import MotionRecorder
from streamer.security import generate_keys
from streamer.subscriber import Subscriber
from synthetic import synthetic_person


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


# -- files and paths from data: never executed, never outside their directory ---------------



class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _frame(persons):
    f = Frame(index=0, image=None, capture_time=1.0, source_size=(640, 480), stream_time=0.0)
    f.persons = persons
    return f


@pytest.mark.parametrize("track_id", ["../../evil", "/tmp/evil", "a\0b", "1", 1.5, True, None])
def test_hostile_track_ids_never_name_a_file(tmp_path, track_id):
    record = tmp_path / "deep" / "rec"
    recorder = MotionRecorder(record, fps=30.0, image_size=(640, 480))
    person = synthetic_person(1, 0)
    person.track_id = track_id
    with pytest.raises(RecordError, match="is not an integer"):
        recorder.write(_frame([person]))
    recorder.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []  # nothing anywhere: not in the directory, not beside or above it


def test_integer_track_ids_of_any_kind_stay_inside_the_directory(tmp_path):
    from streamer.motion_formats import MultiFormatRecorder, parse_formats

    record = tmp_path / "rec"
    formats = parse_formats("npz,bvh" + (",smpl" if _has("smplcodec") else ""))
    recorder = MultiFormatRecorder(record, formats=formats, fps=30.0, image_size=(640, 480))
    persons = [synthetic_person(1, 0), synthetic_person(2, 0), synthetic_person(3, 0)]
    persons[0].track_id, persons[1].track_id, persons[2].track_id = np.int64(7), -3, 10**12
    recorder.write(_frame(persons))
    recorder.close()
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != record]
    assert outside == []
    names = sorted(p.name for p in record.iterdir())
    assert "track_0007.npz" in names and "track_-003.bvh" in names and "track_1000000000000.npz" in names


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("option", ["--source", "--record", "--stats-json", "--camera", "--preview",
                                    "--viewer-save", "--curve-keys", "--publish"])
def test_nul_in_any_path_option_is_one_clear_line(clip, tmp_path, capsys, option):
    from streamer.cli import main

    argv = ["-q", "run", "--source", str(clip), "--publish", "none", "--no-perception", "--max-frames", "1"]
    hostile = f"ipc://{tmp_path}/a\0b" if option == "--publish" else f"{tmp_path}/x\0y"
    if option in ("--source", "--publish"):
        argv[argv.index(option) + 1] = hostile
    else:
        argv += [option, hostile]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "NUL byte" in err[0], err
    assert list(tmp_path.iterdir()) == []  # nothing bound, created or written (ipc:// truncated at NUL)


def test_keypoint_file_with_pickled_objects_is_refused_without_running_them(tmp_path, capsys):
    from streamer.cli import main

    marker = tmp_path / "pwned"
    hostile = np.empty(2, object)
    hostile[:] = [_Exploit(marker), _Exploit(marker)]
    bad = tmp_path / "kp.npz"
    np.savez(bad, keypoints=hostile, joint_set=np.str_("blazepose33"), fps=30.0, image_size=np.array([640, 480]))
    assert main(["lift", str(bad), "--out", str(tmp_path / "out.npz")]) == 2
    assert "not a readable .npz keypoint file" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.npz").exists()


def test_body_model_npz_and_pkl_with_code_are_refused(tmp_path):
    from engines.body.model_file import BodyModelFileError, load_body_model

    marker = tmp_path / "pwned"
    hostile = np.empty(1, object)
    hostile[0] = _Exploit(marker)
    np.savez(tmp_path / "body.npz", v_template=hostile)
    with pytest.raises(BodyModelFileError, match="holds Python objects"):
        load_body_model(tmp_path / "body.npz")
    (tmp_path / "body.pkl").write_bytes(pickle.dumps({"v_template": _Exploit(marker)}, protocol=2))
    with pytest.raises(BodyModelFileError, match="refusing"):
        load_body_model(tmp_path / "body.pkl")
    assert not marker.exists()


def test_lifter_checkpoint_with_code_is_refused(tmp_path):
    import torch

    from engines.diffusion.weights import LifterWeightsError, load_denoiser

    marker = tmp_path / "pwned"
    weights = tmp_path / "denoiser.pt"
    torch.save({"weight": _Exploit(marker)}, weights)
    (tmp_path / "denoiser.json").write_text('{"config": {}}')
    with pytest.raises(LifterWeightsError, match="cannot be loaded as plain weights"):
        load_denoiser(weights)
    assert not marker.exists()


def test_camera_file_with_a_python_tag_is_data_not_code(tmp_path):
    from calibration.camera_file import camera_or_assumed
    from calibration.fileio import FileFormatError

    marker = tmp_path / "pwned"
    cam = tmp_path / "cam.yaml"
    cam.write_text(f'%YAML:1.0\n---\nmodel: !!python/object/apply:os.system ["touch {marker}"]\n'
                   "image_width: 640\nimage_height: 480\n")
    with pytest.raises((FileFormatError, ValueError)):
        camera_or_assumed(str(cam), 640, 480)
    assert not marker.exists()


def test_generated_keys_are_where_documented_and_secrets_private(tmp_path):
    keys = generate_keys(tmp_path / "keys")
    names = sorted(p.relative_to(keys).as_posix() for p in keys.rglob("*") if p.is_file())
    assert names == ["authorized_clients/client.key", "client.key", "client.key_secret", "server.key",
                     "server.key_secret"]
    assert Path(keys / "client.key_secret").stat().st_mode & 0o077 == 0  # secrets private


def test_loopback_by_default_and_a_warning_for_all_interfaces(caplog):
    from urllib.parse import urlparse

    from conftest import free_tcp_endpoint
    from streamer.cli import build_parser
    from streamer.publisher import DEFAULT_ENDPOINT, ZmqPublisher

    assert urlparse(DEFAULT_ENDPOINT).hostname == "127.0.0.1"
    run_args = build_parser().parse_args(["run", "--source", "x.mp4"])
    assert run_args.publish == DEFAULT_ENDPOINT
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    ZmqPublisher(f"tcp://127.0.0.1:{port}").close()
    assert "all network interfaces" not in caplog.text
    for host in ("0.0.0.0", "*"):
        caplog.clear()
        port = free_tcp_endpoint().rsplit(":", 1)[1]
        ZmqPublisher(f"tcp://{host}:{port}").close()
        assert "publishing on all network interfaces" in caplog.text and "--curve-keys" in caplog.text

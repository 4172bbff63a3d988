"""Long recordings: frames go to disk as append-only chunks, the final files are assembled
from them (the same files the whole-track writers give), a track that ends gets its files
during the run, and ``smplstream recover`` rebuilds everything after a kill -9, skipping a
damaged chunk and leaving a run that is still recording alone."""

from __future__ import annotations

import io
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.cli import main
from streamer.errors import RecordError
from streamer.frames import Frame
from streamer.motion_files import MotionRecorder, motion_arrays
from streamer.motion_formats import MultiFormatRecorder, bvh_text, smpl_bytes, world_motion
from streamer.motion_recovery import recover
from synthetic import synthetic_person

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def body():
    from engines.body.body_model import BodyModel

    return BodyModel.load().double()


def frame(index, persons):
    return Frame(index=index, image=None, capture_time=index / 30, source_size=(640, 480),
                 stream_time=index / 30, persons=persons)


def person(track_id, i, *, smpl=True, std=True, world=True):
    p = synthetic_person(track_id, i)
    rng = np.random.default_rng(i)
    if std:
        p.arrays["poses_std"] = rng.random(24).astype(np.float32)
    if world:
        p.arrays["world_blazepose33"] = rng.random((33, 3)).astype(np.float32)
    if not smpl:
        p.arrays = {k: v for k, v in p.arrays.items() if k not in ("poses", "trans", "betas", "joints")}
    return p


def run_folders(directory):
    return list(Path(directory).glob(".smplstream-run-*"))


def test_files_assembled_from_many_chunks_equal_the_whole_track_files(tmp_path, body):
    """Frames spread over many chunks (a flush every 5 frames, at most 7 a chunk), some
    without SMPL, one without an optional array: every file equals what the writers give
    for the whole track at once, as they were written before chunks."""
    pytest.importorskip("smplcodec")
    rec = MultiFormatRecorder(tmp_path, fps=30.0, formats=("npz", "bvh", "smpl"), body=body,
                              image_size=(640, 480), body_model="smpl", flush_interval=1e9, chunk_frames=7)
    frames = []
    for i in range(40):
        p = person(1, i, smpl=i not in (3, 17), std=i != 25)
        frames.append(p)
        rec.write(frame(i, [p]))
        if i % 5 == 4:
            rec.flush()
    rec.close()
    assert not run_folders(tmp_path)  # the chunks are gone once the files are written
    smpl_rows = [i for i in range(40) if i not in (3, 17)]
    col = lambda name, rows: np.stack([frames[i].arrays[name] for i in rows])  # noqa: E731
    expected = motion_arrays(poses=col("poses", smpl_rows), trans=col("trans", smpl_rows),
                             betas=col("betas", smpl_rows), joints=col("joints", smpl_rows), fps=30.0,
                             body_model="smpl", frame_index=smpl_rows, timestamp=np.array(smpl_rows) / 30,
                             score=np.full(len(smpl_rows), 0.9))
    expected["track_id"] = np.int64(1)
    with np.load(tmp_path / "track_0001.npz", allow_pickle=False) as got:
        assert list(got.files) == list(expected)  # same keys in the same order; poses_std missed frame 25
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key) if value.dtype.kind == "f" \
                else np.testing.assert_array_equal(got[key], value, err_msg=key)
    with np.load(tmp_path / "track_0001_blazepose33.npz", allow_pickle=False) as kp:
        assert list(kp.files) == ["keypoints", "joint_set", "fps", "image_size", "frame_index", "timestamp",
                                  "score", "track_id", "world_landmarks"]
        np.testing.assert_array_equal(kp["keypoints"], col("keypoints_blazepose33", range(40)))
        np.testing.assert_array_equal(kp["world_landmarks"], col("world_blazepose33", range(40)))
        np.testing.assert_array_equal(kp["frame_index"], np.arange(40))
        assert str(kp["joint_set"]) == "blazepose33" and kp["image_size"].tolist() == [640, 480]
    # BVH and .smpl: as converted from the whole track in one piece (floor, mean shape,
    # Euler continuity across the chunks).
    motion = world_motion(expected["poses"], expected["trans"], expected["betas"], body)
    whole = bvh_text(motion, 30.0).splitlines()
    got = (tmp_path / "track_0001.bvh").read_text().splitlines()
    split = whole.index("MOTION") + 3
    assert got[:split] == whole[:split] and len(got) == len(whole) == split + len(smpl_rows)
    np.testing.assert_allclose(np.loadtxt(got[split:]), np.loadtxt(whole[split:]), atol=2e-6)
    import smplcodec

    codec = smplcodec.SMPLCodec.from_file(tmp_path / "track_0001.smpl")
    want = np.load(io.BytesIO(smpl_bytes(motion, 30.0, include_betas=True)), allow_pickle=False)
    assert codec.frame_count == len(smpl_rows) == int(want["frameCount"])
    np.testing.assert_allclose(codec.body_pose, want["bodyPose"], atol=1e-6)
    np.testing.assert_allclose(codec.body_translation, want["bodyTranslation"], atol=1e-6)
    np.testing.assert_allclose(codec.shape_parameters, want["shapeParameters"], atol=1e-6)


def test_a_track_that_ends_gets_its_files_during_the_run(tmp_path):
    """Track 1 leaves after frame 29: one second later its files exist while track 2 is
    still being recorded; when it comes back, the end of the run assembles it again whole."""
    rec = MotionRecorder(tmp_path, fps=30.0, flush_interval=1e9, track_end_after=1.0)
    for i in range(80):
        rec.write(frame(i, [person(2, i)] + ([person(1, i)] if i < 30 else [])))
    rec._collect_background()  # wait for the background assembly (no sleeping on timing)
    with np.load(tmp_path / "track_0001.npz", allow_pickle=False) as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], np.arange(30))
    assert not (tmp_path / "track_0002.npz").exists()
    for i in range(80, 90):
        rec.write(frame(i, [person(1, i), person(2, i)]))
    rec.close()
    with np.load(tmp_path / "track_0001.npz", allow_pickle=False) as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], [*range(30), *range(80, 90)])
    with np.load(tmp_path / "track_0002.npz", allow_pickle=False) as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], np.arange(90))


CHILD = """
import sys
sys.path.insert(0, 'tests')
from synthetic import synthetic_person
from streamer.frames import Frame
from streamer.motion_formats import MultiFormatRecorder, parse_formats
rec = MultiFormatRecorder(sys.argv[1], formats=parse_formats(sys.argv[2]), fps=30.0, image_size=(640, 480),
                          flush_interval=1e9)
i = 0
while True:  # until killed
    rec.write(Frame(index=i, image=None, capture_time=i / 30, source_size=(640, 480), stream_time=i / 30,
                    persons=[synthetic_person(1, i), synthetic_person(2, i)]))
    i += 1
    if i % 10 == 0:
        rec.flush()
        print(f"flushed {i}", flush=True)
"""


def test_kill_9_mid_run_then_recover_gives_every_flushed_frame(tmp_path):
    """A real process recording (npz, BVH, .smpl) is killed with SIGKILL mid-run; `recover`
    assembles files holding every frame up to the last complete chunk, contiguous, loadable
    without pickle, and removes the chunks."""
    bvh = pytest.importorskip("bvh")
    smplcodec = pytest.importorskip("smplcodec")
    record = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(record), "npz,bvh,smpl"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    flushed = 0
    try:
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= 120:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and flushed >= 120, proc.stderr.read()
    assert not list(record.glob("track_*")) and len(run_folders(record)) == 1  # only chunks so far

    assert main(["-q", "recover", str(record)]) == 0
    assert not run_folders(record)  # chunks used are removed
    for track_id in (1, 2):
        stem = record / f"track_{track_id:04d}"
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as smpl, \
                np.load(record / f"{stem.name}_blazepose33.npz", allow_pickle=False) as kp:
            n = len(smpl["frame_index"])
            # Every frame flushed before the kill, at most the chunk being written lost.
            assert n >= flushed and n % 10 == 0
            np.testing.assert_array_equal(smpl["frame_index"], np.arange(n))
            np.testing.assert_array_equal(kp["frame_index"], np.arange(n))
            np.testing.assert_array_equal(smpl["poses"][-1], synthetic_person(track_id, n - 1).arrays["poses"])
            assert smpl["poses"].shape == (n, 72) and kp["keypoints"].shape == (n, 33, 3)
        mocap = bvh.Bvh(stem.with_suffix(".bvh").read_text())
        assert mocap.nframes == n and len(mocap.frames) == n
        codec = smplcodec.SMPLCodec.from_file(stem.with_suffix(".smpl"))
        assert codec.frame_count == n and np.isfinite(codec.body_pose).all()


def _killed_copy(rec, tmp_path, name="killed"):
    """The record directory as a kill -9 would leave it now: chunks, no final files, no lock."""
    copy = tmp_path / name
    shutil.copytree(rec.directory, copy)
    return copy


def test_recover_skips_a_damaged_chunk_with_a_warning(tmp_path, capsys, caplog):
    rec = MotionRecorder(tmp_path / "rec", fps=30.0, flush_interval=1e9)
    for i in range(50):
        rec.write(frame(i, [person(1, i)]))
        if i % 10 == 9:
            rec.flush()
    killed = _killed_copy(rec, tmp_path)
    rec.close()
    chunks = sorted(killed.glob(".smplstream-run-*/*.npz"))
    assert len(chunks) == 5
    chunks[1].write_bytes(b"not a zip at all")  # damaged in the middle
    chunks[4].write_bytes(chunks[4].read_bytes()[:300])  # truncated at the end
    (chunks[0].parent / ".000005.npz.abc123.tmp").write_bytes(b"half a chunk")  # a write a kill interrupted
    (killed / ".track_0001.bvh.def456.tmp").write_bytes(b"half a final file")
    assert main(["recover", str(killed)]) == 0
    out = capsys.readouterr()
    assert "track 1: 30 frames from 3 chunk(s)" in out.out and "2 unreadable chunk(s) skipped" in out.out
    assert f"skipping unreadable chunk {chunks[1]}" in caplog.text and str(chunks[4]) in caplog.text
    with np.load(killed / "track_0001.npz", allow_pickle=False) as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], [*range(10), *range(20, 40)])
    # The damaged chunks stay (nothing is thrown away that was not used); the rest is gone.
    left = sorted(p.name for p in killed.glob(".smplstream-run-*/*.npz*"))
    assert left == ["000001.npz", "000004.npz"] and not list(killed.glob(".*.tmp"))


def test_recover_leaves_a_run_that_is_still_recording_alone(tmp_path, capsys):
    record = tmp_path / "rec"
    rec = MotionRecorder(record, fps=30.0, flush_interval=1e9)
    for i in range(20):
        rec.write(frame(i, [person(1, i)]))
    rec.flush()
    assert main(["recover", str(record)]) == 1
    assert "still being recorded" in capsys.readouterr().err
    assert len(list(record.glob(".smplstream-run-*/*.npz"))) == 1
    with pytest.raises(RecordError, match="another run is recording there"):
        MotionRecorder(record, fps=30.0)
    rec.close()
    with np.load(record / "track_0001.npz", allow_pickle=False) as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], np.arange(20))


def test_a_directory_with_an_unfinished_run_is_refused_until_recovered(tmp_path):
    rec = MotionRecorder(tmp_path / "rec", fps=30.0, flush_interval=1e9)
    rec.write(frame(0, [person(1, 0)]))
    rec.flush()
    killed = _killed_copy(rec, tmp_path)
    rec.close()
    with pytest.raises(RecordError, match=r"did not finish .*smplstream recover"):
        MotionRecorder(killed, fps=30.0)
    assert [r.tracks[0].smpl_frames for r in recover(killed)] == [1]
    MotionRecorder(killed, fps=30.0).close()


def test_a_run_killed_before_its_first_chunk_blocks_nothing(tmp_path, capsys):
    record = tmp_path / "rec"
    (record / ".smplstream-run-20250101-000000-abcdef").mkdir(parents=True)  # no lock, no run.json
    MotionRecorder(record, fps=30.0).close()  # not refused: there is nothing to recover
    assert main(["recover", str(record)]) == 0
    assert "nothing to recover" in capsys.readouterr().out and list(record.iterdir()) == []


def test_recover_command_errors_and_help(tmp_path, capsys):
    assert main(["recover", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"smplstream: error: {tmp_path / 'missing'} is not a directory"
    assert main(["recover", str(tmp_path)]) == 0
    assert "nothing to recover" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["recover", "--help"])
    assert "only after that process has gone" in " ".join(capsys.readouterr().out.split())

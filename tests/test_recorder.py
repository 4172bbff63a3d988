"""The motion recorder over long sessions and uneven data: per-frame arrays kept in numpy
blocks (no Python object per frame), one chunk's worth per track, rows aligned when a person
lacks an array in some frames, an array whose shape changes left out of those frames with a
warning."""

from __future__ import annotations

import numpy as np

from streamer.frames import Frame, Person
from streamer.motion_files import MotionRecorder
from synthetic import synthetic_person


def frame(index, persons):
    f = Frame(index=index, image=None, capture_time=index / 30, source_size=(640, 480), stream_time=index / 30)
    f.persons = persons
    return f


def test_arrays_missing_in_some_frames_keep_rows_aligned(tmp_path):
    rec = MotionRecorder(tmp_path, fps=30.0, image_size=(640, 480))
    for i in range(10):
        person = synthetic_person(1, i)
        if i < 3 or i == 6:  # keypoints only (not lifted) in frames 0-2 and 6
            person.arrays = {"keypoints_blazepose33": person.arrays["keypoints_blazepose33"]}
        rec.write(frame(i, [person]))
    rec.close()
    with np.load(tmp_path / "track_0001.npz") as smpl, np.load(tmp_path / "track_0001_blazepose33.npz") as kp:
        np.testing.assert_array_equal(smpl["frame_index"], [3, 4, 5, 7, 8, 9])
        np.testing.assert_array_equal(smpl["poses"][3], synthetic_person(1, 7).arrays["poses"])
        np.testing.assert_allclose(smpl["timestamp"], np.array([3, 4, 5, 7, 8, 9]) / 30)
        np.testing.assert_array_equal(kp["frame_index"], np.arange(10))
        np.testing.assert_array_equal(kp["keypoints"][6], synthetic_person(1, 6).arrays["keypoints_blazepose33"])


def test_an_array_changing_shape_is_left_out_of_those_frames(tmp_path, caplog):
    rec = MotionRecorder(tmp_path, fps=30.0)
    for i in range(6):
        person = synthetic_person(1, i)
        if i == 4:
            person.arrays["joints"] = np.zeros((17, 3), np.float32)
        rec.write(frame(i, [person]))
    rec.close()
    with np.load(tmp_path / "track_0001.npz") as smpl:
        np.testing.assert_array_equal(smpl["frame_index"], [0, 1, 2, 3, 5])
    assert "'joints' has shape (17, 3) in frame 4, not (24, 3)" in caplog.text


def test_a_long_session_holds_one_chunk_per_track_not_every_frame(tmp_path):
    rec = MotionRecorder(tmp_path, fps=30.0, flush_interval=1e9, chunk_frames=256)
    person = synthetic_person(1, 0)
    recorded = {k: v for k, v in person.arrays.items() if k != "box_xyxy"}  # boxes are in no motion file
    per_frame = sum(np.asarray(v).nbytes for v in recorded.values()) + 8 + 8 + 4 + len(recorded)
    for i in range(5000):
        rec.write(frame(i, [Person(1, 0.9, dict(person.arrays))]))
    track = rec._tracks[1]
    held = sum(c.data.nbytes + c.present.nbytes for c in track.columns.values()) + \
        track.frame_index.nbytes + track.timestamp.nbytes + track.score.nbytes
    assert track.n < 256 and held <= 256 * per_frame  # the current chunk only, however long the run
    rec.close()
    with np.load(tmp_path / "track_0001.npz") as smpl:
        assert smpl["poses"].shape == (5000, 72)
        np.testing.assert_array_equal(smpl["frame_index"], np.arange(5000))

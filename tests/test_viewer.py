"""The Rerun viewer, headless: log frames to an .rrd file and read it back."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from streamer.errors import ConfigError
from streamer.frames import Frame, Person

rr = pytest.importorskip("rerun")  # optional extra `viewer`
torch.set_num_threads(1)


def _person(tid: int, rng) -> Person:
    kp = np.concatenate([rng.uniform(0, 60, (33, 2)), rng.uniform(0.5, 1, (33, 1))], 1).astype(np.float32)
    kp[5, 2] = 0.1  # a keypoint too unsure to show
    return Person(tid, 0.9, {"keypoints_blazepose33": kp, "poses": rng.normal(0, 0.1, 72).astype(np.float32),
                             "betas": np.zeros(10, np.float32), "trans": np.array([0, 0, 3], np.float32),
                             "joints": rng.normal(0, 0.3, (24, 3)).astype(np.float32)})


def _read(path):
    from rerun.chunk import RrdReader

    rows, columns = defaultdict(int), defaultdict(set)
    for chunk in RrdReader(path).stream():
        rows[chunk.entity_path] += chunk.num_rows
        batch = chunk.to_record_batch()
        columns[chunk.entity_path].update(batch.schema.names)
        if chunk.entity_path.endswith("/skeleton"):
            positions = batch.column("Points3D:positions").to_pylist()
            assert all(len(p) == 24 for p in positions)
        if chunk.entity_path == "/world/camera/image/track_1":
            assert all(len(p) == 32 for p in batch.column("Points2D:positions").to_pylist())
    return rows, columns


def test_rrd_holds_video_keypoints_and_bodies_per_track(tmp_path):
    from streamer.viewer import RerunViewer

    rng = np.random.default_rng(0)
    path = tmp_path / "run.rrd"
    viewer = RerunViewer(save=str(path), image_scale=0.5)
    for i in range(4):
        persons = [_person(1, rng)] + ([_person(2, rng)] if i < 2 else [])
        viewer.write(Frame(index=i, image=np.full((48, 64, 3), 90, np.uint8), capture_time=float(i),
                           source_size=(64, 48), stream_time=i / 30, persons=persons))
    viewer.close()
    rows, columns = _read(path)
    assert rows["/world/camera/image"] == 4
    assert "EncodedImage:blob" in columns["/world/camera/image"]
    assert rows["/world/camera"] == 1 and "Pinhole:image_from_camera" in columns["/world/camera"]
    assert rows["/world/camera/image/track_1"] == 4 and rows["/world/camera/image/track_2"] == 3  # 2 frames + the clear
    assert rows["/world/track_1/skeleton"] == 4 and rows["/world/track_1/mesh"] == 4
    assert "Mesh3D:triangle_indices" in columns["/world/track_1/mesh"]
    assert rows["/world/track_2/mesh"] == 2
    assert rows["/world/track_2"] == 1  # cleared when it left
    assert {"frame", "stream_time"} <= columns["/world/track_1/mesh"]


def test_viewer_needs_a_destination(tmp_path):
    from streamer.viewer import RerunViewer

    with pytest.raises(ConfigError, match="--viewer"):
        RerunViewer()
    with pytest.raises(ConfigError, match=r"\.rrd"):
        RerunViewer(save=str(tmp_path / "x.mp4"))

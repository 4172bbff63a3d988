"""An exception in any stage of the real pipeline (keypoints, lift, refine, outputs) ends the
run with one error line naming the stage, the final stats table, and complete, loadable
motion files holding every frame that was published. (Ctrl-C and SIGTERM: test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import CLIP
from engines.run_defaults import REFINE_LAG
from streamer.cli import main

FAIL_AT = 12


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Clip frames 70-93 at 640x360 (the man on the box and the woman walking) as images."""
    folder = tmp_path_factory.mktemp("frames")
    with av.open(str(CLIP)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= 94:
                break
            if i >= 70:
                image = frame.reformat(width=640, height=360, format="bgr24").to_ndarray()
                cv2.imwrite(str(folder / f"{i - 70:03d}.png"), image)
    return folder


def inject_failure(monkeypatch, target: str) -> None:
    module, cls = target.rsplit(".", 1)
    import importlib

    stage = getattr(importlib.import_module(module), cls)
    original = stage.process

    def process(self, frame):
        if frame.index == FAIL_AT:
            raise RuntimeError(f"injected failure at frame {frame.index}")
        return original(self, frame)

    monkeypatch.setattr(stage, "process", process)


@pytest.mark.parametrize("target, stage", [
    ("streamer.keypoints_stage.KeypointsStage", "keypoints"),
    ("streamer.lift_stage.LiftStage", "lift"),
    ("streamer.refine_stage.RefineStage", "refine"),
    ("streamer.outputs.OutputStage", "publish"),
])
def test_exception_in_a_stage_leaves_complete_motion_files_and_the_table(
        frames_dir, tmp_path, monkeypatch, capsys, target, stage):
    inject_failure(monkeypatch, target)
    record = tmp_path / "rec"
    rc = main(["-q", "run", "--source", str(frames_dir), "--publish", "none", "--record", str(record),
               "--formats", "npz,bvh,smpl", "--lift-samples", "2", "--lift-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("smplstream: error:")]
    assert errors == [f"smplstream: error: stage '{stage}' failed: RuntimeError: injected failure at frame {FAIL_AT}"]
    assert "frames out" in err  # the final stats table
    frames_out = int(err.split(" frames out")[0].split()[-1])
    # Frames before the failure that reached the outputs: all of them, except those the
    # refine stage was still holding when it failed itself.
    expected = FAIL_AT - (REFINE_LAG["offline"] + 1 if stage == "refine" else 0)  # frames the fit holds
    assert frames_out >= expected - 1
    smpl = sorted(record.glob("track_????.npz"))
    keypoints = sorted(record.glob("track_*_blazepose33.npz"))
    assert smpl and keypoints and not list(record.glob(".*tmp"))
    indices = {}
    for path in smpl + keypoints:
        with np.load(path, allow_pickle=False) as data:
            index = data["frame_index"]
            assert (np.diff(index) > 0).all() and index.max() < FAIL_AT
            indices[path.name] = index
            if "poses" in data:
                assert data["poses"].shape == (len(index), 72) and np.isfinite(data["poses"]).all()
            else:
                assert data["keypoints"].shape == (len(index), 33, 3)
    # The last frame that went out (the walker is in every frame) is in the files, and each
    # track's SMPL file covers the same frames as its keypoint file.
    assert max(i.max() for i in indices.values()) == frames_out - 1
    for path in smpl:
        np.testing.assert_array_equal(indices[path.name], indices[path.stem + "_blazepose33.npz"])
    for path in smpl:  # the other formats were flushed too
        assert path.with_suffix(".bvh").stat().st_size > 0 and path.with_suffix(".smpl").stat().st_size > 0

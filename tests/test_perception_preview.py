"""Preview overlay drawing, and the full chain (grab -> keypoints -> publish) on the real clip
with a preview video and keypoint files recorded."""

from __future__ import annotations

import av
import numpy as np

from streamer.app import RunConfig, run
from streamer.frames import Person
from streamer.preview import draw_persons, track_colour


def test_draw_persons_draws_on_a_copy():
    frame = np.zeros((200, 300, 3), np.uint8)
    kp = np.zeros((33, 3), np.float32)
    kp[:, 0] = np.linspace(60, 140, 33)
    kp[:, 1] = np.linspace(40, 160, 33)
    kp[:, 2] = 1.0
    kp[5, 2] = 0.0  # not drawn
    p = Person(3, 0.9, {"box_xyxy": np.array([50, 30, 150, 170.0]), "keypoints_blazepose33": kp})
    out = draw_persons(frame, [p])
    assert frame.max() == 0  # input untouched
    assert tuple(out[100, 50]) == track_colour(3)  # left edge of the box
    assert out[int(kp[20, 1]), int(kp[20, 0])].any()  # a landmark
    assert not out[int(kp[5, 1]) + 30:, 200:].any()  # nothing drawn far from the person


def test_run_with_perception_writes_preview_and_keypoint_files(clip, tmp_path):
    frames = 40
    outcome = run(RunConfig(source=str(clip), publish=None, record=str(tmp_path / "rec"),
                            preview=str(tmp_path / "preview.mp4"), max_frames=frames, progress=False))
    assert outcome.result.frames_out == frames and "keypoints" in outcome.summary["stages"]
    with av.open(str(tmp_path / "preview.mp4")) as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == frames and decoded[0].width == 1768
    files = sorted((tmp_path / "rec").glob("track_*_blazepose33.npz"))
    assert files, "the man on the box is in view from the first frames"
    with np.load(files[0]) as data:
        kp = data["keypoints"]
        assert kp.shape[1:] == (33, 3) and str(data["joint_set"]) == "blazepose33"
        assert tuple(data["image_size"]) == (1768, 994)
        seen = kp[..., 2] > 0.5
        assert seen.mean() > 0.5
        assert (kp[..., 0][seen] >= 0).all() and (kp[..., 0][seen] < 1768).all()

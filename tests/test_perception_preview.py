"""Preview overlay drawing, and the full chain (grab -> keypoints -> publish) on the real clip
with a preview video and keypoint files recorded."""

from __future__ import annotations

import av
import numpy as np
import pytest

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
    assert len(decoded) == frames and (decoded[0].width, decoded[0].height) == (1280, 720)  # PREVIEW_MAX_SIDE
    files = sorted((tmp_path / "rec").glob("track_*_blazepose33.npz"))
    assert files, "the man on the box is in view from the first frames"
    with np.load(files[0]) as data:
        kp = data["keypoints"]
        assert kp.shape[1:] == (33, 3) and str(data["joint_set"]) == "blazepose33"
        assert tuple(data["image_size"]) == (1768, 994)
        seen = kp[..., 2] > 0.5
        assert seen.mean() > 0.5
        assert (kp[..., 0][seen] >= 0).all() and (kp[..., 0][seen] < 1768).all()
        world = data["world_landmarks"]  # metric, hip-centred: a body's size
        assert world.shape == kp.shape and 1.0 < np.ptp(world[..., 1], axis=1).mean() < 2.5
    # Fit quality on every run: per frame in the motion file, per track and overall in the summary.
    motion = sorted((tmp_path / "rec").glob("track_????.npz"))
    with np.load(motion[0]) as data:
        err = data["reprojection_px"]
        assert err.shape == data["frame_index"].shape and np.nanmedian(err) < 20
    fit = outcome.summary["fit"]
    assert fit["overall"]["frames"] > frames // 2 and 0 < fit["overall"]["median_pct"] < 2.0
    assert set(fit["tracks"]) and all(t["p90_px"] >= t["median_px"] for t in fit["tracks"].values())


def test_body_mesh_is_drawn_where_the_body_projects():
    from calibration.camera import assumed_camera
    from engines.body.body_model import BodyModel
    from engines.body.decimate import cluster_decimate
    from streamer.preview import BodyMeshDrawer

    body = BodyModel.load()
    keep, faces = cluster_decimate(body.v_template.numpy(), body.faces.numpy(), 0.03)
    assert 1000 < len(faces) < 0.3 * len(body.faces) and faces.max() < len(keep)
    camera = assumed_camera(640, 480)
    pose = np.zeros(72, np.float32)
    pose[0] = np.pi  # SMPL's Y-up body seen by a Y-down camera: turn it upright, facing us
    person = Person(1, 1.0, {"poses": pose, "betas": np.zeros(10, np.float32),
                             "trans": np.array([0.0, 0.0, 4.0], np.float32)})
    frame = np.zeros((480, 640, 3), np.uint8)
    BodyMeshDrawer(camera, body).draw(frame, [person])
    centre = camera.project(np.array([[0.0, 0.0, 4.0]]))[0].astype(int)
    assert frame[centre[1], centre[0]].any()  # the pelvis is covered
    assert not frame[:, :100].any() and not frame[:, -100:].any()  # the T-pose spans ~2 m, not the frame
    ys = np.nonzero(frame.any(axis=(1, 2)))[0]
    assert 150 < ys.max() - ys.min() < 350  # 1.7 m at 4 m with f = 522 px is about 220 px tall


def test_preview_runs_on_its_own_thread_skipping_frames_live_and_none_offline(tmp_path, monkeypatch):
    import time

    from streamer.frames import Frame
    from streamer.preview import PreviewWriter

    original = PreviewWriter._draw_and_encode

    def slow(self, *args):
        time.sleep(0.05)  # a preview slower than the pipeline
        original(self, *args)

    monkeypatch.setattr(PreviewWriter, "_draw_and_encode", slow)
    image = np.zeros((180, 320, 3), np.uint8)
    for live in (True, False):
        writer = PreviewWriter(tmp_path / f"p{live}.mp4", fps=30, size=(320, 180), live=live)
        start = time.monotonic()
        for i in range(30):
            writer.write(Frame(index=i, image=image, capture_time=0.0, source_size=(320, 180)))
        handed_over = time.monotonic() - start
        writer.close()
        if live:  # the pipeline never waited for the preview
            assert handed_over < 0.5 and writer.dropped > 0 and writer.frames + writer.dropped == 30
        else:  # every frame, the pipeline waiting when the queue was full
            assert writer.dropped == 0 and writer.frames == 30
        with av.open(str(tmp_path / f"p{live}.mp4")) as c:
            assert len(list(c.decode(video=0))) == writer.frames


def test_a_preview_that_fails_says_so_when_closed(tmp_path, monkeypatch):
    from streamer.frames import Frame
    from streamer.preview import PreviewWriter

    def broken(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(PreviewWriter, "_draw_and_encode", broken)
    writer = PreviewWriter(tmp_path / "p.mp4", fps=30, size=(320, 180))
    writer.write(Frame(index=0, image=np.zeros((180, 320, 3), np.uint8), capture_time=0.0, source_size=(320, 180)))
    with pytest.raises(RuntimeError, match="disk full"):
        writer.close()

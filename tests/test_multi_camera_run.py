"""``run --source A --source B --rig rig.yaml`` end to end on the real clip: two views of it
through virtual rigs (camera 1 beside camera 0, looking the same way): each reference person
matched to themself in the other view, one body per person at the depth both views see, and
a second camera that freezes leaves the run going on the first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calibration.camera import assumed_camera
from calibration.rig_calibration import RigCamera, write_multi_camera_rig
from streamer.app import RunConfig, build_pipeline, run
from streamer.errors import ConfigError
from streamer.graph import Stage
from streamer.multi_source import SynchronisedSources
from streamer.multi_view import VIEWS_KEY, VIEWS_WORLD_KEY, MultiViewRig
from streamer.sources import VideoFileSource
from streamer.virtual_rig import ShiftedSource, write_stereo_rig
from test_multi_source import StallingSource

CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"
KEYPOINTS = "keypoints_blazepose33"


@pytest.fixture(scope="module")
def rig_file(tmp_path_factory):
    """The clip's camera twice, the second 0.3 m to the right of the first (same images: every
    point lies on its own epipolar line, so each person can only be matched to themself)."""
    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    write_multi_camera_rig([RigCamera("left", camera, np.eye(3), np.zeros(3)),
                            RigCamera("right", camera, np.eye(3), np.array([0.3, 0.0, 0.0]))], path, board="virtual")
    return str(path)


class Capture(Stage):
    """Keeps what each frame's persons carry on their way to the outputs."""

    name = "capture"

    def __init__(self):
        self.frames = []

    def process(self, frame):
        self.frames.append([(p.track_id, {k: np.array(v) for k, v in p.arrays.items()}) for p in frame.persons])
        return frame


def _config(rig, tmp_path, **more):
    return RunConfig(source=str(CLIP), more_sources=[str(CLIP)], rig=rig, publish=None, progress=False,
                     record=str(tmp_path / "rec"), stats_json=str(tmp_path / "stats.json"), **more)


def test_two_views_put_each_person_at_the_depth_both_cameras_see(tmp_path):
    """The clip and its copy shifted by the disparity of a scene 3.5 m away (an exact stereo
    pair: streamer.virtual_rig): each person is matched to themself in the other view (their
    keypoints there are theirs, shifted), and the published bodies stand 3.5 m away, where one
    camera alone puts them 5.5 to 7 m away (tools/multiview_depth.py)."""
    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    rig = str(tmp_path / "stereo.yaml")
    dx = write_stereo_rig(rig, camera, 0.3, 3.5)
    scene = camera.fx * 0.3 / dx
    sources = SynchronisedSources([VideoFileSource(CLIP), ShiftedSource(VideoFileSource(CLIP), dx)])
    capture = Capture()
    pipeline, _, _ = build_pipeline(_config(rig, tmp_path, max_frames=14), source=sources, extra_stages=[capture])
    result = pipeline.run(handle_signals=False)
    assert result.frames_out == 14 and sources.views_missing == [0, 0]
    people = [(i, tid, a) for i, frame in enumerate(capture.frames) for tid, a in frame if KEYPOINTS in a]
    matched = [(i, tid, a) for i, tid, a in people if a[VIEWS_KEY].any()]
    assert len(matched) >= len(people) // 2, "most person-frames should be matched in the other view"
    for i, tid, arrays in matched:
        own, there = arrays[KEYPOINTS], arrays[VIEWS_KEY][0]
        both = (own[:, 2] > 0.5) & (there[:, 2] > 0.5)
        shift = np.median(own[both, 0] - there[both, 0])
        assert abs(shift - dx) < 4, f"frame {i} track {tid}: matched to someone {shift:.0f} px away, not {dx}"
        # Their landmarks from the other view's crop come along for the fit (the same pixels: alike,
        # within the crops' own jitter: 6 cm in the first matched frame, under 3 cm after).
        gap = np.abs(arrays[VIEWS_WORLD_KEY][0] - arrays["world_blazepose33"])
        assert arrays[VIEWS_WORLD_KEY][0].any() and np.median(gap) < 0.1, (i, tid, np.median(gap))
    depths = [a["joints"][0, 2] for i, _, a in matched if i >= 8 and "joints" in a]
    assert depths and all(abs(z - scene) < 0.3 for z in depths), (scene, depths)
    tracks = [t for t in sorted((tmp_path / "rec").glob("track_*.npz")) if "blazepose" not in t.name]
    assert tracks and all(np.isfinite(np.load(t)["trans"]).all() for t in tracks)


def test_a_frozen_camera_leaves_the_run_on_the_other(rig_file, tmp_path):
    """Camera 1 freezes after its 3rd frame (for longer than the run): every step still comes
    out, each waiting at most 0.3 s for it, the steps it missed carry no keypoints from it
    (zeros), and they are counted."""
    sources = SynchronisedSources([VideoFileSource(CLIP), StallingSource(VideoFileSource(CLIP), after=3, seconds=20)],
                                  max_wait=0.3)
    capture = Capture()
    pipeline, _, _ = build_pipeline(_config(rig_file, tmp_path, max_frames=12), source=sources, extra_stages=[capture])
    result = pipeline.run(handle_signals=False)
    assert result.frames_out == 12
    assert sources.views_missing[1] >= 3 and result.source_faults["frames_missed"] >= 3
    seen = [i for i, frame in enumerate(capture.frames) if any(KEYPOINTS in a for _, a in frame)]
    missing = [i for i, frame in enumerate(capture.frames)
               if any(KEYPOINTS in a and not a[VIEWS_KEY].any() for _, a in frame)]
    assert sources.views_missing[1] == 9, "frozen from its 4th frame on"
    assert missing == [i for i in seen if i >= 3] and missing, (seen, missing)
    assert any("poses" in a for i in missing for _, a in capture.frames[i]), "bodies go on from the one camera"


def test_several_sources_need_a_multi_camera_rig(tmp_path):
    with pytest.raises(ConfigError, match="need --rig"):
        run(RunConfig(source=str(CLIP), more_sources=[str(CLIP)], publish=None, progress=False))
    head = tmp_path / "head.yaml"
    head.write_text("%YAML:1.0\n---\nrig: head_mounted\nrotation_vector: [0., 0., 0.]\ntranslation: [0., 0., 0.]\n")
    with pytest.raises(ConfigError, match="not a multi-camera rig"):
        run(RunConfig(source=str(CLIP), more_sources=[str(CLIP)], rig=str(head), publish=None, progress=False))


@pytest.mark.parametrize("frame", ["head", "world"])
def test_one_cameras_output_frames_are_refused_with_several(rig_file, frame):
    """--output-frame head/world follow one moving camera; with a rig they were silently
    ignored, now the run says so before anything opens."""
    with pytest.raises(ConfigError, match=f"--output-frame {frame} is for one camera"):
        run(RunConfig(source=str(CLIP), more_sources=[str(CLIP)], rig=rig_file, output_frame=frame, publish=None,
                      progress=False))


def test_the_command_line_names_what_is_missing(rig_file, capsys):
    from streamer.cli import main

    assert main(["run", "--source", str(CLIP), "--source-offset", "0.5", "--publish", "none"]) == 2
    assert "--source-offset aligns several sources" in capsys.readouterr().err
    assert main(["run", "--source", str(CLIP), "--rig", rig_file, "--publish", "none"]) == 2
    assert "give one --source per camera" in capsys.readouterr().err
    assert main(["run", "--source", str(CLIP), "--source", str(CLIP), "--source", str(CLIP), "--rig", rig_file,
                 "--publish", "none"]) == 2
    assert "the rig has 2 cameras but 3 --source" in capsys.readouterr().err


def test_placement_moves_a_lift_onto_the_triangulated_hips(rig_file):
    """A lift at the wrong depth is moved so that its hips sit where both cameras see them."""
    from engines.body.body_model import BodyModel
    from engines.diffusion.denoiser import BETAS, pose_vector, rotations_of
    from engines.body.rotations import axis_angle_to_matrix

    source = VideoFileSource(CLIP)
    rig = MultiViewRig.load(rig_file, [source.size, source.size])
    source.close()
    body = BodyModel.load()
    aa = torch.zeros(1, 24, 3)
    aa[0, 0] = torch.tensor([np.pi, 0.0, 0.0])
    x = pose_vector(axis_angle_to_matrix(aa), torch.zeros(1, 10))
    truth = torch.tensor([[0.2, 0.1, 5.0]])
    with torch.no_grad():
        pts = body(rotations_of(x), x[:, BETAS], truth, keypoints="blazepose33").keypoints["blazepose33"][0]

    def seen(cam, R, t):
        p = pts.numpy() @ R.T + t
        return torch.from_numpy(np.concatenate([cam.project(p), np.ones((33, 1))], 1).astype(np.float32))

    ref = seen(rig.cameras[0], np.eye(3), np.zeros(3))[None]
    other = seen(rig.cameras[1], *rig.poses[0])[None, None]
    wrong = truth * 0.7
    placed = rig.place(body, x, wrong, ref, other)
    assert (placed - truth).norm() < 0.02, placed
    assert torch.equal(rig.place(body, x, wrong, ref, torch.zeros_like(other)), wrong), "one view: the lift's place"


def test_a_rig_with_camera_0_elsewhere_gives_outputs_in_its_frame(tmp_path):
    """A hand-made rig whose frame is not camera 0's (camera 0 pitched 20 degrees down, 1.5 m
    up): the other camera's pose is taken relative to camera 0, and the outputs are moved
    into the rig's frame."""
    from scipy.spatial.transform import Rotation

    from streamer.frames import Frame, Person
    from streamer.multi_view import RigFrameStage

    camera = assumed_camera(1280, 720)
    R0 = Rotation.from_euler("x", -20, degrees=True).as_matrix()
    t0 = np.array([0.0, -1.5, 0.0])
    R1 = Rotation.from_euler("y", -30, degrees=True).as_matrix() @ R0
    t1 = np.array([1.0, -1.5, 0.5])
    path = tmp_path / "rig.yaml"
    write_multi_camera_rig([RigCamera("a", camera, R0, t0), RigCamera("b", camera, R1, t1)], path)
    rig = MultiViewRig.load(str(path), [(1280, 720), (1280, 720)])
    assert not rig.reference_at_origin
    p_rig = np.array([0.3, -0.9, 4.0])
    p0, p1 = R0.T @ (p_rig - t0), R1.T @ (p_rig - t1)
    R, t = rig.poses[0]
    assert np.allclose(R @ p0 + t, p1, atol=1e-9)
    joints = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32) + p0.astype(np.float32)
    person = Person(1, 1.0, {"joints": joints, "trans": joints[0] + 0.01, "poses": np.zeros(72, np.float32)})
    frame = RigFrameStage(rig).process(Frame(0, None, 0.0, (1280, 720), persons=[person]))
    assert np.allclose(person.arrays["joints"], joints @ R0.T + t0, atol=1e-5)
    assert np.allclose(person.arrays["joints"][0], p_rig + (joints[0] - p0) @ R0.T, atol=1e-5)
    assert frame.camera_pose["frame"] == "rig"


class CoveredSource:
    """``inner``'s frames, black: a camera whose view is covered (it sees nobody)."""

    def __init__(self, inner):
        self.inner, self.name = inner, f"{inner.name} (covered)"
        self.size, self.fps, self.is_live = inner.size, getattr(inner, "fps", None), inner.is_live
        self.frame_count = getattr(inner, "frame_count", None)

    def frames(self):
        for frame in self.inner.frames():
            frame.image = np.zeros_like(frame.image)
            yield frame

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("refine, within", [(True, 0.02), (False, 0.04)])
def test_a_person_only_another_camera_sees_is_lifted_there_and_published_in_camera_0s_frame(tmp_path, refine, within):
    """Camera 0 covered, camera 1 (the stereo copy) sees the person: they are lifted and fitted
    from camera 1 and published in camera 0's frame, where their body, moved back into camera
    1, projects onto their keypoints there (within 2 % of their size fitted, 4 % the lift alone
    with --no-refine; measured 0.6-0.8 % and 1.4-1.8 %); their camera-0 pixel arrays are gone."""
    from engines.body.body_model import BodyModel
    from engines.body.rotations import axis_angle_to_matrix
    from streamer.multi_view import VIEW_ONLY_IDS

    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    rig = str(tmp_path / "stereo.yaml")
    dx = write_stereo_rig(rig, camera, 0.3, 3.5)
    sources = SynchronisedSources([CoveredSource(VideoFileSource(CLIP)), ShiftedSource(VideoFileSource(CLIP), dx)])
    capture = Capture()
    pipeline, _, _ = build_pipeline(_config(rig, tmp_path, max_frames=12, refine=refine), source=sources,
                                    extra_stages=[capture])
    assert pipeline.run(handle_signals=False).frames_out == 12
    people = [(i, tid, a) for i, frame in enumerate(capture.frames) for tid, a in frame]
    assert people and all(tid >= VIEW_ONLY_IDS for _, tid, _ in people), [tid for _, tid, _ in people]
    bodies = [(i, tid, a) for i, tid, a in people if "poses" in a]
    assert len(bodies) >= 4, "the person should be published from camera 1"
    body = BodyModel.load()
    for i, tid, a in bodies:
        assert KEYPOINTS not in a and "box_xyxy" not in a and a[VIEWS_KEY][0].any()
        with torch.no_grad():
            points = body(axis_angle_to_matrix(torch.from_numpy(a["poses"]).view(1, 24, 3)), torch.from_numpy(a["betas"])[None],
                          torch.from_numpy(a["trans"])[None], keypoints="blazepose33").keypoints["blazepose33"][0].numpy()
        in_1 = points - np.array([0.3, 0.0, 0.0])  # camera 1 is 0.3 m to camera 0's right
        px = camera.project(in_1)
        kp = a[VIEWS_KEY][0]
        ok = kp[:, 2] > 0.5
        size = np.ptp(kp[ok, :2], axis=0).max()
        err = np.median(np.linalg.norm(px[ok] - kp[ok, :2], axis=-1))
        assert err < within * size, f"frame {i}: {err:.1f} px off in camera 1 (person {size:.0f} px)"


def test_a_person_two_other_cameras_see_is_given_once():
    """Three cameras in a row, 1 m apart, looking the same way; camera 0 sees nobody. P is seen
    by cameras 1 and 2, Q by camera 2 alone: P is given once (from camera 1, the first that
    sees them), Q from camera 2."""
    from types import SimpleNamespace

    from engines.body.body_model import BodyModel
    from engines.body.rotations import axis_angle_to_matrix
    from streamer.frames import Frame
    from streamer.multi_view import VIEW_ONLY, VIEW_ONLY_IDS, MultiViewKeypointsStage

    camera = assumed_camera(1280, 720)
    poses = [(np.eye(3), np.array([-1.0, 0.0, 0.0])), (np.eye(3), np.array([-2.0, 0.0, 0.0]))]
    rig = MultiViewRig([camera] * 3, ["a", "b", "c"], poses, np.eye(3), np.zeros(3))
    aa = torch.zeros(2, 24, 3)
    aa[:, 0] = torch.tensor([np.pi, 0.0, 0.0])
    with torch.no_grad():
        points = BodyModel.load()(axis_angle_to_matrix(aa), torch.zeros(2, 10), torch.tensor([[1.5, 0.2, 5.0], [3.2, 0.2, 4.0]]),
                                  keypoints="blazepose33").keypoints["blazepose33"].numpy()

    def seen_by(v, who, tid):
        kp = np.concatenate([camera.project(points[who] - np.array([float(v), 0.0, 0.0])), np.ones((33, 1))], 1)
        return SimpleNamespace(track_id=tid, score=0.9, box=np.r_[kp[:, :2].min(0), kp[:, :2].max(0)], keypoints33=kp,
                               coco17=np.zeros((17, 3)), world33=points[who] - points[who, [23, 24]].mean(0))

    people = [[], [seen_by(1, 0, 4)], [seen_by(2, 1, 8), seen_by(2, 0, 6)]]
    trackers = [SimpleNamespace(process=lambda image, index, found=found: found, close=lambda: None) for found in people]
    stage = MultiViewKeypointsStage(trackers, rig)
    frame = Frame(index=0, image=np.zeros((720, 1280, 3), np.uint8), capture_time=0.0, source_size=(1280, 720))
    frame.views = [frame, frame, frame]
    out = stage.process(frame)
    assert sorted((p.track_id, p.handover[VIEW_ONLY]) for p in out.persons) == [(VIEW_ONLY_IDS + 4, 1),
                                                                               (2 * VIEW_ONLY_IDS + 8, 2)]
    assert stage.view_only == [1, 1] and stage.unmatched == [1, 2]
    p = next(p for p in out.persons if p.handover[VIEW_ONLY] == 1)
    # Camera 2's keypoints of P join them, in the order of the rig seen from camera 1 (0, 2).
    assert not p.arrays[VIEWS_KEY][0].any() and np.allclose(p.arrays[VIEWS_KEY][1], people[2][1].keypoints33, atol=1e-3)


def test_a_person_two_other_cameras_see_is_placed_by_both(tmp_path):
    """Three cameras, camera 0 covered; cameras 1 and 2 (1 m and 1.3 m to its right) are the
    clip and its copy shifted by the disparity of a scene 3.5 m away: the person they both see
    is fitted from camera 1 with camera 2 as its other view, so they stand 3.5 m away (one
    camera alone puts them 5.5-7 m away), published in camera 0's frame with their keypoints
    in both cameras."""
    from streamer.multi_view import VIEW_ONLY_IDS

    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    dx = round(camera.fx * 0.3 / 3.5)
    scene = camera.fx * 0.3 / dx
    rig = tmp_path / "three.yaml"
    write_multi_camera_rig([RigCamera("c0", camera, np.eye(3), np.zeros(3)),
                            RigCamera("c1", camera, np.eye(3), np.array([1.0, 0.0, 0.0])),
                            RigCamera("c2", camera, np.eye(3), np.array([1.3, 0.0, 0.0]))], rig, board="virtual")
    sources = SynchronisedSources([CoveredSource(VideoFileSource(CLIP)), VideoFileSource(CLIP),
                                   ShiftedSource(VideoFileSource(CLIP), dx)])
    capture = Capture()
    config = RunConfig(source=str(CLIP), more_sources=[str(CLIP), str(CLIP)], rig=str(rig), publish=None,
                       progress=False, max_frames=14)
    pipeline, _, _ = build_pipeline(config, source=sources, extra_stages=[capture])
    assert pipeline.run(handle_signals=False).frames_out == 14
    bodies = [(i, tid, a) for i, frame in enumerate(capture.frames) for tid, a in frame if "poses" in a]
    assert bodies and all(tid // VIEW_ONLY_IDS == 1 for _, tid, _ in bodies), [tid for _, tid, _ in bodies]
    both = [(i, a) for i, _, a in bodies if a[VIEWS_KEY][0].any() and a[VIEWS_KEY][1].any()]
    assert len(both) >= len(bodies) // 2, "camera 2 should see them with camera 1"
    depths = [a["joints"][0, 2] for i, a in both if i >= 8]
    assert depths and all(abs(z - scene) < 0.3 for z in depths), (scene, depths)


def test_two_other_cameras_at_one_place_are_refused(tmp_path):
    camera = assumed_camera(1280, 720)
    path = tmp_path / "same.yaml"
    write_multi_camera_rig([RigCamera("c0", camera, np.eye(3), np.zeros(3)),
                            RigCamera("c1", camera, np.eye(3), np.array([1.0, 0.0, 0.0])),
                            RigCamera("c2", camera, np.eye(3), np.array([1.0, 0.0, 0.0]))], path, board="virtual")
    with pytest.raises(ConfigError, match="c2 sits where c1 does"):
        MultiViewRig.load(str(path), [(1280, 720)] * 3)


class CoveredAtFirst(CoveredSource):
    """``inner``'s frames, black for the first ``frames``: a camera uncovered during the run."""

    def __init__(self, inner, frames: int):
        super().__init__(inner)
        self.covered = frames

    def frames(self):
        for i, frame in enumerate(self.inner.frames()):
            if i < self.covered:
                frame.image = np.zeros_like(frame.image)
            yield frame


def test_a_person_keeps_one_id_when_camera_0_starts_to_see_them(tmp_path):
    """Camera 0 covered for the first 10 frames, then uncovered; camera 1 sees the man all
    along: he is published from camera 1 first (a view-only person), then from camera 0, under
    one id throughout (before, his id changed to camera 0's when it saw him)."""
    from streamer.multi_view import VIEW_ONLY_IDS

    source = VideoFileSource(CLIP)
    camera = assumed_camera(*source.size)
    source.close()
    rig = str(tmp_path / "stereo.yaml")
    dx = write_stereo_rig(rig, camera, 0.3, 3.5)
    sources = SynchronisedSources([CoveredAtFirst(VideoFileSource(CLIP), 10), ShiftedSource(VideoFileSource(CLIP), dx)])
    capture = Capture()
    pipeline, _, _ = build_pipeline(_config(rig, tmp_path, max_frames=22, refine=False), source=sources,
                                    extra_stages=[capture])
    assert pipeline.run(handle_signals=False).frames_out == 22
    ids = [[tid for tid, a in frame if "poses" in a] for frame in capture.frames]
    early = [i for i, frame in enumerate(capture.frames) if i < 10 for tid, a in frame if "poses" in a]
    late = [frame for frame in capture.frames[14:] if any(KEYPOINTS in a for _, a in frame)]
    assert early and late, "published from camera 1 first, then from camera 0"
    published = {tid for frame in ids for tid in frame}
    assert published == {next(iter(published))} and next(iter(published)) >= VIEW_ONLY_IDS, ids

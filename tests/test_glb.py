"""GLB motion files (``--formats glb``): read back with pygltflib, checked by the Khronos glTF
validator (node + npm ``gltf-validator``) and loaded by three.js in headless chromium.
The JavaScript side is installed by ``npm ci --prefix tests/web`` (``.ci/run`` does it);
without node, the packages or chromium those tests skip."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engines.body.body_model import BodyModel
from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS
from streamer.cli import main
from streamer.motion_formats import CAMERA_TO_WORLD, world_motion, write_world_formats
from streamer.motion_glb import top_influences

pygltflib = pytest.importorskip("pygltflib")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CLIP = str(ROOT / "tests" / "data" / "sports2d_demo.mp4")
WEB = ROOT / "tests" / "web"
CLIP_FRAMES = 80  # the walker (track 2) enters at frame 61


@pytest.fixture(scope="module")
def body():
    return BodyModel.load().double()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The clip's first frames recorded as npz, BVH and GLB: {track_id: (npz dict, glb path)}."""
    rec = tmp_path_factory.mktemp("glb_rec")
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--max-frames", str(CLIP_FRAMES),
                 "--record", str(rec), "--formats", "npz,bvh,glb"]) == 0
    tracks = {}
    for npz in sorted(rec.glob("track_*.npz")):
        if npz.stem[len("track_"):].isdigit():
            assert npz.with_suffix(".bvh").is_file()
            tracks[int(npz.stem[len("track_"):])] = (dict(np.load(npz)), npz.with_suffix(".glb"))
    assert len(tracks) == 2 and all(glb.is_file() for _, glb in tracks.values())
    return tracks


class ArrayRows:
    """A track's frames held in memory, as the motion-format writers read them."""

    def __init__(self, poses, trans, betas_per_frame, frame_index, fps):
        self.arrays = {"poses": poses, "trans": trans, "betas": betas_per_frame, "frame_index": frame_index}
        self.betas = betas_per_frame.mean(0)
        self.fps = fps
        self.frames = len(poses)

    def blocks(self, *extra):
        yield tuple(self.arrays[n] for n in ("poses", "trans", *extra))


def accessor(gltf, index: int) -> np.ndarray:
    """An accessor's values (count, components) from the GLB's binary chunk."""
    a = gltf.accessors[index]
    view = gltf.bufferViews[a.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[a.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a.type]
    offset = (view.byteOffset or 0) + (a.byteOffset or 0)
    return np.frombuffer(gltf.binary_blob(), dtype, a.count * width, offset).reshape(a.count, width)


def read_glb(path: Path):
    """(gltf, key times (T,), {node: rotations (T, 4)}, {node: translations (T, 3)}, parents)."""
    gltf = pygltflib.GLTF2().load(str(path))
    animation = gltf.animations[0]
    rotations, translations, times = {}, {}, None
    for channel in animation.channels:
        sampler = animation.samplers[channel.sampler]
        keys = accessor(gltf, sampler.input)[:, 0]
        assert times is None or np.array_equal(keys, times)
        times = keys
        target = rotations if channel.target.path == "rotation" else translations
        target[channel.target.node] = accessor(gltf, sampler.output).astype(np.float64)
    parents = {c: i for i, node in enumerate(gltf.nodes) for c in node.children or []}
    return gltf, times, rotations, translations, parents


def node_transforms(rotations, translations, parents, k: int) -> list[np.ndarray]:
    """World 4x4 transforms of the joint nodes 0..23 at key ``k`` (parents come first)."""
    world = []
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = Rotation.from_quat(rotations[j][k]).as_matrix()
        local[:3, 3] = translations[j][k]
        world.append(world[parents[j]] @ local if j in parents else local)
    return world


def y_up(joints: np.ndarray, floor: float) -> np.ndarray:
    """The documented axis change: camera frame -> the BVH's Y-up world with its floor."""
    return np.asarray(joints, np.float64) @ CAMERA_TO_WORLD.T + np.array([0.0, -floor, 0.0])


def test_clip_glb_joints_equal_the_npz_joints_in_the_y_up_world(recording, body):
    for track_id, (npz, path) in recording.items():
        gltf, times, rotations, translations, parents = read_glb(path)
        # 24 joint nodes with SMPL's names and tree, one skin over them, the body's mesh.
        assert [n.name for n in gltf.nodes[:24]] == list(SMPL24_NAMES)
        assert [parents.get(j, -1) for j in range(24)] == list(SMPL24_PARENTS)
        assert gltf.skins[0].joints == list(range(24))
        mesh_node = next(n for n in gltf.nodes if n.mesh is not None)
        assert mesh_node.skin == 0
        assert gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION].count == body.num_vertices
        # Keys at the source frame times, the same floor as the BVH.
        fps = float(npz["mocap_framerate"])
        np.testing.assert_allclose(times, (npz["frame_index"] - npz["frame_index"][0]) / fps, atol=1e-6)
        floor = world_motion(npz["poses"], npz["trans"], npz["betas"], body).floor
        assert gltf.scenes[0].extras["smplstream"]["floor_m"] == pytest.approx(floor, abs=1e-9)
        # q and -q are one rotation: neighbouring keys share a hemisphere, so players
        # interpolate the short way round.
        for j in range(24):
            assert (np.einsum("tc,tc->t", rotations[j][1:], rotations[j][:-1]) >= 0).all(), SMPL24_NAMES[j]
        for k in (0, len(times) // 2, len(times) - 1):
            got = np.stack([m[:3, 3] for m in node_transforms(rotations, translations, parents, k)])
            err = np.abs(got - y_up(npz["joints"][k], floor)).max()
            assert err < 1e-4, (track_id, k, err)


def test_inverse_bind_matrices_are_the_mean_shape_rest_joints(recording, body):
    npz, path = recording[min(recording)]
    gltf = pygltflib.GLTF2().load(str(path))
    ibm = accessor(gltf, gltf.skins[0].inverseBindMatrices).reshape(24, 4, 4).transpose(0, 2, 1)  # column-major
    with torch.no_grad():
        rest = body.rest_joints(torch.from_numpy(npz["betas"].astype(np.float64))[None])[0].numpy()
    np.testing.assert_allclose(ibm[:, :3, :3], np.tile(np.eye(3), (24, 1, 1)), atol=1e-7)
    np.testing.assert_allclose(ibm[:, :3, 3], -rest, atol=1e-6)


def test_skinned_mesh_follows_the_body_model(body, tmp_path):
    """The GLB's skin, evaluated as glTF defines it (joint world transform x inverse bind
    matrix, weighted), gives the body model's posed mesh in the Y-up world (without SMPL's
    pose correctives, which glTF cannot hold, and with 4 influences per vertex)."""
    from test_motion_formats import walking_motion

    poses, trans, betas = walking_motion(T=10, seed=3)
    betas = np.tile(betas.mean(0), (10, 1))  # one shape: the skeleton is the bind pose's
    rows = ArrayRows(poses, trans, betas, np.arange(10) * 2, 30.0)  # every other source frame
    (path,) = write_world_formats(rows, tmp_path / "walk", ("glb",), body, include_betas=False)
    gltf, times, rotations, translations, parents = read_glb(path)
    np.testing.assert_allclose(times, np.arange(10) * 2 / 30.0, atol=1e-6)
    attributes = gltf.meshes[0].primitives[0].attributes
    rest_vertices = accessor(gltf, attributes.POSITION).astype(np.float64)
    joints = accessor(gltf, attributes.JOINTS_0).astype(np.int64)
    weights = accessor(gltf, attributes.WEIGHTS_0).astype(np.float64)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    ibm = accessor(gltf, gltf.skins[0].inverseBindMatrices).reshape(24, 4, 4).transpose(0, 2, 1)
    floor = world_motion(poses, trans, betas, body).floor
    with torch.no_grad():
        expected = body(torch.from_numpy(poses), torch.from_numpy(betas), torch.from_numpy(trans),
                        return_vertices=True, pose_correctives=False).vertices.numpy()
    homogeneous = np.concatenate([rest_vertices, np.ones((len(rest_vertices), 1))], axis=1)
    for k in (0, 9):
        skin = np.stack([m @ b for m, b in zip(node_transforms(rotations, translations, parents, k), ibm)])
        per_joint = np.einsum("jab,vb->vja", skin[:, :3], homogeneous)  # (V, 24, 3)
        got = np.einsum("vi,vic->vc", weights, np.take_along_axis(per_joint, joints[:, :, None], axis=1))
        err = np.linalg.norm(got - y_up(expected[k], floor), axis=1)
        # Most vertices have at most 4 joints (exact); the few hundred with more move by mm.
        assert np.median(err) < 1e-5 and err.max() < 0.02, (np.median(err), err.max())


def test_top_influences_keep_the_four_largest_weights():
    weights = np.array([[0.1, 0.5, 0.05, 0.2, 0.15, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    joints, w = top_influences(weights)
    assert joints.tolist() == [[1, 3, 4, 0], [2, 0, 0, 0]]
    np.testing.assert_allclose(w, [[0.5 / 0.95, 0.2 / 0.95, 0.15 / 0.95, 0.1 / 0.95], [1, 0, 0, 0]], rtol=1e-6)


def _validator_ready() -> bool:
    return shutil.which("node") is not None and (WEB / "node_modules" / "gltf-validator").is_dir()


@pytest.mark.skipif(not _validator_ready(), reason="needs node and `npm ci --prefix tests/web` (gltf-validator)")
def test_clip_glb_passes_the_khronos_validator(recording):
    paths = [str(glb) for _, glb in recording.values()]
    out = subprocess.run(["node", str(WEB / "validate_glb.mjs"), *paths], capture_output=True, text=True,
                         timeout=120, check=True)
    reports = json.loads(out.stdout)
    assert len(reports) == len(paths)
    for entry in reports:
        report = entry["report"]
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
        assert report["info"]["hasSkins"] and report["info"]["animationCount"] == 1
        assert report["info"]["maxInfluences"] == 4


def _browser_ready() -> bool:
    from tools.glb_browser import BROWSERS, THREE

    return any(shutil.which(b) for b in BROWSERS) and (THREE / "build" / "three.module.js").is_file()


@pytest.mark.skipif(not _browser_ready(), reason="needs chromium and `npm ci --prefix tests/web` (three.js)")
def test_clip_glb_plays_in_threejs_in_headless_chromium(recording):
    from tools.glb_browser import load_in_browser

    ids = sorted(recording)
    frame = int(recording[ids[-1]][0]["frame_index"][len(recording[ids[-1]][0]["frame_index"]) // 2])
    result = load_in_browser([recording[t][1] for t in ids], frame, width=640, height=360)
    assert "error" not in result, result.get("error")
    for track_id, page in zip(ids, result["files"]):
        npz, _ = recording[track_id]
        fi, fps = npz["frame_index"], float(npz["mocap_framerate"])
        assert page["skinnedMesh"] and page["vertices"] == 13718
        assert page["bones"] == list(SMPL24_NAMES)
        assert page["animations"] == 1 and page["tracks"] == 48
        assert page["duration"] == pytest.approx((fi[-1] - fi[0]) / fps, abs=1e-5)
        # three.js's own evaluation of the animation at that frame gives the npz's joints.
        if frame in fi:
            row = list(fi).index(frame)
            floor = pygltflib.GLTF2().load(str(recording[track_id][1])).scenes[0].extras["smplstream"]["floor_m"]
            assert np.abs(np.array(page["joints"]) - y_up(npz["joints"][row], floor)).max() < 1e-4
    # The page drew the bodies (WebGL through SwiftShader): the image is not just background.
    assert "renderError" not in result, result.get("renderError")
    import cv2

    image = cv2.imdecode(np.frombuffer(result["png"], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)
    bright = (image.astype(int).sum(axis=2) > 3 * 120).mean()  # the grey bodies on a dark background
    assert bright > 0.005, bright

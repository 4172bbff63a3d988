"""Camera models, camera files, torch projection and rig files."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from calibration.camera import DEFAULT_HFOV_DEG, Camera, CameraError, assumed_camera
from calibration.camera_file import camera_note, camera_or_assumed, load_camera, load_camera_metadata, save_camera
from calibration.fileio import FileFormatError
from calibration.rig import Rig, RigError, load_rig, save_rig
from calibration.synthetic import reference_fisheye, reference_pinhole
from calibration.synthetic import reference_strong_fisheye as strong_fisheye
from calibration.torch_projection import project_points

cv2.setNumThreads(1)
torch.set_num_threads(1)


def rational_pinhole() -> Camera:
    K = np.array([[700.0, 0.0, 640.0], [0.0, 701.0, 355.0], [0.0, 0.0, 1.0]])
    return Camera("pinhole", 1280, 720, K, [0.2, -0.05, 0.001, 0.002, 0.01, 0.3, -0.04, 0.02, 0.001, -0.0005, 0.0008, 0.0002])


CAMERAS = {
    "pinhole": reference_pinhole,
    "pinhole-rational-prism": rational_pinhole,
    "fisheye": reference_fisheye,
    "fisheye-strong": strong_fisheye,
}


def random_points(cam: Camera, n: int, rng: np.random.Generator, max_angle_deg: float = 60.0) -> np.ndarray:
    """Points in front of ``cam`` that land inside its image."""
    pts = []
    while len(pts) < n:
        d = rng.normal(size=3)
        d[2] = abs(d[2]) + 0.3
        d /= np.linalg.norm(d)
        if math.degrees(math.acos(d[2])) > max_angle_deg:
            continue
        p = d * rng.uniform(0.5, 5.0)
        uv = cam.project(p)
        if np.isfinite(uv).all() and 0 <= uv[0] < cam.width and 0 <= uv[1] < cam.height:
            pts.append(p)
    return np.array(pts)


# --- projection & unprojection ----------------------------------------------------------------
@pytest.mark.parametrize("name", CAMERAS)
def test_project_unproject_round_trip(name):
    cam = CAMERAS[name]()
    rng = np.random.default_rng(1)
    pts = random_points(cam, 300, rng, max_angle_deg=80.0 if cam.model == "fisheye" else 45.0)
    uv = cam.project(pts)
    rays = cam.unproject(uv)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(rays, pts / np.linalg.norm(pts, axis=1, keepdims=True), atol=1e-8)
    # and pixel -> ray -> pixel over the whole image
    grid = np.stack(np.meshgrid(np.linspace(0, cam.width - 1, 17), np.linspace(0, cam.height - 1, 13)), -1)
    back = cam.project(cam.unproject(grid))
    ok = np.isfinite(back).all(-1)
    assert ok.all()
    np.testing.assert_allclose(back[ok], grid[ok], atol=1e-6)


def test_fisheye_unproject_beyond_90_degrees():
    cam = strong_fisheye()
    assert reference_fisheye().fov_deg()[0] == pytest.approx(156.9, abs=0.1)
    assert cam.fov_deg()[0] == pytest.approx(175.7, abs=0.1)
    corner_ray = cam.unproject(np.array([0.0, 0.0]))
    assert corner_ray[2] < 0  # the image corner sees behind the camera plane
    assert math.degrees(math.acos(corner_ray[2])) > 90
    # a pinhole image of such a ray does not exist: normalised coordinates are NaN, not garbage
    assert np.isnan(cam.undistort_points(np.array([0.0, 0.0]))).all()
    # the torch projection takes it back to the corner
    uv = cam.project_torch(torch.tensor(corner_ray, dtype=torch.float64))
    np.testing.assert_allclose(uv.numpy(), [0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("name", CAMERAS)
def test_undistort_points_normalised_and_to_ideal_pinhole(name):
    cam = CAMERAS[name]()
    rng = np.random.default_rng(2)
    pts = random_points(cam, 200, rng, max_angle_deg=60.0 if cam.model == "fisheye" else 40.0)
    uv = cam.project(pts)
    xy = cam.undistort_points(uv)
    np.testing.assert_allclose(xy, pts[:, :2] / pts[:, 2:], atol=1e-8)
    kp = np.concatenate([uv, rng.uniform(0.01, 1, (len(uv), 1))], axis=1)
    norm = cam.normalize_keypoints(kp.reshape(10, 20, 3))
    np.testing.assert_allclose(norm[..., :2].reshape(-1, 2), xy, atol=1e-12)
    np.testing.assert_array_equal(norm[..., 2].reshape(-1), kp[:, 2])
    ideal = cam.ideal_pinhole(balance=0.5)
    assert not ideal.is_distorted
    np.testing.assert_allclose(cam.undistort_points(uv, ideal.K), ideal.project(pts), atol=1e-6)


def test_missing_and_behind_points_are_nan():
    cam = reference_pinhole()
    out = cam.project(np.array([[0, 0, -1.0], [0.1, 0.1, 1.0], [np.nan, 0, 1]]))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all() and np.isnan(out[2]).all()
    und = cam.normalize_keypoints(np.array([[np.nan, np.nan, 0.0], [320.0, 240.0, 0.9], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(und[[0, 2]], 0.0)  # missing stays missing, without NaN
    assert und[1, 2] == 0.9 and np.isfinite(und[1]).all()
    assert np.isnan(cam.normalize_keypoints(np.array([np.nan, 1.0]))).all()
    # a fisheye point with no pinhole image (beyond 90 degrees) becomes missing
    fish = strong_fisheye()
    out = fish.normalize_keypoints(np.array([[0.0, 0.0, 0.8], [fish.cx, fish.cy, 0.7]]))
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1], [0.0, 0.0, 0.7], atol=1e-12)


def test_undistort_image_matches_point_undistortion():
    cam = reference_fisheye()
    img = np.zeros((cam.height, cam.width), np.uint8)
    p = np.array([0.3, -0.2, 1.0])
    u, v = np.rint(cam.project(p)).astype(int)
    cv2.circle(img, (int(u), int(v)), 3, 255, -1)
    ideal = cam.ideal_pinhole(balance=0.0)
    und = cam.undistort_image(img, ideal)
    assert und.shape == img.shape
    ys, xs = np.nonzero(und > 128)
    expected = cam.undistort_points(np.array([u, v], dtype=float), ideal.K)
    assert abs(xs.mean() - expected[0]) < 1.0 and abs(ys.mean() - expected[1]) < 1.0
    # maps are cached per target
    assert cam.undistortion_maps(ideal)[0] is cam.undistortion_maps(ideal)[0]
    with pytest.raises(ValueError, match="scaled"):
        cam.undistort_image(np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("name", CAMERAS)
def test_scaled_camera_sees_resized_pixels(name):
    cam = CAMERAS[name]()
    half = cam.scaled(cam.width // 2, cam.height // 2)
    pts = random_points(cam, 50, np.random.default_rng(3))
    # resizing by 1/2 maps pixel centres x -> (x + 0.5) / 2 - 0.5
    np.testing.assert_allclose(half.project(pts), (cam.project(pts) + 0.5) / 2 - 0.5, atol=1e-9)
    assert half.scaled(cam.width, cam.height).allclose(cam)


def test_assumed_camera():
    cam = assumed_camera(1920, 1080)
    assert cam.model == "pinhole" and not cam.is_distorted
    assert cam.fov_deg()[0] == pytest.approx(DEFAULT_HFOV_DEG, abs=1e-6)
    assert (cam.cx, cam.cy) == (959.5, 539.5) and cam.fx == cam.fy
    assert assumed_camera(640, 480, hfov_deg=90).fx == pytest.approx(320.0)
    with pytest.raises(ValueError, match="hfov_deg"):
        assumed_camera(640, 480, hfov_deg=0)


def test_camera_or_assumed(tmp_path):
    cam, assumed = camera_or_assumed(None, 1280, 720)
    assert assumed and cam.width == 1280
    assert "assuming" in camera_note(cam, assumed) and "63 deg" in camera_note(cam, assumed)
    path = tmp_path / "cam.yaml"
    save_camera(reference_pinhole(), path)
    cam, assumed = camera_or_assumed(path, 1280, 960)
    assert not assumed and cam.allclose(reference_pinhole().scaled(1280, 960))
    with pytest.raises(FileFormatError, match="aspect ratio"):
        camera_or_assumed(path, 1280, 720)


# --- torch projection -------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAMERAS)
def test_torch_projection_matches_opencv(name):
    cam = CAMERAS[name]()
    pts = random_points(cam, 200, np.random.default_rng(4), max_angle_deg=85.0)
    zero = np.zeros(3)
    if cam.model == "fisheye":
        ref, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, cam.K, cam.dist)
    else:
        ref, _ = cv2.projectPoints(pts, zero, zero, cam.K, cam.dist)
    ref = ref.reshape(-1, 2)
    out64 = cam.project_torch(torch.tensor(pts, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out64, ref, atol=1e-7)
    out32 = cam.project_torch(torch.tensor(pts, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out32, ref, atol=2e-2)


def test_torch_projection_batched_cameras_and_gradients():
    cams = [reference_pinhole(), rational_pinhole()]
    rng = np.random.default_rng(5)
    pts = np.stack([random_points(c, 17, rng) for c in cams])  # (2, 17, 3)
    K = torch.tensor(np.stack([c.K for c in cams]))
    dist = torch.tensor(np.stack([np.pad(c.dist, (0, 12 - c.dist.size)) for c in cams]))
    P = torch.tensor(pts, requires_grad=True)
    uv = project_points(P, K, dist, "pinhole")
    assert uv.shape == (2, 17, 2)
    for b, c in enumerate(cams):
        np.testing.assert_allclose(uv[b].detach().numpy(), c.project(pts[b]), atol=1e-7)
    # one camera broadcast over (B, T, J, 3)
    many = torch.tensor(pts[0]).expand(3, 4, 17, 3)
    assert project_points(many, K[0], dist[0], "pinhole").shape == (3, 4, 17, 2)
    # analytic gradient agrees with finite differences (double precision)
    assert torch.autograd.gradcheck(lambda p: project_points(p, K, dist, "pinhole"), (P,))
    fish = strong_fisheye()
    Kf, Df = fish.torch_params(torch.float64)
    Q = torch.tensor(random_points(fish, 20, rng, 85.0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: project_points(q, Kf, Df, "fisheye"), (Q,))


def test_torch_fisheye_gradient_finite_on_axis():
    fish = reference_fisheye()
    Kf, Df = fish.torch_params(torch.float64)
    P = torch.tensor([[0.0, 0.0, 2.0], [1e-12, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    uv = project_points(P, Kf, Df, "fisheye")
    uv.sum().backward()
    assert torch.isfinite(P.grad).all()
    np.testing.assert_allclose(uv[0].detach().numpy(), [fish.cx, fish.cy])
    # on the axis d u / d x = fx / z
    assert P.grad[0, 0].item() == pytest.approx(fish.fx / 2.0)


# --- camera files -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAMERAS)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_camera_file_round_trip(tmp_path, name, suffix):
    cam = CAMERAS[name]()
    path = tmp_path / f"cam{suffix}"
    save_camera(cam, path, metadata={"rms_reprojection_error": 0.25, "board": "9x6"})
    back = load_camera(path)
    assert back.allclose(cam, rtol=0, atol=0)
    meta = load_camera_metadata(path)
    assert meta["rms_reprojection_error"] == 0.25 and meta["board"] == "9x6"


def test_yaml_written_by_us_reads_in_raw_filestorage(tmp_path):
    cam = reference_fisheye()
    path = tmp_path / "cam.yaml"
    save_camera(cam, path)
    fs = cv2.FileStorage(str(path), cv2.FileStorage_READ)
    assert fs.getNode("model").string() == "fisheye"
    assert int(fs.getNode("image_width").real()) == 640 and int(fs.getNode("image_height").real()) == 480
    np.testing.assert_array_equal(fs.getNode("camera_matrix").mat(), cam.K)
    np.testing.assert_array_equal(fs.getNode("dist_coeffs").mat().reshape(-1), cam.dist)
    fs.release()


@pytest.mark.parametrize("dist_shape", [(5, 1), (1, 5)])
def test_yaml_written_by_raw_filestorage_reads_in_us(tmp_path, dist_shape):
    K = np.array([[812.5, 0, 640.25], [0, 811.0, 359.75], [0, 0, 1]])
    D = np.array([-0.21, 0.05, 0.001, -0.0007, -0.004]).reshape(dist_shape)
    path = tmp_path / "opencv.yml"
    fs = cv2.FileStorage(str(path), cv2.FileStorage_WRITE)
    fs.write("image_width", 1280)
    fs.write("image_height", 720)
    fs.write("camera_matrix", K)
    fs.write("dist_coeffs", D)
    fs.write("model", "pinhole")
    fs.write("avg_reprojection_error", 0.31)
    fs.release()
    cam = load_camera(path)
    assert cam.model == "pinhole" and cam.size == (1280, 720)
    np.testing.assert_array_equal(cam.K, K)
    np.testing.assert_array_equal(cam.dist, D.reshape(-1))


def test_opencv4_style_yaml_and_plain_lists(tmp_path):
    # OpenCV 4 writes "%YAML:1.0"; hand-written files may use plain lists
    path = tmp_path / "cam.yaml"
    path.write_text(
        "%YAML:1.0\n---\nmodel: fisheye\nimage_width: 1920\nimage_height: 1080\n"
        "camera_matrix: [ 600., 0., 960., 0., 600., 540., 0., 0., 1. ]\n"
        "dist_coeffs: [ 0.01, -0.002, 0.0003, 0. ]\n"
    )
    cam = load_camera(path)
    assert cam.model == "fisheye" and cam.fx == 600.0 and cam.dist[1] == -0.002
    # cv2's own JSON flavour
    jpath = tmp_path / "cv.json"
    fs = cv2.FileStorage(str(jpath), cv2.FileStorage_WRITE)
    for k, v in [("model", "fisheye"), ("image_width", 1920), ("image_height", 1080), ("camera_matrix", cam.K),
                 ("dist_coeffs", cam.dist.reshape(1, -1))]:
        fs.write(k, v)
    fs.release()
    assert load_camera(jpath).allclose(cam)
    # and our JSON is plain JSON
    ours = tmp_path / "ours.json"
    save_camera(cam, ours)
    data = json.loads(ours.read_text())
    assert data["camera_matrix"][0] == [600.0, 0.0, 960.0] and data["dist_coeffs"] == [0.01, -0.002, 0.0003, 0.0]


GOOD = {
    "model": "pinhole",
    "image_width": 640,
    "image_height": 480,
    "camera_matrix": [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]],
    "dist_coeffs": [0.1, -0.05, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"model": None}, "'model' is missing"),
        ({"model": "orthographic"}, "model: must be one of"),
        ({"image_width": -640}, "image_width: must be positive"),
        ({"image_height": 480.5}, "image_height: must be an integer"),
        ({"image_width": "wide"}, "image_width: must be an integer"),
        ({"camera_matrix": None}, "'camera_matrix' is missing"),
        ({"camera_matrix": [[500.0, 0.0], [0.0, 500.0]]}, "camera_matrix: must have 3x3 values"),
        ({"camera_matrix": [[-500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]}, "camera_matrix: focal"),
        ({"camera_matrix": [[500.0, 2.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]}, "camera_matrix: must be"),
        ({"dist_coeffs": [0.1, 0.2, 0.3]}, "dist_coeffs: pinhole needs"),
        ({"model": "fisheye"}, "dist_coeffs: fisheye needs exactly 4"),
        ({"dist_coeffs": "none"}, "dist_coeffs: must be a matrix"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_malformed_camera_files_name_the_field(tmp_path, change, field, suffix):
    fields = {**GOOD, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    path = tmp_path / f"bad{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(fields))
    else:
        lines = ["%YAML:1.0", "---"]
        for k, v in fields.items():
            if isinstance(v, list) and v and isinstance(v[0], list):
                v = [x for row in v for x in row] if len(v) == 3 and all(len(r) == 3 for r in v) else v
            lines.append(f"{k}: {json.dumps(v)}")
        path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError) as e:
        load_camera(path)
    msg = str(e.value)
    assert field in msg and str(path) in msg and "\n" not in msg


def test_unreadable_camera_files(tmp_path):
    with pytest.raises(FileFormatError, match="file not found"):
        load_camera(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("%YAML:1.0\n---\nmodel: [pinhole\n")
    with pytest.raises(FileFormatError, match="cannot parse YAML"):
        load_camera(bad)
    with pytest.raises(FileFormatError, match="not valid JSON"):
        (tmp_path / "b.json").write_text("{model: pinhole")
        load_camera(tmp_path / "b.json")
    with pytest.raises(FileFormatError, match="unknown file type"):
        load_camera(tmp_path / "cam.txt")
    with pytest.raises(CameraError, match="image_width"):
        Camera("pinhole", 0, 480, np.eye(3), [])


# --- rigs -----------------------------------------------------------------------------------------
def test_rig_angles_and_transforms():
    rig = Rig.from_angles(pitch_down_deg=40, translation=(0.0, -0.08, 0.05))
    assert rig.pitch_down_deg() == pytest.approx(40.0)
    # the camera looks down and forward in the head frame
    axis = rig.optical_axis
    assert axis[1] > 0 and axis[2] > 0
    # a point 1 m along the optical axis
    p_head = rig.camera_to_head(np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(p_head, rig.translation + axis)
    pts = np.random.default_rng(6).normal(size=(5, 7, 3))
    np.testing.assert_allclose(rig.head_to_camera(rig.camera_to_head(pts)), pts, atol=1e-12)
    yaw = Rig.from_angles(yaw_right_deg=30)
    assert yaw.optical_axis[0] > 0
    roll = Rig.from_angles(roll_deg=10)
    assert roll.rotation[1, 0] > 0  # camera x axis dips to the right
    R = rig.rotations_camera_to_head(np.eye(3)[None].repeat(4, 0))
    np.testing.assert_allclose(R[2], rig.rotation)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_rig_file_round_trip(tmp_path, suffix):
    rig = Rig.from_angles(35, 5, -3, translation=(0.01, -0.09, 0.06), camera_file="gopro.yaml")
    path = tmp_path / f"rig{suffix}"
    save_rig(rig, path)
    back = load_rig(path)
    np.testing.assert_allclose(back.rotation, rig.rotation, atol=1e-12)
    np.testing.assert_allclose(back.translation, rig.translation, atol=1e-12)
    assert back.camera_path(path) == tmp_path / "gopro.yaml"
    if suffix == ".yaml":
        fs = cv2.FileStorage(str(path), cv2.FileStorage_READ)
        np.testing.assert_allclose(fs.getNode("rotation").mat(), rig.rotation)
        fs.release()


def test_rig_rotation_vector_and_errors(tmp_path):
    p = tmp_path / "rig.json"
    p.write_text(json.dumps({"rig": "head_mounted", "rotation_vector": [0.5, 0, 0], "translation": [0, -0.1, 0.05]}))
    rig = load_rig(p)
    assert rig.pitch_down_deg() == pytest.approx(-math.degrees(0.5))
    cases = [
        ({"rig": "head_mounted", "translation": [0, 0, 0]}, "exactly one of 'rotation'"),
        ({"rig": "helmet", "rotation_vector": [0, 0, 0], "translation": [0, 0, 0]}, "rig: must be one of"),
        ({"rig": "head_mounted", "rotation": [[1, 0, 0], [0, 2, 0], [0, 0, 1]], "translation": [0, 0, 0]},
         "rotation: not a rotation matrix"),
        ({"rig": "head_mounted", "rotation": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], "translation": [0, 0, 0]},
         "rotation: is a reflection"),
        ({"rig": "head_mounted", "rotation_vector": [0, 0, 0], "translation": [0, -80, 50]}, "not millimetres"),
        ({"rig": "head_mounted", "rotation_vector": [0, 0, 0], "translation": [0, 0]}, "translation: must have 3"),
    ]
    for fields, msg in cases:
        p.write_text(json.dumps(fields))
        with pytest.raises(FileFormatError, match=msg):
            load_rig(p)
    with pytest.raises(RigError, match="translation"):
        Rig(np.eye(3), [0, 0, 1.0])

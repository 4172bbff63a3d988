"""The lifter with the bundled weights: synthetic views of known poses, the `lift` command on
real keypoints from the test clip, bad keypoint files, and weights that must be refused."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix
from engines.lifting.lifter import Lifter, mirror_keypoints, mirror_rotations
from engines.diffusion.weights import LifterWeightsError, load_denoiser
from engines.training.metrics import joint_errors
from engines.training.synthetic_views import ViewConfig, make_views

ROOT = Path(__file__).resolve().parents[1]
KEYPOINTS = ROOT / "tests" / "data" / "keypoints" / "sports2d_walker_blazepose33.npz"
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def walking_poses(n: int) -> torch.Tensor:
    """A simple walk cycle: hips and knees swing, arms counter-swing (axis-angle, SMPL)."""
    phase = torch.linspace(0, 2 * np.pi, n)
    poses = torch.zeros(n, 24, 3)
    poses[:, 1, 0] = 0.5 * torch.sin(phase)  # left hip
    poses[:, 2, 0] = -0.5 * torch.sin(phase)  # right hip
    poses[:, 4, 0] = 0.6 * (1 + torch.cos(phase)) / 2  # left knee
    poses[:, 5, 0] = 0.6 * (1 - torch.cos(phase)) / 2
    poses[:, 16, 2] = -1.2  # arms down from the T-pose
    poses[:, 17, 2] = 1.2
    poses[:, 16, 0] = -0.4 * torch.sin(phase)
    poses[:, 17, 0] = 0.4 * torch.sin(phase)
    return poses.view(n, 72)


def test_lifts_clean_synthetic_views_of_a_walk(body):
    g = torch.Generator().manual_seed(3)
    clean = ViewConfig(jitter_frac=(0.0, 0.0), outlier_prob=0.0, drop_prob_max=0.0, limb_drop_prob=0.0,
                       coco_only_prob=0.0, inside_prob=1.0, person_height_frac=(0.4, 0.8))
    views = make_views(body, walking_poses(32), clean, g, betas=torch.zeros(32, 10))
    result = Lifter.load(body=body, num_steps=4, num_samples=4).lift(views.keypoints)
    errors = joint_errors(result.joints, views.joints_cam)
    assert result.valid.all()
    assert errors["pa_mpjpe_mm"] < 70, errors
    depth_err = (result.trans[:, 2] - views.trans_cam[:, 2]).abs() / views.trans_cam[:, 2]
    assert depth_err.median() < 0.15
    assert (result.joints_std[:, 1:] > 0).all()


def test_mirrored_view_maps_back_to_the_same_body(body):
    """Mirror-half sampling rests on this: the body posed with ``mirror_rotations`` of a pose
    is the mirror image (camera x -> -x) of the body posed with the pose, keypoints included."""
    g = torch.Generator().manual_seed(1)
    poses = walking_poses(6).view(6, 24, 3) + 0.3 * torch.randn(6, 24, 3, generator=g)
    R = axis_angle_to_matrix(poses)
    betas = torch.zeros(6, 10)
    out = body(R, betas, keypoints="blazepose33")
    mirrored = body(mirror_rotations(R), betas, keypoints="blazepose33")
    kp = out.keypoints["blazepose33"]
    seen = torch.cat([kp[..., :2] / 3.0, torch.ones_like(kp[..., :1])], -1)  # any x, y will do
    mirrored_seen = torch.cat([mirrored.keypoints["blazepose33"][..., :2] / 3.0, torch.ones_like(kp[..., :1])], -1)
    # The bundled body is left-right symmetric (to 0.2 mm here); a wrong mirror is off by decimetres.
    assert (mirror_keypoints(seen) - mirrored_seen).abs().max() < 1e-3
    assert torch.allclose(mirror_rotations(mirror_rotations(R)), R, atol=1e-6)
    assert not torch.allclose(mirror_rotations(R), R, atol=1e-2)


def test_onnx_runtime_and_torch_backends_agree(body):
    kp = make_views(body, walking_poses(4), ViewConfig(), torch.Generator().manual_seed(0)).keypoints
    a = Lifter.load(body=body, backend="onnxruntime", seed=5).lift(kp)
    b = Lifter.load(body=body, backend="torch", seed=5).lift(kp)
    torch.testing.assert_close(a.joints, b.joints, atol=1e-3, rtol=1e-3)


def test_same_seed_same_result_and_coco_input(body):
    kp = make_views(body, walking_poses(3), ViewConfig(coco_only_prob=0.0), torch.Generator().manual_seed(1)).keypoints
    lifter = Lifter.load(body=body, seed=9)
    first = lifter.lift(kp).poses
    assert torch.equal(Lifter.load(body=body, seed=9).lift(kp).poses, first)
    from engines.body.joint_sets import COCO17_FROM_BLAZEPOSE33

    coco = lifter.lift(kp[:, list(COCO17_FROM_BLAZEPOSE33)])
    assert coco.poses.shape == (3, 72) and coco.valid.all()


def smplstream(*args):
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_lift_command_on_real_keypoints(tmp_path):
    out = tmp_path / "walker.npz"
    proc = smplstream("lift", str(KEYPOINTS), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "assuming" in proc.stderr  # no camera file: said so
    with np.load(out) as m:
        T = len(m["frame_index"])
        assert T == 59 and m["poses"].shape == (T, 72) and m["joints"].shape == (T, 24, 3)
        assert np.isfinite(m["poses"]).all() and str(m["body_model"]) == "anny-smpl"
        # She walks 4 to 10 m from the camera, upright (head above pelvis: y is down).
        assert 3.0 < np.median(m["trans"][:, 2]) < 12.0
        head_above = m["joints"][:, 15, 1] < m["joints"][:, 0, 1]
        assert head_above.mean() > 0.9
        assert (m["poses_std"] > 0).all()


def test_lift_fits_the_keypoints_by_default(tmp_path):
    """`lift` without options fits the lifts to the keypoints (and world landmarks) over time;
    --no-refine gives the per-frame lifts. Both files carry the per-frame re-projection error,
    and the fitted one is the closer and the smoother."""
    track = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"
    fitted, raw = tmp_path / "fit.npz", tmp_path / "raw.npz"
    proc = smplstream("lift", str(track), "--out", str(fitted))
    assert proc.returncode == 0, proc.stderr
    assert "fitted to the keypoints" in proc.stdout and "re-projection" in proc.stdout
    proc = smplstream("lift", str(track), "--out", str(raw), "--no-refine")
    assert proc.returncode == 0 and "fitted" not in proc.stdout, proc.stdout
    with np.load(fitted) as f, np.load(raw) as r:
        assert f["reprojection_px"].shape == f["frame_index"].shape == r["frame_index"].shape
        assert np.nanmedian(f["reprojection_px"]) < 0.8 * np.nanmedian(r["reprojection_px"])
        jerk = lambda j: np.linalg.norm(np.diff(j - j[:, :1], 2, axis=0), axis=-1).mean()  # noqa: E731
        assert jerk(f["joints"]) < 0.5 * jerk(r["joints"])


def test_lift_starts_a_new_fit_window_where_the_track_was_lost(tmp_path):
    """A recorded track found again after a while (re-identification) has a gap in its
    frame_index; the fit must start again there, not pull the body along the trajectory it
    had before the gap (it did: 0.8 % of the size before the gap, 180 % after)."""
    track = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"
    with np.load(track) as src:
        data = {k: src[k].copy() for k in src.files}
    keep = np.r_[0:50, 90:len(data["frame_index"])]  # 40 frames lost: she walks on meanwhile
    for k in ("keypoints", "world_landmarks", "frame_index", "timestamp", "score"):
        data[k] = data[k][keep]
    gap = tmp_path / "gap.npz"
    np.savez(gap, **data)
    out = tmp_path / "fit.npz"
    proc = smplstream("lift", str(gap), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as m:
        err = m["reprojection_px"]
        assert list(m["frame_index"]) == list(data["frame_index"])
    before, after = np.median(err[:50]), np.median(err[50:])
    assert after < 2.0 * before and err[50:].max() < 10 * before, (before, after, err[50:].max())


def test_world_landmarks_of_the_wrong_shape_are_a_one_line_error(tmp_path):
    track = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"
    with np.load(track) as src:
        data = {k: src[k].copy() for k in src.files}
    data["world_landmarks"] = data["world_landmarks"][:, :20]
    np.savez(tmp_path / "bad.npz", **data)
    proc = smplstream("lift", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 2 and "world_landmarks must be (T, 33, 3)" in proc.stderr, proc.stderr
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(keypoints=d["keypoints"][:, :20]), "(T, 33, 3)"),
    (lambda d: d.update(joint_set=np.str_("openpose25")), "unknown joint_set"),
    (lambda d: d["keypoints"].__setitem__((5, 3, 0), np.nan), "NaN"),
    (lambda d: d.pop("fps"), "missing fps"),
    (lambda d: d.update(image_size=np.array([0, 10])), "image_size"),
])
def test_bad_keypoint_files_are_one_line_errors(tmp_path, change, message):
    with np.load(KEYPOINTS) as src:
        data = {k: src[k].copy() for k in src.files}
    change(data)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    proc = smplstream("lift", str(bad), "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("smplstream: error:")]
    assert len(errors) == 1 and message in errors[0] and "bad.npz" in errors[0], proc.stderr
    assert not (tmp_path / "out.npz").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/smplstream-pwned",))


def test_weights_that_would_run_code_are_refused(tmp_path):
    weights = tmp_path / "denoiser.pt"
    torch.save({"x": _Exploit()}, weights)
    (tmp_path / "denoiser.json").write_text('{"config": {}}')
    with pytest.raises(LifterWeightsError, match="cannot be loaded as plain weights"):
        load_denoiser(weights)
    assert not Path("/tmp/smplstream-pwned").exists()
    with open(weights, "wb") as f:
        pickle.dump({"x": _Exploit()}, f)
    with pytest.raises(LifterWeightsError):
        load_denoiser(weights)
    assert not Path("/tmp/smplstream-pwned").exists()


@pytest.mark.parametrize("num_samples, mirror_half, per_call", [(8, True, 4), (8, False, 8), (5, True, 5)])
def test_a_compiled_sampler_is_built_for_the_samples_each_call_sends(monkeypatch, num_samples, mirror_half, per_call):
    """A compiled sampler (TensorRT) has a fixed sample count: the lifter asks for the one it
    sends per call (N/2 for the view and for its mirror), checked here on the CPU."""
    import engines.lifting.lifter as lifter_module
    from engines.diffusion.denoiser import ROTATIONS, X_DIM

    built = {}

    class FixedSampler:
        def __call__(self, cond, noise):
            assert noise.shape[1] == built["num_samples"], (noise.shape, built)
            x = torch.zeros(*noise.shape[:2], X_DIM)
            x[..., ROTATIONS] = torch.tensor([1.0, 0, 0, 0, 1.0, 0]).repeat(24)  # identity rotations
            return x

    def fake_load_sampler(backend, device, model, *, num_samples, **kwargs):
        built["num_samples"] = num_samples
        return FixedSampler()

    monkeypatch.setattr(lifter_module, "load_sampler", fake_load_sampler)
    lifter = Lifter.load(backend="torch", num_steps=2, num_samples=num_samples, mirror_half=mirror_half)
    assert built["num_samples"] == per_call == lifter.samples_per_call
    kp = torch.rand(2, 33, 3) * 0.2
    kp[..., 2] = 1.0
    assert lifter.lift(kp).valid.all()


def test_spread_temperatures_per_precision_and_per_row_with_or_without_world_landmarks(tmp_path, body):
    """int8 spreads its samples differently from float32, and rows lifted from the 2D alone
    differently from rows with the world landmarks: each takes the temperature fitted for it
    (``evaluate-lifter [--precision int8] [--world-landmarks] --calibrate``), falling back to
    the same precision's table with landmarks, then to float32's. In one lift call, each
    row's published spread is its raw spread times its own temperature."""
    import json
    import shutil

    from engines.diffusion.weights import DEFAULT_WEIGHTS

    for suffix in (".pt", ".onnx"):
        shutil.copy(DEFAULT_WEIGHTS.with_suffix(suffix), tmp_path / f"denoiser{suffix}")
    info = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert info["config"]["world_landmarks"], "the bundled network takes the world landmarks"
    for key in [k for k in info if k.startswith("spread_temperature")]:
        info.pop(key)
    info["spread_temperature"] = {"2": 3.0, "4": 2.0}
    info["spread_temperature_2d"] = {"2": 4.0}
    info["spread_temperature_int8"] = {"2": 7.0}
    (tmp_path / "denoiser.json").write_text(json.dumps(info))
    weights = tmp_path / "denoiser.pt"
    load = lambda **kw: Lifter.load(weights, body=body, backend="onnxruntime", **kw)  # noqa: E731
    scales = lambda lifter: (lifter.spread_scale, lifter.spread_scale_2d)  # noqa: E731
    assert scales(load(num_steps=2, precision="int8")) == (7.0, 7.0)  # no int8 table without landmarks
    assert scales(load(num_steps=2)) == (3.0, 4.0)
    assert scales(load(num_steps=4, precision="int8")) == (2.0, 2.0)  # no int8 table for K = 4
    assert scales(load(num_steps=2, spread_scale=1.0)) == (1.0, 1.0)  # given: for every row

    z = np.load(ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz")
    from calibration.camera import assumed_camera

    cam = assumed_camera(*[int(v) for v in z["image_size"]])
    kp = torch.from_numpy(cam.normalize_keypoints(z["keypoints"][[20, 60]].astype(np.float64)).astype(np.float32))
    world = torch.from_numpy(z["world_landmarks"][[20, 60]].astype(np.float32))
    world[1] = 0  # the second person without landmarks
    raw = load(num_steps=2, spread_scale=1.0).lift(kp, world)
    published = load(num_steps=2).lift(kp, world)  # same seed, same samples
    ratio = published.joints_std[:, 1:] / raw.joints_std[:, 1:]
    assert torch.allclose(ratio[0], torch.tensor(3.0), rtol=1e-4) and torch.allclose(ratio[1], torch.tensor(4.0), rtol=1e-4)
    assert torch.allclose(published.poses_std[1] / raw.poses_std[1], torch.tensor(4.0), rtol=1e-4)


def test_antithetic_noise_pairs_steady_the_mean_of_the_samples(body):
    """Pairs of opposite starting noise: the published mean of N samples scatters less from
    one seed to the next than with independent noise (same network, same real keypoints),
    and independent noise is exactly what ``torch.randn`` gives."""
    from engines.diffusion.sampler import draw_noise

    noise = draw_noise(2, 5, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noise[:, 3:5], -noise[:, 0:2]) and not torch.equal(noise[:, 2], -noise[:, 2])
    assert torch.equal(draw_noise(2, 5, 4, generator=torch.Generator().manual_seed(0), antithetic=False),
                       torch.randn(10, 4, generator=torch.Generator().manual_seed(0)).view(2, 5, 4))

    z = np.load(KEYPOINTS)
    from calibration.camera import assumed_camera

    cam = assumed_camera(*[int(v) for v in z["image_size"]])
    frames = z["keypoints"][::40][:6]
    kp = torch.from_numpy(cam.normalize_keypoints(frames.astype(np.float64)).astype(np.float32))

    def scatter(antithetic: bool) -> float:
        joints = torch.stack([Lifter.load(body=body, backend="torch", seed=s, antithetic=antithetic).lift(kp).joints
                              for s in range(6)])  # (seeds, frames, 24, 3)
        joints = joints - joints[..., :1, :]
        return (joints - joints.mean(0)).norm(dim=-1).mean().item()

    independent, paired = scatter(False), scatter(True)
    assert paired < 0.5 * independent, (paired, independent)  # measured 1.2 against 6.4 mm

"""The denoiser variants: the token transformer keeps the denoiser contract and exports to
ONNX; the world-landmark condition is switchable; a network grown by the world landmarks
starts as exactly the one it grew from, and a lifter built on it uses them."""

import json

import pytest
import torch

from engines.body.body_model import BodyModel
from engines.diffusion.denoiser import DenoiserConfig, TokenDenoiser, build_denoiser
from engines.diffusion.features import COND_DIM, WORLD_COND_DIM, condition_features
from engines.training.synthetic_views import ViewConfig, make_views, simulate_world_landmarks
from engines.training.train import grown_for_world_landmarks, load_grown

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def views():
    body = BodyModel.load()
    g = torch.Generator().manual_seed(3)
    poses = torch.randn(6, 72, generator=g) * 0.2
    return make_views(body, poses, ViewConfig(), g)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised gates make a fresh network ignore most inputs: perturb every weight."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def test_token_denoiser_keeps_the_contract_and_attends_to_every_keypoint(views):
    cfg = DenoiserConfig(arch="tokens", width=32, depth=2, encoder_depth=1, heads=4)
    model = _randomised(build_denoiser(cfg))
    assert isinstance(model, TokenDenoiser)
    cond = condition_features(views.keypoints)
    x = torch.randn(6, cfg.x_dim)
    t = torch.full((6,), 500)
    out = model(x, t, cond)
    assert out.shape == (6, cfg.x_dim) and torch.isfinite(out).all()
    # Rows are independent (no attention across the batch) ...
    torch.testing.assert_close(model(x[:2], t[:2], cond[:2]), out[:2], atol=1e-5, rtol=1e-5)
    # ... and moving one keypoint of one person changes that person's prediction only.
    moved = views.keypoints.clone()
    moved[0, 15, :2] += 0.05
    changed = model(x, t, condition_features(moved))
    assert (changed[0] - out[0]).abs().max() > 1e-4
    torch.testing.assert_close(changed[1:], out[1:])
    with pytest.raises(ValueError, match="unknown denoiser architecture"):
        build_denoiser(DenoiserConfig(arch="graph"))


def test_token_denoiser_exports_to_onnx_and_runs_the_same(tmp_path, views):
    pytest.importorskip("onnxscript")
    from engines.diffusion.onnx_denoiser import OrtDenoiser, export_onnx

    cfg = DenoiserConfig(arch="tokens", width=32, depth=1, encoder_depth=1)
    model = _randomised(build_denoiser(cfg))
    path = export_onnx(model, tmp_path / "tokens.onnx", fp16_weights=False)
    cond = condition_features(views.keypoints)
    x, t = torch.randn(6, cfg.x_dim), torch.randint(0, 1000, (6,))
    with torch.no_grad():
        ref = model(x, t, cond)
    torch.testing.assert_close(OrtDenoiser(path, cfg)(x, t, cond), ref, atol=1e-4, rtol=1e-4)


def test_world_landmark_condition_is_switchable(views):
    kp = views.keypoints
    assert condition_features(kp).shape == (6, COND_DIM)
    wl = simulate_world_landmarks(views.keypoints_cam, torch.Generator().manual_seed(0))
    wl[2] = 0  # this person has none
    wl[3, 5] = float("nan")  # a damaged value is dropped, not propagated
    cond = condition_features(kp, wl, world=True)
    assert cond.shape == (6, WORLD_COND_DIM) and torch.isfinite(cond).all()
    torch.testing.assert_close(cond[:, :COND_DIM], condition_features(kp))
    present = cond[:, -1]
    assert present.tolist() == [1, 1, 0, 1, 1, 1]
    assert (cond[2, COND_DIM:] == 0).all()
    # Without any landmarks the same network gets zeros and the flag 0.
    none = condition_features(kp, None, world=True)
    assert (none[:, COND_DIM:] == 0).all()
    # Re-centred between the hips whatever origin they came with.
    rows = [0, 1, 4, 5]
    shifted = condition_features(kp[rows], wl[rows] + torch.tensor([0.3, -0.2, 1.0]), world=True)
    torch.testing.assert_close(shifted, cond[rows], atol=1e-5, rtol=1e-5)


def test_world_landmark_errors_can_persist_over_frames(views):
    """frame_correlation makes the simulated errors of a sequence AR(1) series: the bone
    lengths of one body held still err alike from frame to frame (the real landmarks: 0.67),
    where independent draws do not."""
    from dataclasses import replace

    from engines.training.synthetic_views import WORLD_NOISE

    still = views.keypoints_cam[:1].expand(400, -1, -1)

    def lag_one(noise):
        wl = simulate_world_landmarks(still, torch.Generator().manual_seed(5), noise)
        wl = wl[wl.abs().sum((1, 2)) > 0]  # dropouts are zeros
        e = (wl[:, 13] - wl[:, 11]).norm(dim=-1)  # left upper arm
        e = e - e.mean()
        return float((e[:-1] * e[1:]).sum() / (e * e).sum())

    limbs = WORLD_NOISE["limbs"]
    assert abs(lag_one(limbs)) < 0.15
    assert lag_one(replace(limbs, frame_correlation=0.8)) > 0.6


def test_grown_network_starts_as_the_old_one_and_the_lifter_feeds_it(tmp_path, views):
    from engines.lifting.lifter import Lifter
    from engines.diffusion.weights import load_denoiser

    old = _randomised(build_denoiser(DenoiserConfig(width=64, depth=2)))
    grown_cfg = grown_for_world_landmarks(old.config)
    assert grown_cfg.world_landmarks and grown_cfg.cond_dim == WORLD_COND_DIM
    grown = build_denoiser(grown_cfg)
    load_grown(grown, old.state_dict())
    grown.eval()
    wl = simulate_world_landmarks(views.keypoints_cam, torch.Generator().manual_seed(0))
    x, t = torch.randn(6, 154), torch.full((6,), 250)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, condition_features(views.keypoints, wl, world=True)),
                                   old(x, t, condition_features(views.keypoints)))
    with pytest.raises(ValueError, match="do not fit"):
        load_grown(build_denoiser(DenoiserConfig(width=32, depth=2)), old.state_dict())

    # Once it has learned something from them, the lifter hands them over (mirrored for the
    # mirrored half of the samples), and lifts without them too.
    with torch.no_grad():
        grown.cond_mlp[0].weight[:, COND_DIM:].normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    torch.save({k: v.half() for k, v in grown.state_dict().items()}, tmp_path / "grown.pt")
    (tmp_path / "grown.json").write_text(json.dumps({"config": grown_cfg.to_dict()}))
    lifter = Lifter(load_denoiser(tmp_path / "grown.pt"), BodyModel.load(), num_steps=2, num_samples=4, seed=0)
    assert lifter.uses_world_landmarks
    with_wl = lifter.lift(views.keypoints, wl)
    lifter = Lifter(load_denoiser(tmp_path / "grown.pt"), BodyModel.load(), num_steps=2, num_samples=4, seed=0)
    without = lifter.lift(views.keypoints)
    assert with_wl.valid.all() and without.valid.all()
    assert (with_wl.poses - without.poses).abs().max() > 1e-3


def test_world_landmarks_come_from_the_crops_ray_into_camera_axes(views):
    """Simulated landmarks are in the frame of the ray through the hips, as the landmark
    network gives them from its crop; the condition turns them back into camera axes."""
    from engines.diffusion.features import viewing_ray_rotation, world_landmarks_to_camera
    from engines.training.synthetic_views import WorldLandmarkNoise

    exact = WorldLandmarkNoise(lateral_sd=0, depth_sd=0, limb_depth_sd=0, flip_prob=0, scale_sd=0, rotation_sd_deg=0,
                               dropout_prob=0)
    truth = views.keypoints_cam - views.keypoints_cam[:, [23, 24]].mean(1, keepdim=True)
    wl = simulate_world_landmarks(views.keypoints_cam, torch.Generator().manual_seed(0), exact)
    off_axis = (views.keypoints_cam[:, [23, 24], :2].mean(1) / views.keypoints_cam[:, [23, 24], 2:].mean(1)).norm(dim=-1)
    assert ((wl - truth).norm(dim=-1).mean(-1) > 0.05 * off_axis).all()  # turned where off-axis
    # With the true hips seen, the condition's turn undoes it exactly.
    clean = views.keypoints.clone()
    hips = views.keypoints_cam[:, [23, 24]]
    clean[:, [23, 24], :2], clean[:, [23, 24], 2] = hips[..., :2] / hips[..., 2:], 1.0
    torch.testing.assert_close(world_landmarks_to_camera(wl, clean), truth, atol=1e-4, rtol=1e-4)
    # The turn is the smallest one taking the optical axis onto the ray.
    R = viewing_ray_rotation(torch.tensor([[0.0, 0.0], [0.4, -0.3]]))
    torch.testing.assert_close(R[0], torch.eye(3))
    ray = torch.tensor([0.4, -0.3, 1.0])
    torch.testing.assert_close(R[1] @ torch.tensor([0.0, 0.0, 1.0]), ray / ray.norm())

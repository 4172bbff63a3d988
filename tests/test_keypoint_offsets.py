"""Keypoints as the detector places them (engines.body.keypoint_offsets): offsets built into
a regressor move with the pose as measured, are recovered from projections, and the
bundled model is calibrated to BlazePose on real frames."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from calibration.camera import assumed_camera
from engines.body.body_model import BodyModel
from engines.body.joint_sets import BLAZEPOSE33_NAMES, mirror_points
from engines.body.keypoint_offsets import estimate_offsets, offset_motion, offsets_of_fits, shifted_regressor
from engines.body.model_file import load_body_model
from engines.refinement.losses import person_size_px


@pytest.fixture(scope="module")
def data():
    return load_body_model()


def _offsets(seed: int = 0) -> np.ndarray:
    # Mirror-symmetric offsets of up to 2.5 cm, as a detector's own definitions would be.
    d = np.random.default_rng(seed).uniform(-0.025, 0.025, (33, 3))
    return 0.5 * (d + mirror_points(d, BLAZEPOSE33_NAMES))


def _bodies(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pose = 0.35 * torch.randn(n, 24, 3, generator=g, dtype=torch.float64)
    pose[:, 0] = torch.stack([torch.zeros(n), (torch.rand(n, generator=g) - 0.5) * 2 * torch.pi, torch.zeros(n)], 1) \
        + torch.tensor([torch.pi, 0.0, 0.0])  # upright in the camera's frame, facing any way
    trans = torch.tensor([0.0, 0.2, 4.0], dtype=torch.float64).expand(n, 3)
    return pose.reshape(n, 72), trans


def test_shifted_regressor_moves_each_keypoint_by_its_offset(data):
    offsets = _offsets()
    reg = shifted_regressor(data, "blazepose33", offsets)
    assert np.allclose(reg.sum(1), 1.0)
    moved = dataclasses.replace(data, keypoint_regressors={**data.keypoint_regressors, "blazepose33": reg})
    old, new = BodyModel(data, dtype=torch.float64), BodyModel(moved, dtype=torch.float64)
    pose, trans = _bodies(16)
    a = old(pose, None, trans, keypoints="blazepose33")
    b = new(pose, None, trans, keypoints="blazepose33")
    expected = a.keypoints["blazepose33"] + (offset_motion(old, a.rotations) @ torch.as_tensor(offsets)[None, :, :, None])[..., 0]
    torch.testing.assert_close(b.keypoints["blazepose33"], expected, atol=1e-6, rtol=0)
    assert (b.keypoints["blazepose33"] - a.keypoints["blazepose33"]).norm(dim=-1).max() > 0.02


def test_offsets_are_recovered_from_projected_keypoints(data):
    """Bodies seen from all sides, their keypoints projected where a detector with other
    definitions would put them, 1 px of noise and 5 % of points thrown anywhere."""
    body = BodyModel(data, dtype=torch.float64)
    truth = _offsets(1)
    pose, trans = _bodies(200, seed=2)
    out = body(pose, None, trans, keypoints="blazepose33")
    motion = offset_motion(body, out.rotations)
    cam = assumed_camera(1280, 720)
    K, dist = cam.torch_params(torch.float64)
    shifted = out.keypoints["blazepose33"] + (motion @ torch.as_tensor(truth)[None, :, :, None])[..., 0]
    g = torch.Generator().manual_seed(3)
    px = cam.project_torch(shifted) + torch.randn(shifted.shape[:-1] + (2,), generator=g, dtype=torch.float64)
    wild = torch.rand(px.shape[:-1], generator=g) < 0.05
    px[wild] = torch.rand(int(wild.sum()), 2, generator=g, dtype=torch.float64) * 700
    kp = torch.cat([px, torch.ones(px.shape[:-1] + (1,), dtype=torch.float64)], -1)
    est = estimate_offsets(out.keypoints["blazepose33"], motion, kp, person_size_px(kp, 0.5), K, dist, cam.model,
                           mirror_names=BLAZEPOSE33_NAMES)
    err = np.linalg.norm(est - truth, axis=1)
    assert err.max() < 0.004, dict(zip(BLAZEPOSE33_NAMES, np.round(1000 * err, 1)))
    assert np.allclose(est, mirror_points(est, BLAZEPOSE33_NAMES))


def test_bundled_model_is_calibrated_to_blazepose_on_real_frames(data, tmp_path):
    """A real track of the clip (BlazePose keypoints and world landmarks), lifted and
    fitted: what its bodies still miss is no longer the detector's definitions. The
    uncalibrated regressor left the ears 3 cm, the wrists and thumbs 2 cm, off; offsets
    measured again on these fits are a few millimetres."""
    from streamer.lift_file import lift_keypoint_file

    src = "tests/data/keypoints/sports2d_track2_blazepose33.npz"
    out = tmp_path / "fit.npz"
    lift_keypoint_file(src, out)
    with np.load(out) as fit, np.load(src) as kp:
        by_frame = {int(f): i for i, f in enumerate(kp["frame_index"])}
        rows = [by_frame[int(f)] for f in fit["frame_index"]]
        w, h = (int(v) for v in kp["image_size"])
        remaining = offsets_of_fits(BodyModel(data), fit["poses"], fit["betas_per_frame"], fit["trans"],
                                    kp["keypoints"][rows], assumed_camera(w, h))
    assert np.linalg.norm(remaining, axis=1).max() < 0.008, \
        dict(zip(BLAZEPOSE33_NAMES, np.round(1000 * np.linalg.norm(remaining, axis=1), 1)))
    meta = json.loads(str(np.load("engines/body/assets/anny_smpl.npz")["meta"]))
    measured = np.array(meta["keypoint_offsets"]["blazepose33"]["offsets_mm"])
    assert np.linalg.norm(measured, axis=1).max() > 25  # what calibration moved

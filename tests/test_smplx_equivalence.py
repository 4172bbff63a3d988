"""Our body model against smplx, the library SMPL users pose their models with.

The same joints, vertices and keypoints (a keypoint is a vertex blend: smplx's vertices
through the same regressor) to well under 1e-5 m: on the bundled model (read by
smplx.SMPL from its arrays), on a synthetic SMPL .pkl in the official layout (chumpy
arrays, sparse regressor) read through our restricted unpickler, on an SMPL+H .pkl and on
an SMPL-X .npz in smplx's folder layout that smplx loads from disk itself.
"""
import numpy as np
import pytest
import torch

from engines.body import DEFAULT_MODEL_PATH, BodyModel, load_body_model
from smpl_family import (SMPL, SMPLH, SMPLX, VERTICES, keypoint_regressor, smplx_struct, synthetic_model,
                         write_official_npz, write_official_pkl)

smplx = pytest.importorskip("smplx")  # dev dependency: the reference implementation

TOL = 1e-5  # metres: the bar; the measured errors are printed by -s
B = 4


def smplx_forward(ref, pose: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor):
    """smplx's output for a full pose (B, J, 3) in our joint order (smplx's own)."""
    J = pose.shape[1]
    args = dict(global_orient=pose[:, 0], body_pose=pose[:, 1:22 if J > 24 else 24].reshape(B, -1),
                betas=betas, transl=transl)
    if J == 52:  # SMPL+H: body, left hand, right hand
        args.update(left_hand_pose=pose[:, 22:37].reshape(B, -1), right_hand_pose=pose[:, 37:52].reshape(B, -1))
    if J == 55:  # SMPL-X: body, jaw, eyes, left hand, right hand
        args.update(jaw_pose=pose[:, 22], leye_pose=pose[:, 23], reye_pose=pose[:, 24],
                    left_hand_pose=pose[:, 25:40].reshape(B, -1), right_hand_pose=pose[:, 40:55].reshape(B, -1),
                    expression=pose.new_zeros(B, 10))
    return ref(**args)


def compare(ours: BodyModel, ref, J: int, regressor: np.ndarray, dtype=torch.float64, seed: int = 0) -> dict:
    """Worst joint, vertex and keypoint distance (m) over B random poses, shapes and
    translations; every joint of the tree is turned, hands and face included."""
    g = torch.Generator().manual_seed(seed)
    pose = 0.4 * torch.randn(B, J, 3, generator=g, dtype=dtype)
    betas = torch.randn(B, 10, generator=g, dtype=dtype)
    transl = torch.randn(B, 3, generator=g, dtype=dtype)
    with torch.no_grad():
        out = ours(pose, betas, transl, keypoints="blazepose33", return_vertices=True)
        r = smplx_forward(ref, pose, betas, transl)
    kp = torch.einsum("kv,bvc->bkc", torch.as_tensor(regressor, dtype=dtype), r.vertices)
    err = {"joints": (out.joints - r.joints[:, :J]).norm(dim=-1).max().item(),
           "vertices": (out.vertices - r.vertices).norm(dim=-1).max().item(),
           "keypoints": (out.keypoints["blazepose33"] - kp).norm(dim=-1).max().item()}
    print(f"{ours.name} ({J} joints) vs smplx, max error m: {err}")
    return err


def smplx_args(dtype=torch.float64) -> dict:
    return dict(num_betas=10, batch_size=B, dtype=dtype)


def test_bundled_model_equals_smplx():
    """The bundled anny-smpl, float32 as it runs, through smplx.SMPL(data_struct=...)
    (smplx's SMPL class reads only pickles)."""
    arrays = dict(np.load(DEFAULT_MODEL_PATH))
    ref = smplx.SMPL("unused", data_struct=smplx_struct(arrays), **smplx_args(torch.float32))
    ours = BodyModel()
    reg = load_body_model().keypoint_regressors["blazepose33"]  # rows renormalised in float64
    err = compare(ours, ref, 24, reg, dtype=torch.float32)
    assert max(err.values()) < TOL


def test_smpl_pkl_through_restricted_unpickler_equals_smplx(tmp_path):
    model = synthetic_model(SMPL)
    pkl = write_official_pkl(tmp_path / "SMPL_NEUTRAL.pkl", model)  # chumpy + scipy.sparse
    kp = tmp_path / "kp.npz"
    np.savez(kp, blazepose33_regressor=keypoint_regressor(VERTICES["smpl"]))
    data = load_body_model(pkl, keypoint_regressors=kp)
    assert (data.family, data.gender, data.num_joints) == ("smpl", "neutral", 24)
    # smplx would need chumpy to unpickle the file: it is given the same arrays instead.
    ref = smplx.SMPL("unused", data_struct=smplx_struct(model), **smplx_args())
    err = compare(BodyModel(data, dtype=torch.float64), ref, 24, data.keypoint_regressors["blazepose33"])
    assert max(err.values()) < TOL


def test_smplh_pkl_equals_smplx(tmp_path):
    folder = tmp_path / "models" / "smplh"
    folder.mkdir(parents=True)
    model = synthetic_model(SMPLH, seed=3, num_shape=16)
    write_official_pkl(folder / "SMPLH_FEMALE.pkl", model, chumpy=False)  # smplx reads it from disk too
    kp = tmp_path / "kp.npz"
    np.savez(kp, blazepose33_regressor=keypoint_regressor(VERTICES["smplh"]))
    data = load_body_model(folder / "SMPLH_FEMALE.pkl", keypoint_regressors=kp)
    assert (data.family, data.gender, data.num_joints) == ("smplh", "female", 52)
    ref = smplx.create(str(tmp_path / "models"), model_type="smplh", gender="female", ext="pkl", use_pca=False,
                       flat_hand_mean=True, **smplx_args())
    err = compare(BodyModel(data, dtype=torch.float64), ref, 52, data.keypoint_regressors["blazepose33"], seed=1)
    assert max(err.values()) < TOL


@pytest.mark.parametrize("num_shape, num_expression", [(10, 10), (300, 100)])
def test_smplx_npz_in_smplx_layout_equals_smplx(tmp_path, num_shape, num_expression):
    """Both SMPL-X shape layouts: 10 shape + 10 expression columns (older files) and
    300 + 100 (current ones); the expression part is never taken for shape."""
    folder = tmp_path / "models" / "smplx"
    folder.mkdir(parents=True)
    model = synthetic_model(SMPLX, seed=2, num_shape=num_shape, num_expression=num_expression)
    npz = write_official_npz(folder / "SMPLX_NEUTRAL.npz", model)  # joint2num, part2num: Python objects
    kp = tmp_path / "kp.npz"
    np.savez(kp, blazepose33_regressor=keypoint_regressor(VERTICES["smplx"]))
    data = load_body_model(npz, keypoint_regressors=kp)
    assert (data.family, data.gender, data.num_joints, data.num_betas) == ("smplx", "neutral", 55, num_shape)
    ref = smplx.create(str(tmp_path / "models"), model_type="smplx", gender="neutral", use_pca=False,
                       flat_hand_mean=True, **smplx_args())
    err = compare(BodyModel(data, dtype=torch.float64), ref, 55, data.keypoint_regressors["blazepose33"], seed=2)
    assert max(err.values()) < TOL

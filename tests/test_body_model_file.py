"""Loading SMPL-format files: official-style .pkl (chumpy, scipy.sparse), npz, bad files."""
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from engines.body.body_model import BodyModel, KeypointsUnavailableError
from engines.body.joint_sets import SMPL24_PARENTS
from engines.body.model_file import BodyModelFileError, load_body_model

torch.set_num_threads(2)

V = 200  # a small synthetic mesh


def synthetic_smpl(seed: int = 0) -> dict:
    """An SMPL-like model with random but well-formed arrays, posedirs included."""
    rng = np.random.default_rng(seed)
    v = rng.normal(scale=0.3, size=(V, 3))
    weights = rng.random((V, 24)) ** 8  # peaked, like real skinning weights
    weights /= weights.sum(1, keepdims=True)
    J = np.zeros((24, V))
    for j in range(24):
        idx = rng.choice(V, 6, replace=False)
        J[j, idx] = rng.random(6)
    J /= J.sum(1, keepdims=True)
    kintree = np.stack([np.array(SMPL24_PARENTS, dtype=np.int64), np.arange(24)])
    kintree[0, 0] = 4294967295  # as in SMPL files
    return {
        "v_template": v,
        "shapedirs": rng.normal(scale=0.01, size=(V, 3, 10)),
        "posedirs": rng.normal(scale=0.01, size=(V, 3, 207)),
        "J_regressor": J,
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, V, size=(300, 3)).astype(np.uint32),
        "bs_type": "lrotmin",
        "bs_style": "lbs",
    }


def make_fake_chumpy(monkeypatch):
    """Register a stand-in 'chumpy.ch.Ch' module so pickles name it like SMPL files do."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self.label = None

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = Ch.__name__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return Ch


def write_smpl_pkl(path, model: dict, monkeypatch, protocol: int = 2) -> None:
    """Write ``model`` the way official SMPL files are: chumpy arrays + a sparse regressor."""
    with monkeypatch.context() as m:
        Ch = make_fake_chumpy(m)
        obj = dict(model)
        for k in ("v_template", "shapedirs", "posedirs", "weights"):
            obj[k] = Ch(model[k])
        obj["J_regressor"] = scipy.sparse.csc_matrix(model["J_regressor"])
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
    assert "chumpy" not in sys.modules or not hasattr(sys.modules.get("chumpy"), "ch")


def reference_smpl(model: dict, pose_aa: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain float64 numpy SMPL forward pass, joint by joint, as in the SMPL paper."""
    v = model["v_template"] + model["shapedirs"] @ betas
    J = model["J_regressor"] @ v
    R = Rotation.from_rotvec(pose_aa).as_matrix()
    v = v + model["posedirs"] @ (R[1:] - np.eye(3)).reshape(-1)
    G = np.zeros((24, 4, 4))
    for j, p in enumerate(SMPL24_PARENTS):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[p] if p >= 0 else 0)
        G[j] = local if p < 0 else G[p] @ local
    joints = G[:, :3, 3].copy()
    for j in range(24):  # remove the rest joint: transforms act on rest-pose positions
        G[j, :3, 3] -= G[j, :3, :3] @ J[j]
    T = np.einsum("vj,jab->vab", model["weights"], G)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
    return joints, verts


@pytest.fixture
def smpl_files(tmp_path, monkeypatch):
    model = synthetic_smpl()
    pkl = tmp_path / "SMPL_NEUTRAL.pkl"
    write_smpl_pkl(pkl, model, monkeypatch)
    npz = tmp_path / "same_model.npz"
    np.savez(npz, **{k: v for k, v in model.items() if k not in ("bs_type", "bs_style")})
    return model, pkl, npz


def test_pkl_loads_through_restricted_unpickler_and_matches_npz(smpl_files):
    model, pkl, npz = smpl_files
    a, b = load_body_model(pkl), load_body_model(npz)
    assert a.name == "smpl" and a.keypoint_regressors == {}
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces", "parents"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=0, atol=1e-12)
    assert a.parents[0] == -1 and tuple(a.parents) == SMPL24_PARENTS
    g = torch.Generator().manual_seed(0)
    pose = 0.5 * torch.randn(3, 24, 3, dtype=torch.float64, generator=g)
    betas = torch.randn(3, 10, dtype=torch.float64, generator=g)
    ma, mb = BodyModel(a, dtype=torch.float64), BodyModel(b, dtype=torch.float64)
    oa = ma(pose, betas, return_vertices=True)
    ob = mb(pose, betas, return_vertices=True)
    np.testing.assert_allclose(oa.joints.numpy(), ob.joints.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(oa.vertices.numpy(), ob.vertices.numpy(), rtol=0, atol=1e-12)
    # And both equal an independent float64 SMPL reference, pose correctives included.
    for i in range(3):
        joints, verts = reference_smpl(model, pose[i].numpy(), betas[i].numpy())
        np.testing.assert_allclose(oa.joints[i].numpy(), joints, rtol=0, atol=1e-10)
        np.testing.assert_allclose(oa.vertices[i].numpy(), verts, rtol=0, atol=1e-10)


def test_protocol_0_pickle_with_copyreg_reconstructor(tmp_path, monkeypatch):
    """Python 2's default protocol rebuilds objects through copy_reg._reconstructor."""
    model = synthetic_smpl(1)
    path = tmp_path / "old.pkl"
    write_smpl_pkl(path, model, monkeypatch, protocol=0)
    assert b"_reconstructor" in path.read_bytes()
    data = load_body_model(path)
    np.testing.assert_allclose(data.v_template, model["v_template"], rtol=0, atol=0)
    np.testing.assert_allclose(data.J_regressor, model["J_regressor"], rtol=0, atol=1e-15)


def test_pkl_has_no_keypoints_unless_regressors_are_attached(smpl_files, tmp_path):
    model, pkl, _ = smpl_files
    m = BodyModel(load_body_model(pkl))
    assert m(torch.zeros(1, 24, 3)).joints.shape == (1, 24, 3)
    with pytest.raises(KeypointsUnavailableError, match="no 'coco17' keypoint regressor"):
        m(torch.zeros(1, 24, 3), keypoints="coco17")
    reg = np.zeros((17, V))
    reg[np.arange(17), np.arange(17) * 3] = 1.0
    kp = tmp_path / "kp.npz"
    np.savez(kp, coco17_regressor=reg)
    data = load_body_model(pkl, keypoint_regressors=kp)
    mk = BodyModel(data, dtype=torch.float64)
    pose = 0.3 * torch.randn(2, 24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = mk(pose, keypoints="coco17", return_vertices=True)
    # With pose correctives the per-joint moments path still equals the mesh regression.
    np.testing.assert_allclose(out.keypoints["coco17"].numpy(), out.vertices[:, np.arange(17) * 3].numpy(), rtol=0, atol=1e-12)
    fast = mk(pose, keypoints="coco17")
    np.testing.assert_allclose(fast.keypoints["coco17"].numpy(), out.keypoints["coco17"].numpy(), rtol=0, atol=1e-12)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, payload):
    marker = tmp_path / "pwned"
    model = synthetic_smpl(2)
    if payload == "system":
        obj = _Evil(marker)
    elif payload == "eval":
        obj = dict(model, v_template=_EvilEval())
    else:  # hidden inside an otherwise valid SMPL dict
        obj = dict(model, J_regressor=[_Evil(marker)])
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(BodyModelFileError, match=r"refusing (posix|os|nt|builtins|__builtin__)\.(system|eval)"):
        load_body_model(path)
    assert not marker.exists()


def test_missing_keys_and_corrupt_files_are_clear_errors(tmp_path, monkeypatch):
    model = synthetic_smpl(3)
    npz = tmp_path / "partial.npz"
    np.savez(npz, **{k: v for k, v in model.items() if k not in ("J_regressor", "weights", "bs_type", "bs_style")})
    with pytest.raises(BodyModelFileError, match=r"partial\.npz.*missing key\(s\) J_regressor, weights"):
        load_body_model(npz)
    bad = tmp_path / "bad_shape.npz"
    np.savez(bad, **dict({k: v for k, v in model.items() if k not in ("bs_type", "bs_style")}, weights=np.ones((V, 23))))
    with pytest.raises(BodyModelFileError, match="weights has shape"):
        load_body_model(bad)
    for name, content in (("junk.npz", b"not a zip"), ("junk.pkl", b"\x80\x02garbage"), ("empty.pkl", b"")):
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(BodyModelFileError, match=name.replace(".", r"\.")):
            load_body_model(p)
    objs = tmp_path / "objects.npz"
    np.savez(objs, **dict({k: v for k, v in model.items() if k not in ("bs_type", "bs_style")}, f=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(BodyModelFileError, match="Python objects"):
        load_body_model(objs)
    with pytest.raises(BodyModelFileError, match="not found"):
        load_body_model(tmp_path / "nope.pkl")
    with pytest.raises(BodyModelFileError, match="expected .npz or .pkl"):
        load_body_model(_touch(tmp_path / "x.json"))


def _touch(p):
    p.write_text("{}")
    return p

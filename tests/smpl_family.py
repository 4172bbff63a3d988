"""Test helpers: synthetic SMPL, SMPL+H and SMPL-X model files in the official layouts.

Random but valid arrays (peaked skinning weights that sum to 1, sparse convex joint
regressors, small shape and pose blend shapes) on the official kinematic trees and vertex
counts, so that smplx, which picks extra joints by fixed vertex ids, loads them too. No
licensed SMPL data is needed or used.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from engines.body.families import SMPL, SMPLH, SMPLX, Family

#: Official vertex counts (smplx's extra joints index vertices up to 6787 / 9929).
VERTICES = {"smpl": 6890, "smplh": 6890, "smplx": 10475}


def synthetic_model(family: Family, seed: int = 0, num_shape: int = 10, num_expression: int = 0) -> dict:
    """Arrays of a random ``family`` model in the official keys (float32, as the files).

    ``shapedirs`` gets ``num_shape`` shape columns then ``num_expression`` expression ones
    (SMPL-X files: 10 + 10 or 300 + 100)."""
    rng = np.random.default_rng(seed)
    V, J = VERTICES[family.name], family.num_joints
    f32 = np.float32
    v = rng.normal(scale=0.3, size=(V, 3)).astype(f32)
    weights = rng.random((V, J)) ** 8  # peaked, like real skinning weights
    weights = (weights / weights.sum(1, keepdims=True)).astype(f32)
    reg = np.zeros((J, V))
    for j in range(J):
        idx = rng.choice(V, 8, replace=False)
        reg[j, idx] = rng.random(8)
    reg = (reg / reg.sum(1, keepdims=True)).astype(f32)
    kintree = np.stack([np.array(family.parents, dtype=np.int64), np.arange(J)])
    kintree[0, 0] = 4294967295  # as in the official files
    model = {
        "v_template": v,
        "shapedirs": rng.normal(scale=0.01, size=(V, 3, num_shape + num_expression)).astype(f32),
        "posedirs": (rng.standard_normal((V, 3, 9 * (J - 1)), dtype=f32) * f32(0.002)),
        "J_regressor": reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, V, size=(2 * V, 3)).astype(np.uint32),
    }
    if family is not SMPL:  # hand PCA, which smplx reads even when it is not used
        for side in "lr":
            model[f"hands_components{side}"] = np.linalg.qr(rng.normal(size=(45, 45)))[0].astype(f32)
            model[f"hands_mean{side}"] = rng.normal(scale=0.1, size=45).astype(f32)
    if family is SMPLX:  # face landmarks
        model["lmk_faces_idx"] = rng.integers(0, 2 * V, 51).astype(np.int64)
        bary = rng.random((51, 3))
        model["lmk_bary_coords"] = (bary / bary.sum(1, keepdims=True)).astype(f32)
    return model


def keypoint_regressor(V: int, K: int = 33, seed: int = 1) -> np.ndarray:
    """A (K, V) convex vertex regressor: each point a blend of 5 random vertices."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((K, V))
    for k in range(K):
        reg[k, rng.choice(V, 5, replace=False)] = rng.random(5)
    return reg / reg.sum(1, keepdims=True)


@contextlib.contextmanager
def _fake_chumpy():
    """A stand-in ``chumpy.ch.Ch`` class while pickling, so the file names it as SMPL's do."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self.label = None

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch, chumpy.ch = Ch, ch
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
    try:
        yield Ch
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


def write_official_pkl(path: Path, model: dict, *, chumpy: bool = True) -> Path:
    """``model`` as the official ``.pkl`` files hold it: a protocol-2 pickle with chumpy
    arrays (``chumpy=True``, as SMPL's own files; smplx cannot read these without chumpy)
    or plain numpy arrays (as smplx's converted files), and a scipy.sparse joint regressor."""
    obj = dict(model, J_regressor=scipy.sparse.csc_matrix(model["J_regressor"]),
               bs_type="lrotmin", bs_style="lbs")
    if chumpy:
        with _fake_chumpy() as Ch:
            for k in ("v_template", "shapedirs", "posedirs", "weights"):
                obj[k] = Ch(np.asarray(model[k], np.float64))
            obj["J"] = Ch(model["J_regressor"] @ model["v_template"])
            path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def write_official_npz(path: Path, model: dict) -> Path:
    """``model`` as official SMPL-X ``.npz`` files hold it, Python-object keys included
    (``joint2num``, ``part2num``: smplx loads them with allow_pickle=True)."""
    extra = {"joint2num": np.array({"pelvis": 0}, dtype=object), "part2num": np.array({"global": 0}, dtype=object),
             "allow_pickle": np.array(True)}
    np.savez(path, **model, **extra)
    return path


def smplx_struct(model: dict):
    """smplx's data structure for ``model``'s arrays (to build its classes without a file)."""
    from smplx.utils import Struct

    return Struct(**{k: np.asarray(v) for k, v in model.items()})


__all__ = ["SMPL", "SMPLH", "SMPLX", "VERTICES", "keypoint_regressor", "smplx_struct", "synthetic_model",
           "write_official_npz", "write_official_pkl"]

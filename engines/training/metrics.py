"""Accuracy of joints against the truth: MPJPE (pelvis-aligned) and PA-MPJPE (after the best
similarity transform), in mm, as every evaluation here reports them."""

from __future__ import annotations

import torch

from engines.refinement.losses import similarity_align


def joint_errors(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """MPJPE (pelvis-aligned) and PA-MPJPE in mm."""
    rel_p, rel_t = pred - pred[:, :1], true - true[:, :1]
    mpjpe = (rel_p - rel_t).norm(dim=-1).mean().item() * 1000
    pa = (similarity_align(pred, true, torch.ones(pred.shape[:-1])) - true).norm(dim=-1).mean().item() * 1000
    return {"mpjpe_mm": mpjpe, "pa_mpjpe_mm": pa}

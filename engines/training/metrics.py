"""Accuracy of joints against the truth: MPJPE (pelvis-aligned) and PA-MPJPE (after the best
similarity transform), in mm, as every evaluation here reports them."""

from __future__ import annotations

import torch


def procrustes_align(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``pred`` (B, J, 3) moved onto ``true`` by the best similarity transform."""
    mp, mt = pred.mean(1, keepdim=True), true.mean(1, keepdim=True)
    p, t = pred - mp, true - mt
    U, S, Vh = torch.linalg.svd(p.transpose(1, 2) @ t)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh
    scale = (S * D.diagonal(dim1=-2, dim2=-1)).sum(-1) / p.pow(2).sum((1, 2)).clamp(min=1e-12)
    return scale[:, None, None] * p @ R + mt


def joint_errors(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """MPJPE (pelvis-aligned) and PA-MPJPE in mm."""
    rel_p, rel_t = pred - pred[:, :1], true - true[:, :1]
    mpjpe = (rel_p - rel_t).norm(dim=-1).mean().item() * 1000
    pa = (procrustes_align(pred, true) - true).norm(dim=-1).mean().item() * 1000
    return {"mpjpe_mm": mpjpe, "pa_mpjpe_mm": pa}

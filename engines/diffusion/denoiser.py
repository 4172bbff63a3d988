"""The conditional denoiser: a residual MLP over SMPL pose (6D rotation per joint) and shape,
modulated by the diffusion time and by the person's keypoint features (adaptive layer norm,
in the spirit of ScoreHMR's conditional MLP and of DiT's adaLN-Zero blocks)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

NUM_JOINTS = 24
NUM_BETAS = 10
X_DIM = NUM_JOINTS * 6 + NUM_BETAS  # what the model denoises: 6D rotations, then betas


@dataclass
class DenoiserConfig:
    """Sizes of the network; saved beside its weights."""

    x_dim: int = X_DIM
    cond_dim: int = 102
    width: int = 512
    depth: int = 4
    mlp_ratio: int = 2
    time_features: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of integer diffusion times ``t`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Block(nn.Module):
    """Pre-norm residual MLP whose norm is shifted, scaled and gated by the embedding."""

    def __init__(self, width: int, mlp_ratio: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(width, 3 * width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.SiLU(),
                                 nn.Linear(mlp_ratio * width, width))
        # Zero-initialised modulation: every block starts as the identity (adaLN-Zero).
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(emb).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class PoseDenoiser(nn.Module):
    """Predicts the clean sample ``x0`` (B, x_dim) from ``x_t``, the time ``t`` and ``cond``."""

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        self.config = config = config or DenoiserConfig()
        w = config.width
        self.x_in = nn.Linear(config.x_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_features, w), nn.SiLU(), nn.Linear(w, w))
        self.cond_mlp = nn.Sequential(nn.Linear(config.cond_dim, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(),
                                      nn.Linear(w, w))
        self.blocks = nn.ModuleList(_Block(w, config.mlp_ratio) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, config.x_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = nn.functional.silu(self.time_mlp(timestep_features(t, self.config.time_features))
                                 + self.cond_mlp(cond))
        # The condition also enters the residual stream, so the first block sees it directly.
        h = self.x_in(x_t) + self.cond_mlp[0](cond)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))

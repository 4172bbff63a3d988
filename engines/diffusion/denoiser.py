"""The conditional denoisers: networks that predict the clean SMPL pose (6D rotation per joint)
and shape from a noised one, the diffusion time and the person's keypoint features.

Two architectures share one contract, ``model(x_t (B, X), t (B,), cond (B, C)) -> x0 (B, X)``:

- ``mlp`` (:class:`PoseDenoiser`): a residual MLP modulated by the time and the condition
  (adaptive layer norm, in the spirit of ScoreHMR's conditional MLP and DiT's adaLN-Zero);
- ``tokens`` (:class:`TokenDenoiser`): the body's joints as tokens that attend to each other
  and to the keypoints as tokens (the structure of lifting transformers such as MotionBERT):
  a small encoder turns the 33 keypoints into tokens once per condition, and each denoising
  step runs joint tokens through self- and cross-attention blocks.

:func:`build_denoiser` makes either from its :class:`DenoiserConfig`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

NUM_JOINTS = 24
NUM_BETAS = 10
ROT_DIM = NUM_JOINTS * 6
X_DIM = ROT_DIM + NUM_BETAS  # what the model denoises: the pose vector

#: The pose vector ``x`` (..., X_DIM): each joint's rotation in 6D (root first, in the
#: camera frame), then the shape coefficients. Sliced only through these names.
ROTATIONS = slice(0, ROT_DIM)
BETAS = slice(ROT_DIM, X_DIM)


def rotations_of(x: torch.Tensor) -> torch.Tensor:
    """The joints' rotation matrices (..., 24, 3, 3) of pose vectors ``x`` (..., X_DIM)."""
    from engines.body.rotations import rotation_6d_to_matrix

    return rotation_6d_to_matrix(x[..., ROTATIONS].reshape(*x.shape[:-1], NUM_JOINTS, 6))


def pose_vector(rotations: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """Pose vectors (..., X_DIM) from rotation matrices (..., 24, 3, 3) and betas (..., 10)."""
    from engines.body.rotations import matrix_to_rotation_6d

    return torch.cat([matrix_to_rotation_6d(rotations).flatten(-2), betas], dim=-1)


@dataclass
class DenoiserConfig:
    """Sizes of the network; saved beside its weights."""

    x_dim: int = X_DIM
    cond_dim: int = 102
    width: int = 512
    depth: int = 4
    mlp_ratio: int = 2
    time_features: int = 128
    arch: str = "mlp"  # "mlp" (PoseDenoiser) or "tokens" (TokenDenoiser)
    heads: int = 4  # attention heads (tokens only)
    encoder_depth: int = 2  # keypoint-encoder layers (tokens only)
    world_landmarks: bool = False  # the condition carries the 33 world landmarks (features.py)

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


class _Attention(nn.Module):
    """Multi-head attention written out in matmuls (exports to plain ONNX ops on any opset)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, W = context.shape
        k, v = self.kv(context).view(B, S, 2, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, L, W = x.shape
        k, v = kv
        q = self.q(x).view(B, L, self.heads, W // self.heads).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) * (W // self.heads) ** -0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(B, L, W))


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer over the keypoint tokens (the condition alone)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n = self.norm1(h)
        h = h + self.attn(n, self.attn.keys_values(n))
        return h + self.mlp(self.norm2(h))


class _JointBlock(nn.Module):
    """Joint tokens: self-attention, cross-attention to the keypoint tokens, MLP; each
    pre-norm sub-layer shifted, scaled and gated by the time embedding (adaLN-Zero)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False) for _ in range(3))
        self.self_attn = _Attention(width, heads)
        self.cross_attn = _Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))
        self.modulation = nn.Linear(width, 9 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mod = self.modulation(emb)[:, None].chunk(9, dim=-1)
        n = self.norms[0](h) * (1 + mod[1]) + mod[0]
        h = h + mod[2] * self.self_attn(n, self.self_attn.keys_values(n))
        n = self.norms[1](h) * (1 + mod[4]) + mod[3]
        h = h + mod[5] * self.cross_attn(n, context_kv)
        n = self.norms[2](h) * (1 + mod[7]) + mod[6]
        return h + mod[8] * self.mlp(n)


class TokenDenoiser(nn.Module):
    """Joints as tokens attending to keypoints as tokens; called like :class:`PoseDenoiser`.

    Tokens: 24 joints (each its noised 6D rotation) and one for the shape (the noised betas);
    the keypoint encoder sees 33 keypoint tokens (position in the box, confidence, and with
    ``world_landmarks`` the metric landmark and its presence) and one token for the box.
    Everything the encoder computes depends on the condition alone, so a fused K-step graph
    computes it once for all K steps (:mod:`engines.runtime.fused_sampler`)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        from engines.diffusion.features import KEYPOINT_FEATURES, NUM_KEYPOINTS

        self.config = config
        w = config.width
        self.num_keypoints = NUM_KEYPOINTS
        self.point_features = KEYPOINT_FEATURES + (4 if config.world_landmarks else 0)
        self.point_in = nn.Linear(self.point_features, w)
        self.point_embed = nn.Parameter(torch.randn(NUM_KEYPOINTS, w) * 0.02)
        self.box_in = nn.Linear(3, w)
        self.encoder = nn.ModuleList(_EncoderLayer(w, config.heads, config.mlp_ratio)
                                     for _ in range(config.encoder_depth))
        self.context_norm = nn.LayerNorm(w)
        self.joint_in = nn.Linear(6, w)
        self.joint_embed = nn.Parameter(torch.randn(NUM_JOINTS + 1, w) * 0.02)
        self.shape_in = nn.Linear(NUM_BETAS, w)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_features, w), nn.SiLU(), nn.Linear(w, w))
        self.pool_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(_JointBlock(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(w)
        self.rot_out = nn.Linear(w, 6)
        self.shape_out = nn.Linear(w, NUM_BETAS)

    def _context(self, cond: torch.Tensor) -> torch.Tensor:
        """Keypoint and box tokens (B, 34, W) from the flat condition (features.py's layout)."""
        B, P = cond.shape[0], self.num_keypoints
        points = cond[:, : P * 3].view(B, P, 3)
        box = cond[:, P * 3: P * 3 + 3]
        if self.config.world_landmarks:
            world = cond[:, P * 3 + 3: P * 6 + 3].view(B, P, 3)
            present = cond[:, P * 6 + 3:].view(B, 1, 1).expand(B, P, 1)
            points = torch.cat([points, world, present], dim=-1)
        h = torch.cat([self.point_in(points) + self.point_embed, self.box_in(box)[:, None]], dim=1)
        for layer in self.encoder:
            h = layer(h)
        return self.context_norm(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B = x_t.shape[0]
        context = self._context(cond)
        emb = nn.functional.silu(self.time_mlp(timestep_features(t, self.config.time_features))
                                 + self.pool_mlp(context.mean(dim=1)))
        h = torch.cat([self.joint_in(x_t[:, ROTATIONS].view(B, NUM_JOINTS, 6)),
                       self.shape_in(x_t[:, BETAS])[:, None]], dim=1) + self.joint_embed
        for block in self.blocks:
            h = block(h, emb, block.cross_attn.keys_values(context))
        h = self.out_norm(h)
        return torch.cat([self.rot_out(h[:, :NUM_JOINTS]).flatten(1), self.shape_out(h[:, NUM_JOINTS])], dim=-1)


def build_denoiser(config: DenoiserConfig | None = None) -> nn.Module:
    """The network ``config.arch`` names, untrained."""
    config = config or DenoiserConfig()
    if config.arch == "mlp":
        return PoseDenoiser(config)
    if config.arch == "tokens":
        return TokenDenoiser(config)
    raise ValueError(f"unknown denoiser architecture {config.arch!r} (mlp or tokens)")

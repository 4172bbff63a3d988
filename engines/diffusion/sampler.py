"""Few-step sampling of the denoiser: K DDIM steps, N samples per person, all persons of a
frame in one batch (B * N rows through the network per step)."""

from __future__ import annotations

import torch

from engines.run_defaults import LIFT_STEPS

from .schedule import DDIMScheduler


@torch.no_grad()
def sample(model: torch.nn.Module, scheduler: DDIMScheduler, cond: torch.Tensor, *,
           num_steps: int = LIFT_STEPS["offline"], num_samples: int = 1, generator: torch.Generator | None = None,
           x_dim: int | None = None) -> torch.Tensor:
    """Draw ``num_samples`` clean samples per condition row: (B, C) -> (B, N, x_dim).

    Deterministic for a given ``generator`` state.
    """
    batch = cond.shape[0]
    x_dim = x_dim or model.config.x_dim
    cond_rep = cond.repeat_interleave(num_samples, dim=0)
    x = torch.randn(batch * num_samples, x_dim, generator=generator, dtype=cond.dtype, device=cond.device)
    for t, t_prev in scheduler.timesteps(num_steps):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=cond.device)
        x0 = model(x, tt, cond_rep)
        x = scheduler.step(x0, t, t_prev, x)
    return x.view(batch, num_samples, x_dim)

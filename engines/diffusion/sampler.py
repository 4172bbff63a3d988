"""Few-step sampling of the denoiser: K DDIM steps, N samples per person, all persons of a
frame in one batch (B * N rows through the network per step)."""

from __future__ import annotations

import torch

from engines.run_defaults import LIFT_STEPS

from .schedule import DDIMScheduler


def draw_noise(batch: int, num_samples: int, x_dim: int, *, generator: torch.Generator | None = None,
               antithetic: bool = True, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The starting noise of ``num_samples`` samples for each of ``batch`` rows: (B, N, X).

    ``antithetic``: the samples come in pairs started from ``e`` and ``-e`` (an odd last one
    alone). Each sample is still a draw from the model, but the pair's errors in the mean
    largely cancel where the sampler is close to linear in its noise, so the mean of N
    samples (what the lift publishes) scatters less about the posterior mean at no extra
    cost (antithetic variates; measured in docs/lifter.md). ``False``: N independent
    draws, the values ``torch.randn(B * N, X)`` gives."""
    if not antithetic or num_samples < 2:
        return torch.randn(batch * num_samples, x_dim, generator=generator, dtype=dtype,
                           device=device).view(batch, num_samples, x_dim)
    half = torch.randn(batch, (num_samples + 1) // 2, x_dim, generator=generator, dtype=dtype, device=device)
    return torch.cat([half, -half[:, : num_samples // 2]], dim=1)


@torch.no_grad()
def sample(model: torch.nn.Module, scheduler: DDIMScheduler, cond: torch.Tensor, *,
           num_steps: int = LIFT_STEPS["offline"], num_samples: int = 1, generator: torch.Generator | None = None,
           x_dim: int | None = None, antithetic: bool = True,
           riders: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
    """Draw ``num_samples`` clean samples per condition row: (B, C) -> (B, N, x_dim),
    started from :func:`draw_noise` (``antithetic`` as there).

    ``riders``: other rows for the same network, ``(x_t (P, X), t (P,), cond (P, C))``,
    denoised in the last step's call beside the samples (one pass over the network's weights
    instead of two, where the weights, not the rows, set the time); returns ``(samples, x0
    of the riders (P, X))`` then.

    Deterministic for a given ``generator`` state.
    """
    batch = cond.shape[0]
    x_dim = x_dim or model.config.x_dim
    cond_rep = cond.repeat_interleave(num_samples, dim=0)
    x = draw_noise(batch, num_samples, x_dim, generator=generator, antithetic=antithetic, dtype=cond.dtype,
                   device=cond.device).reshape(batch * num_samples, x_dim)
    steps = scheduler.timesteps(num_steps)
    riders_x0 = None
    for i, (t, t_prev) in enumerate(steps):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=cond.device)
        if riders is not None and i == len(steps) - 1:
            rows = x.shape[0]
            out = model(torch.cat([x, riders[0]]), torch.cat([tt, riders[1].to(tt)]), torch.cat([cond_rep, riders[2]]))
            x0, riders_x0 = out[:rows], out[rows:]
        else:
            x0 = model(x, tt, cond_rep)
        x = scheduler.step(x0, t, t_prev, x)
    samples = x.view(batch, num_samples, x_dim)
    return samples if riders is None else (samples, riders_x0)

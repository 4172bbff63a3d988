"""Noise schedule and few-step DDIM sampling, kept apart from the network.

The denoiser predicts the clean sample ``x0`` from a noisy ``x_t``; the scheduler turns that
prediction into the next, less noisy sample. The API is the one ``diffusers`` made familiar:

>>> sched = DDIMScheduler()
>>> x = torch.randn(batch, dim)
>>> for t, t_prev in sched.timesteps(4):
...     x0 = model(x, t, cond)
...     x = sched.step(x0, t, t_prev, x)

``x0`` prediction (rather than noise prediction) keeps few-step sampling stable and gives
guidance (refinement) a clean estimate to measure its losses on at every step.
"""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(num_train_steps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative signal level alpha_bar(t) of the cosine schedule (Nichol & Dhariwal 2021)."""
    steps = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    # Clip as the paper does so the last steps keep a sliver of signal.
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).to(torch.float32)


class DDIMScheduler:
    """Deterministic (eta = 0 by default) DDIM over a cosine schedule of ``num_train_steps``."""

    def __init__(self, num_train_steps: int = 1000):
        self.num_train_steps = num_train_steps
        self.alpha_bar = cosine_alpha_bar(num_train_steps)

    def timesteps(self, num_steps: int, start: int | None = None) -> list[tuple[int, int]]:
        """Pairs ``(t, t_prev)`` for ``num_steps`` evenly spaced steps from ``start`` (default:
        pure noise) down to clean; ``t_prev = -1`` means the clean sample."""
        if num_steps < 1:
            raise ValueError("num_steps must be at least 1")
        top = self.num_train_steps - 1 if start is None else int(start)
        ts = torch.linspace(top, 0, num_steps + 1)[:-1].round().long().tolist()
        return list(zip(ts, ts[1:] + [-1]))

    def ab(self, t: int | torch.Tensor) -> torch.Tensor:
        """alpha_bar at ``t`` (``t = -1``: 1, the clean end)."""
        if isinstance(t, int):
            return torch.tensor(1.0) if t < 0 else self.alpha_bar[t]
        ab = self.alpha_bar.to(t.device)[t.clamp(min=0)]
        return torch.where(t < 0, torch.ones_like(ab), ab)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process: ``x_t = sqrt(ab) x0 + sqrt(1 - ab) noise`` (t per row)."""
        ab = self.ab(t).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predicted_noise(self, x0: torch.Tensor, t: int, x_t: torch.Tensor) -> torch.Tensor:
        ab = self.ab(t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).clamp(min=1e-8).sqrt()

    def ddim_coefficients(self, t: int, t_prev: int) -> tuple[float, float, float, float] | None:
        """The deterministic DDIM update from ``t`` to ``t_prev`` as four numbers,
        ``(sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev), sqrt(1 - ab_prev))`` (float32 values),
        for :meth:`ddim_update`; None for the last step (``t_prev < 0``: the result is ``x0``).
        Samplers fused at build time (``engines.runtime.fused_sampler``) bake these in."""
        if t_prev < 0:
            return None
        ab_t, ab_prev = self.ab(t), self.ab(t_prev)
        coefs = (ab_t.sqrt(), (1 - ab_t).clamp(min=1e-8).sqrt(), ab_prev.sqrt(), (1 - ab_prev).clamp(min=0).sqrt())
        return tuple(float(c) for c in coefs)

    @staticmethod
    def ddim_update(x0: torch.Tensor, x_t: torch.Tensor, coefs) -> torch.Tensor:
        """``x_prev`` from ``x_t`` and the predicted ``x0`` with :meth:`ddim_coefficients`:
        the noise the prediction implies, carried to the earlier time."""
        eps = (x_t - coefs[0] * x0) / coefs[1]
        return coefs[2] * x0 + coefs[3] * eps

    def step(self, x0: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, *,
             eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM update from ``x_t`` at ``t`` to ``t_prev`` given the predicted ``x0``
        (``eta > 0``: the stochastic DDIM family, fresh noise of that share)."""
        if t_prev < 0:
            return x0
        if eta == 0:
            return self.ddim_update(x0, x_t, self.ddim_coefficients(t, t_prev))
        ab_t, ab_prev = self.ab(t), self.ab(t_prev)
        eps = self.predicted_noise(x0, t, x_t)
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp(min=0).sqrt()
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        x_prev = ab_prev.sqrt() * x0 + direction
        return x_prev + sigma * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)

    def invert(self, x0: torch.Tensor, t: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Bring a clean estimate to noise level ``t`` (partial inversion for refinement).

        With ``noise=None`` the deterministic DDIM inversion of a sample whose noise estimate
        is zero is the scaled estimate itself; pass noise to re-randomise.
        """
        ab = self.ab(t)
        if noise is None:
            return ab.sqrt() * x0
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

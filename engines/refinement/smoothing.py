"""The exact proximal step of the quadratic smoothness terms over a window.

For a window of T frames with values ``z`` (T, D) (the guided clean predictions), the
proximal step finds

    y = argmin_y  1/2 sum_free |y_t - z_t|^2 + vel/2 sum |y_t - y_{t-1}|^2
                                             + acc/2 sum |y_{t+1} - 2 y_t + y_{t-1}|^2

with the fixed (context) frames held at their values: one small T x T linear system per
window, shared by all D columns. Taking this step instead of a plain gradient step on the
same loss is a preconditioned gradient step (it converges in one step for any weight),
so strong temporal smoothing costs no extra iterations.
"""

from __future__ import annotations

import torch

from engines.tensor_cache import tensor_cache

FIXED_WEIGHT = 1e6  # context frames: held (numerically) at their values


def difference_matrix(valid: torch.Tensor, order: int) -> torch.Tensor:
    """(S, T - order, T) matrices of ``order``-th differences along frames, rows that touch
    an invalid (padding) frame zeroed."""
    S, T = valid.shape
    eye = torch.eye(T, dtype=torch.float32)
    D, ok = eye, valid
    for _ in range(order):
        D = D[1:] - D[:-1]
        ok = ok[:, 1:] & ok[:, :-1]
    return D[None] * ok[..., None].float()


def smoothness_matrix(valid: torch.Tensor, vel: float, acc: float) -> torch.Tensor:
    """(S, T, T) Hessian of the velocity + acceleration penalty."""
    D1, D2 = difference_matrix(valid, 1), difference_matrix(valid, 2)
    return vel * D1.transpose(1, 2) @ D1 + acc * D2.transpose(1, 2) @ D2


def smooth_prox(z: torch.Tensor, free: torch.Tensor, valid: torch.Tensor, vel: float, acc: float) -> torch.Tensor:
    """Proximal step (see the module doc) of ``z`` (S, T, D): free rows change, fixed valid
    rows stay, padding rows are returned as given."""
    if vel == 0 and acc == 0:
        return z
    M = _prox_operator(free.cpu().numpy().tobytes(), valid.cpu().numpy().tobytes(), tuple(free.shape), float(vel),
                       float(acc)).to(z.device)
    y = (M @ z.double()).to(z.dtype)
    return torch.where((free & valid)[..., None], y, z)


@tensor_cache(maxsize=256)
def _prox_operator(free: bytes, valid: bytes, shape: tuple[int, int], vel: float, acc: float) -> torch.Tensor:
    """(S, T, T) float64 matrices ``(diag(w) + L)^-1 diag(w)`` of the proximal step for these
    masks. A stream's windows repeat the same few mask patterns frame after frame, so each
    is solved once (the step then costs one small matrix product)."""
    free_t = torch.frombuffer(bytearray(free), dtype=torch.bool).view(shape)
    valid_t = torch.frombuffer(bytearray(valid), dtype=torch.bool).view(shape)
    Lm = smoothness_matrix(valid_t, vel, acc).double()
    ones = torch.ones(shape, dtype=torch.float64)
    w = torch.where(free_t & valid_t, ones, torch.where(valid_t, ones * FIXED_WEIGHT, ones))
    return torch.linalg.solve(torch.diag_embed(w) + Lm, torch.diag_embed(w))

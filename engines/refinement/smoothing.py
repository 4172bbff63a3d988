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
    Lm = smoothness_matrix(valid, vel, acc)
    w = torch.where(free & valid, torch.ones_like(z[..., 0]),
                    torch.where(valid, torch.full_like(z[..., 0], FIXED_WEIGHT), torch.ones_like(z[..., 0])))
    A = torch.diag_embed(w) + Lm
    y = torch.linalg.solve(A.double(), (w[..., None] * z).double()).to(z.dtype)
    return torch.where((free & valid)[..., None], y, z)

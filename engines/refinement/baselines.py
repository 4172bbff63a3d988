"""Classic smoothers of per-frame estimates, for comparison with refinement: a One-Euro
filter (causal, adaptive low-pass; Casiez et al. 2012) and a Kalman filter with a
Rauch-Tung-Striebel smoother (filterpy; constant-velocity model, offline: sees the whole
sequence). Both act on each coordinate of the 6D joint rotations, the shape and the
translation, and the 6D rotations are made orthonormal again afterwards."""

from __future__ import annotations

import math

import numpy as np


def one_euro(values: np.ndarray, fps: float, *, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter of a sequence (T, D), every column on its own; returns (T, D).

    ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how fast the cutoff rises with
    speed (less lag on fast motion), ``d_cutoff`` (Hz) the derivative's own low-pass.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"one_euro: values must be (T, D), got {x.shape}")
    te = 1.0 / fps

    def alpha(cutoff):
        r = 2 * math.pi * cutoff * te
        return r / (r + 1)

    out = np.empty_like(x)
    out[0] = x[0]
    dx_prev = np.zeros(x.shape[1])
    a_d = alpha(d_cutoff)
    for i in range(1, len(x)):
        dx = (x[i] - out[i - 1]) / te
        dx_hat = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * np.abs(dx_hat)
        r = 2 * math.pi * cutoff * te
        a = r / (r + 1)
        out[i] = a * x[i] + (1 - a) * out[i - 1]
        dx_prev = dx_hat
    return out


def kalman_rts(values: np.ndarray, *, process_var: float = 1e-3, measurement_var: float = 1e-2) -> np.ndarray:
    """Constant-velocity Kalman filter + RTS smoother (filterpy) of a sequence (T, D), the
    columns independent; returns the smoothed positions (T, D). ``process_var``: variance of
    the white-noise acceleration per frame^2; ``measurement_var``: of each measurement."""
    from filterpy.common import Q_discrete_white_noise
    from filterpy.kalman import KalmanFilter

    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"kalman_rts: values must be (T, D), got {z.shape}")
    T, D = z.shape
    kf = KalmanFilter(dim_x=2 * D, dim_z=D)
    kf.F = np.kron(np.eye(D), np.array([[1.0, 1.0], [0.0, 1.0]]))
    kf.H = np.kron(np.eye(D), np.array([[1.0, 0.0]]))
    kf.Q = Q_discrete_white_noise(dim=2, dt=1.0, var=process_var, block_size=D)
    kf.R = np.eye(D) * measurement_var
    kf.x = np.zeros((2 * D, 1))
    kf.x[0::2, 0] = z[0]
    kf.P = np.kron(np.eye(D), np.diag([measurement_var, 1.0]))
    means, covs, _, _ = kf.batch_filter(list(z[:, :, None]))
    xs, _, _, _ = kf.rts_smoother(means, covs)
    return xs[:, 0::2, 0]

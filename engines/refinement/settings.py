"""Every weight and step count of the refinement, named, with the defaults that
``engines.refinement.evaluate`` measured (see ``docs/refinement.md``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class GuidanceSettings:
    """How a window of estimates is refined.

    Diffusion: the estimates are brought to noise level ``noise_t`` (of the schedule's 1000
    training steps) by DDIM inversion and denoised again in ``num_steps`` guided steps.
    At every step the losses below steer the clean prediction ``x0``: ``guide="x0"`` takes
    ``iters_per_step`` gradient steps on ``x0`` itself; ``guide="xt"`` differentiates the
    losses through the network w.r.t. ``x_t`` (ScoreHMR's form) and shifts ``x0`` by that
    gradient. The camera translation of every frame is a free variable moved by the same
    gradient steps (``trans_step``).

    Losses, per frame (sums over frames, so the step sizes do not depend on the window):

    - reprojection: Geman-McClure of the keypoint residual in units of the person's size
      in the image (scale ``reproj_sigma``), confidence-weighted, averaged over points;
    - smoothness over the window: squared first and second differences of the 6D rotations
      (``smooth_rot_vel``, ``smooth_rot_acc``), of the translation (``smooth_trans_*``) and
      of the shape (``smooth_betas_vel``), relative to a unit weight on staying at the
      guided prediction: these quadratic terms are applied by their exact proximal step
      (:mod:`engines.refinement.smoothing`) after every gradient step; and of the
      camera-frame joint positions in metres (``smooth_joint_vel``, ``smooth_joint_acc``),
      a gradient term like the reprojection.

    ``lift_weight``: in the proximal step the guided prediction is averaged with the frame's
    own per-frame lift (the mean of the lifter's samples) with this weight, so refinement
    starts from, and does not throw away, the lifter's variance-reduced estimate.
    """

    noise_t: int = 100
    num_steps: int = 2
    guide: Literal["x0", "xt"] = "x0"
    iters_per_step: int = 1
    step_size: float = 0.02
    trans_step: float = 0.02
    reproj_weight: float = 1.0
    reproj_sigma: float = 0.05
    min_confidence: float = 0.05
    lift_weight: float = 1.0
    smooth_rot_vel: float = 1.0
    smooth_rot_acc: float = 30.0
    smooth_trans_vel: float = 1.0
    smooth_trans_acc: float = 30.0
    smooth_betas_vel: float = 100.0
    smooth_joint_vel: float = 0.0
    smooth_joint_acc: float = 10.0

    @classmethod
    def for_lag(cls, lag: int, **changes) -> "GuidanceSettings":
        """The measured defaults for a lag of ``lag`` frames. Causal refinement (``lag = 0``)
        cannot see the motion ahead: an acceleration penalty there extrapolates the past and
        drifts, so it is smoothed mostly by velocity (a first-order low-pass) instead."""
        if lag < 0:
            raise ValueError(f"lag must be >= 0 frames, got {lag}")
        base = dict(smooth_rot_vel=3.0, smooth_rot_acc=1.0, smooth_trans_vel=3.0, smooth_trans_acc=1.0) if lag == 0 else {}
        return cls(**{**base, **changes})

    def replace(self, **changes) -> "GuidanceSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if not 0 <= self.noise_t < 1000:
            raise ValueError(f"GuidanceSettings.noise_t must be in [0, 1000), got {self.noise_t}")
        if self.num_steps < 1 or self.iters_per_step < 0:
            raise ValueError("GuidanceSettings: num_steps must be >= 1 and iters_per_step >= 0")
        if self.guide not in ("x0", "xt"):
            raise ValueError(f"GuidanceSettings.guide must be 'x0' or 'xt', got {self.guide!r}")
        if self.reproj_sigma <= 0:
            raise ValueError("GuidanceSettings.reproj_sigma must be positive")

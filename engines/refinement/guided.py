"""The guided sampler: partial DDIM inversion of current estimates, then a few guided
denoising steps whose clean predictions are pulled towards the keypoints (robust
reprojection) and towards smooth motion over each window.

Windows are batched: ``S`` windows (one per track) of ``T`` frames (padded), of which the
``free`` rows are refined and the other valid rows are fixed context (frames already
emitted). All free rows of all windows go through the network as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import rotation_6d_to_matrix
from engines.diffusion.denoiser import NUM_BETAS, NUM_JOINTS, ROT_DIM
from engines.diffusion.schedule import DDIMScheduler

from .losses import person_size_px, reprojection_loss, smoothness_loss
from .settings import GuidanceSettings
from .smoothing import smooth_prox

IDENTITY_6D = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(NUM_JOINTS)


@dataclass
class CameraParams:
    """The camera of the keypoints: ``K`` (3, 3) or per row (S, T, 3, 3), ``dist`` (D,) or
    (S, T, D), ``model`` ``"pinhole"`` or ``"fisheye"`` (see :mod:`calibration.torch_projection`)."""

    K: torch.Tensor
    dist: torch.Tensor | None = None
    model: str = "pinhole"
    # The rig's other cameras (multi-view fitting, :mod:`engines.refinement.multiview`).
    views: tuple = ()

    @classmethod
    def from_camera(cls, camera) -> "CameraParams":
        """From a :class:`calibration.camera.Camera`."""
        K, dist = camera.torch_params(torch.float32)
        return cls(K=K, dist=dist if dist.numel() else None, model=camera.model)


@dataclass
class WindowBatch:
    """S windows of T frames. ``x`` (S, T, 154) 6D rotations + betas, ``trans`` (S, T, 3)
    camera translation of the pelvis, ``cond`` (S, T, C) denoiser condition,
    ``keypoints`` (S, T, 33, 3) pixels + confidence, ``valid`` (S, T) real frames,
    ``free`` (S, T) frames to refine (the others are fixed context), ``x_obs`` the frames'
    own per-frame lifts (the estimates start there; default ``x``), ``world`` (S, T, 33, 3)
    the landmark network's metric 3D landmarks (zeros where a frame has none; None: unused)."""

    x: torch.Tensor
    trans: torch.Tensor
    cond: torch.Tensor
    keypoints: torch.Tensor
    valid: torch.Tensor
    free: torch.Tensor
    x_obs: torch.Tensor | None = None  # (S, T, 154) the per-frame lifts (default: ``x``)
    world: torch.Tensor | None = None  # (S, T, 33, 3) world landmarks, metres
    views: torch.Tensor | None = None  # (S, T, V, 33, 3) keypoints in the rig's other cameras
    views_world: torch.Tensor | None = None  # (S, T, V, 33, 3) world landmarks of those views (zeros: none)
    # (S, T, 24, 3) the bodies' joints at x, trans (camera frame) for the valid frames that are
    # not free, as an earlier fit left them; None: the refiner poses them itself.
    joints: torch.Tensor | None = None
    # (S, T, 24) the per-frame lift's angular spread per joint (radians; zeros: none)
    x_std: torch.Tensor | None = None
    # (S, 10) per window the shape its track had before a gap (NaN rows: none; None: none
    # at all): a person seen again keeps their shape (KeypointFitter; FitSettings.shape_sigma)
    shape: torch.Tensor | None = None
    # the fit's first denoiser prediction, made beforehand for some frames (None: for none)
    prior: "PriorGuess | None" = None


@dataclass
class PriorGuess:
    """The keypoint fit's first prior prediction made beforehand, per frame of a
    :class:`WindowBatch`: at noise level ``t`` the network's input ``x_t`` (S, T, 154) and
    its clean prediction ``x0`` (S, T, 154); zeros where none was made. The live lift makes
    them in its own network call (``Lifter.lift(riders=...)``); the fit takes a frame's only
    where ``x_t`` is exactly the input it would give the network itself
    (:meth:`engines.refinement.fitting.KeypointFitter.first_prior_input`)."""

    t: int
    x_t: torch.Tensor
    x0: torch.Tensor


class GuidedRefiner:
    """Refines :class:`WindowBatch` es with a denoiser (torch, for gradients) and a body model."""

    def __init__(self, model: torch.nn.Module, body: BodyModel, settings: GuidanceSettings | None = None,
                 scheduler: DDIMScheduler | None = None):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.body = body
        self.settings = settings or GuidanceSettings()
        self.scheduler = scheduler or DDIMScheduler()

    # -- losses ---------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, trans: torch.Tensor, batch: WindowBatch, camera: CameraParams,
               size: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reprojection (per free frame, summed) and joint-position smoothness (per window,
        summed) of a full window tensor ``x`` (S, T, 154) with ``trans`` (S, T, 3): the
        gradient terms (the quadratic ones are applied by :meth:`smooth`)."""
        s = self.settings
        S, T = x.shape[:2]
        R = rotation_6d_to_matrix(x[..., :ROT_DIM].reshape(S * T, NUM_JOINTS, 6))
        betas = x[..., ROT_DIM: ROT_DIM + NUM_BETAS].reshape(S * T, NUM_BETAS)
        out = self.body(R, betas, trans.reshape(S * T, 3), keypoints="blazepose33")
        kp3d = out.keypoints["blazepose33"].view(S, T, -1, 3)
        joints = out.joints.view(S, T, NUM_JOINTS, 3)
        K = camera.K
        dist = camera.dist
        reproj = reprojection_loss(kp3d, batch.keypoints, K, dist, camera.model, sigma=s.reproj_sigma,
                                   min_confidence=s.min_confidence, size=size)
        reproj = (reproj * batch.free).sum()
        smooth = smoothness_loss(joints, batch.valid, joint_vel=s.smooth_joint_vel,
                                 joint_acc=s.smooth_joint_acc).sum()
        return {"reprojection": reproj, "smoothness": smooth, "total": s.reproj_weight * reproj + smooth}

    def smooth(self, x0_free: torch.Tensor, trans_free: torch.Tensor, base_x: torch.Tensor, batch: WindowBatch,
               free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proximal step of the quadratic smoothness of rotations, translation and shape."""
        s = self.settings
        if s.lift_weight > 0:  # the per-frame lift (a mean of samples) as a second data term
            x_obs = (batch.x if batch.x_obs is None else batch.x_obs)[free]
            x0_free = (x0_free + s.lift_weight * x_obs) / (1 + s.lift_weight)
        x = base_x.index_put((free,), x0_free)
        tr = batch.trans.index_put((free,), trans_free)
        rot = smooth_prox(x[..., :ROT_DIM], free, batch.valid, s.smooth_rot_vel, s.smooth_rot_acc)
        betas = smooth_prox(x[..., ROT_DIM:], free, batch.valid, s.smooth_betas_vel, 0.0)
        tr = smooth_prox(tr, free, batch.valid, s.smooth_trans_vel, s.smooth_trans_acc)
        return torch.cat([rot, betas], -1)[free], tr[free]

    # -- sampler --------------------------------------------------------------------------
    def refine(self, batch: WindowBatch, camera: CameraParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined ``(x, trans)`` (S, T, 154), (S, T, 3): free rows changed, others as given."""
        s = self.settings
        free = batch.free & batch.valid
        base_x = torch.where(batch.valid[..., None], batch.x,
                             torch.cat([IDENTITY_6D, batch.x.new_zeros(batch.x.shape[-1] - ROT_DIM)]))
        if not bool(free.any()):
            return base_x, batch.trans
        size = person_size_px(batch.keypoints, s.min_confidence)
        cond = batch.cond[free]
        trans_free = batch.trans[free].clone()

        def total(x0_free: torch.Tensor, tr_free: torch.Tensor) -> torch.Tensor:
            x = base_x.index_put((free,), x0_free)
            tr = batch.trans.index_put((free,), tr_free)
            return self.losses(x, tr, batch, camera, size)["total"]

        x_t = self.scheduler.invert(base_x[free], s.noise_t)
        x0 = base_x[free]
        for t, t_prev in self.scheduler.timesteps(s.num_steps, start=s.noise_t):
            tt = torch.full((x_t.shape[0],), t, dtype=torch.long)
            if s.guide == "xt":
                for _ in range(s.iters_per_step):
                    with torch.enable_grad():
                        xv = x_t.detach().requires_grad_(True)
                        tv = trans_free.detach().requires_grad_(True)
                        g_x, g_t = torch.autograd.grad(total(self.model(xv, tt, cond), tv), (xv, tv))
                    x_t = x_t - s.step_size * _clip_rows(g_x)
                    trans_free = trans_free - s.trans_step * _clip_rows(g_t)
                with torch.no_grad():
                    x0 = self.model(x_t, tt, cond)
                x0, trans_free = self.smooth(x0, trans_free, base_x, batch, free)
            else:
                with torch.no_grad():
                    x0 = self.model(x_t, tt, cond)
                for _ in range(s.iters_per_step):
                    with torch.enable_grad():
                        xv = x0.detach().requires_grad_(True)
                        tv = trans_free.detach().requires_grad_(True)
                        g_x, g_t = torch.autograd.grad(total(xv, tv), (xv, tv))
                    x0 = x0 - s.step_size * _clip_rows(g_x)
                    trans_free = trans_free - s.trans_step * _clip_rows(g_t)
                    x0, trans_free = self.smooth(x0, trans_free, base_x, batch, free)
                if s.iters_per_step == 0:
                    x0, trans_free = self.smooth(x0, trans_free, base_x, batch, free)
            x_t = self.scheduler.step(x0, t, t_prev, x_t)
        x_out = base_x.index_put((free,), x0.detach())
        trans_out = batch.trans.index_put((free,), trans_free.detach())
        return x_out, trans_out


def _clip_rows(g: torch.Tensor, max_norm: float = 10.0) -> torch.Tensor:
    """Limit each row's gradient norm: one wild keypoint must not throw a frame away."""
    n = g.flatten(1).norm(dim=1).clamp(min=1e-12)
    return g * (max_norm / n).clamp(max=1.0).view(-1, *([1] * (g.dim() - 1)))

"""Score-guided keypoint fitting: bodies that re-project onto the keypoints they came from.

ScoreHMR's guidance, solved to convergence. For a batch of windows (one per track) the free
frames' SMPL parameters (6D rotations, shape, camera translation) minimise

    E = data + world + prior + temporal

- **data**: each BlazePose-33 point of the body, projected through the run's camera *with
  its lens* (:mod:`calibration.torch_projection`), against the detected point: the residual
  in units of the person's size in the image, confidence-weighted, under a Geman-McClure
  penalty that is Gaussian with the detector's noise (``detector_noise``) near zero and
  saturates for outliers (``robust_scale``);
- **world**: the landmark network's metric 3D points (hip-centred, metres), aligned per
  frame to the body's own points by a similarity transform (so the term does not care how
  the network orients or scales its output), then the remaining distances, weighted by each
  point's confidence. This is what settles a limb's depth where the 2D alone cannot;
- **prior**: the diffusion model's score. At a schedule of noise levels ``prior_times`` the
  current estimate is brought to that level (deterministic DDIM inversion) and denoised in
  one network call; Tweedie's formula makes that prediction the direction of the score, and
  the estimate is pulled towards it (averaged with the frame's own per-frame lift, the mean
  of the lifter's samples). After each call ``iters`` Levenberg-Marquardt iterations solve
  the fit with that pull held fixed, like the proximal data step of plug-and-play diffusion
  samplers;
- **temporal**: squared accelerations of the joints about the pelvis and, apart, of the
  pelvis's path (or, for a causal window, velocities of the camera-frame joints), and the
  shape held constant along the track.

Windows hold fixed context frames (already published) as boundary conditions, exactly as
:class:`engines.refinement.guided.GuidedRefiner` does, and the same :class:`WindowBatch`
goes in, so :class:`engines.refinement.online.OnlineRefiner` drives either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from engines.body.body_model import BodyModel
from engines.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
from engines.diffusion.denoiser import BETAS, NUM_BETAS, NUM_JOINTS, ROT_DIM, pose_vector, rotations_of
from engines.diffusion.schedule import DDIMScheduler
from engines.run_defaults import WORLD_WEIGHT

from .guided import IDENTITY_6D, CameraParams, WindowBatch
from calibration.torch_projection import project_points

from .losses import add_reprojection_term, add_world_term, person_size_px, similarity_align
from .multiview import ViewTerms, project_with_jacobian
from .smoothing import difference_matrix



@dataclass(frozen=True)
class FitSettings:
    """How hard the fit works and what it trusts (the defaults are the measured ones,
    ``docs/refinement.md``). Lengths in metres, residuals in units of the person's size."""

    prior_times: tuple[int, ...] = (100, 50)  # denoiser calls per window, at these noise levels
    iters: int = 2  # Gauss-Newton iterations after each denoiser call
    detector_noise: float = 0.015  # keypoint noise (fraction of the person's size) when it cannot be measured
    noise_range: tuple[float, float] = (0.003, 0.03)  # the measured noise is held inside this
    robust_scale: float = 0.1  # Geman-McClure scale: residuals beyond it count as outliers
    min_confidence: float = 0.3  # keypoints below are ignored
    prior_sigma: float = 0.15  # 6D units (about 0.1 rad): how far the pose may leave the prior
    betas_sigma: float = 1.0
    # Per joint, the prior's sigma scaled by the lift's own spread there (the samples'
    # angular spread about their mean, relative to its RMS over the joints, held within 1/3
    # and 3) to this power: a joint the lifter was unsure of follows the evidence further,
    # one it was sure of is held harder (0: every joint alike; live: 1).
    prior_spread: float = 0.5
    # The per-frame lift against the denoiser's prediction in the prior's pull. Offline the
    # window's many iterations let the denoiser's prediction, which sees the current fit,
    # lead; the lift, a mean of samples drawn afresh each frame, brings its jitter.
    lift_weight: float = 0.25
    # Frames whose lift saw the world landmarks (a network that takes them, the frame has
    # them, one camera): that lift is nearer the truth and jitters less (held-out PA-MPJPE
    # 36.6 against 57.4 mm, acceleration 86 against 119) and its spread is calibrated
    # (error / spread 1.03 against 0.86), so offline it weighs more in the pull and its
    # spread is followed fully. None: as lift_weight / prior_spread.
    lift_weight_world: float | None = 0.5
    prior_spread_world: float | None = 1.0
    # 0: world landmarks unused. The term counts the 33 landmarks' errors as independent in
    # space and time, but the landmark network errs by whole limbs (its bones keep their
    # length to 5-7 % on the clip) and alike over consecutive frames (those length errors
    # correlate 0.67 from one frame to the next), so a window's landmarks carry a small
    # share of their count's worth. With errors simulated so (by limbs, frame correlation
    # 0.67) the fit is 1.5 mm better at 0.3 than at 1.5; with independent per-point errors
    # 0.6 mm worse (docs/refinement.md, tenth session). The landmarks also reach the fit
    # through the lift and the prior's condition (a network that takes them).
    world_weight: float = WORLD_WEIGHT
    world_sigma: float = 0.1  # metres: their error along the camera's axis
    world_lateral: float = 0.1  # weight of their across-the-image error (the 2D knows that better)
    world_robust: float = 0.3  # metres: beyond this a landmark counts as an outlier
    flip_depth: float = 0.07  # metres: a forearm or shin whose depth the landmarks put this far
    # the other way round (and the body at least half as far) is turned over before the fit
    # (only after a lift that did not see the landmarks: KeypointFitter.turn_limbs)
    # The acceleration of the joints about the pelvis: Student-t with joint_acc_dof degrees
    # of freedom and scale joint_acc_sigma (metres / frame^2): near zero as tight as a
    # Gaussian of 1.4 cm/frame^2 (12 m/s^2 at 30 fps), but real accelerations are mostly
    # small and now and then very large (a flip, a kick, a landing), and a Gaussian holds
    # those back (joint_acc_dof = 0: Gaussian). Apart from it the pelvis's path
    # (root_acc_sigma, Gaussian): a monocular fit's depth is what it knows least, and holding
    # it as hard as the limbs' motion bends the pose to fit a wrong depth (measured:
    # docs/refinement.md).
    joint_acc_sigma: float = 0.018
    joint_acc_dof: float = 4.0
    root_acc_sigma: float = 0.03
    joint_vel_sigma: float = 0.0  # metres / frame (0: off)
    betas_vel_sigma: float = 0.02
    # A track back after a gap: its window's shapes held to the shape it had, with this sigma
    # (betas), until context frames of its own carry the shape on (WindowBatch.shape).
    shape_sigma: float = 0.05

    @classmethod
    def for_lag(cls, lag: int, **changes) -> "FitSettings":
        """Defaults for a window of ``lag`` frames ahead. A causal window (``lag = 0``) cannot
        penalise acceleration without extrapolating the past, so it limits velocity instead."""
        if lag < 0:
            raise ValueError(f"lag must be >= 0 frames, got {lag}")
        base = dict(joint_acc_sigma=0.0, root_acc_sigma=0.0, joint_vel_sigma=0.1) if lag == 0 else {}
        return cls(**{**base, **changes})

    @classmethod
    def for_run(cls, lag: int, live: bool, iters: int | None = None, **changes) -> "FitSettings":
        """The fit of a run: offline, two denoiser calls per window (noise levels 100 then 50)
        with ``iters`` (default 2) Gauss-Newton iterations after each, every frame fitted
        again in each of the L + 1 windows it is free in; live, one call and one iteration
        per frame (the budget that keeps one person at 30 fps on two cores)."""
        if live:
            # One iteration from a warm start cannot average the prior's pull over a window:
            # a tighter prior keeps the live body nearer the lift (measured: docs/refinement.md).
            return cls.for_lag(lag, **{"prior_times": (100,), "iters": iters or 1, "prior_sigma": 0.1, "lift_weight": 1.0,
                                       "prior_spread": 1.0, "lift_weight_world": None, "prior_spread_world": None,
                                       **changes})
        return cls.for_lag(lag, iters=iters or 2, **changes)

    def replace(self, **changes) -> "FitSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.iters < 0 or any(not 0 <= t < 1000 for t in self.prior_times):
            raise ValueError("FitSettings: iters must be >= 0 and prior_times in [0, 1000)")
        for name in ("detector_noise", "robust_scale", "prior_sigma", "betas_sigma", "world_sigma", "shape_sigma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FitSettings.{name} must be positive")
        for name in ("prior_spread", "prior_spread_world", "lift_weight", "lift_weight_world"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"FitSettings.{name} must be >= 0 (prior_spread 0: every joint alike), got {value}")


#: Per free frame, the fit moves ``theta`` = 72 (a small turn of each joint, axis-angle,
#: after its current rotation: three numbers per joint, none of the 6D form's free scale),
#: 10 (shape) and 3 (translation) numbers.
THETA = NUM_JOINTS * 3 + NUM_BETAS + 3
_PX, _KP, _JOINTS, _X6 = 33 * 2, 33 * 3, NUM_JOINTS * 3, ROT_DIM  # rows of the outputs
#: (2, 3, 3): e_m x e_c for the first two columns c of a rotation (its 6D form) and axes m.
_D6_AXES = torch.stack([torch.linalg.cross(torch.eye(3), torch.eye(3)[c].expand(3, 3), dim=-1) for c in (0, 1)])


def keypoint_noise(keypoints: torch.Tensor, valid: torch.Tensor, min_confidence: float, default: float,
                   limits: tuple[float, float], sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The detector's noise (S,) per window, as a fraction of the person's size, measured on
    the keypoints themselves: over three consecutive frames at video rate a body moves nearly
    along a straight line, so a point's second difference is mostly the detector's jitter
    (variance 6 sigma^2 per coordinate for independent noise). The lower quartile of its
    magnitude over points and frames (real motion inflates the upper ones: a limb that
    accelerates), / (0.319 sqrt 6), is sigma; clamped to ``limits``. Windows of fewer than
    three frames get ``default``. ``sizes`` (S, T): the frames' :func:`person_size_px` at
    ``min_confidence``, where the caller has them already."""
    conf = keypoints[..., 2] > min_confidence
    # One size per window: a per-frame size would jitter with the outermost points and
    # scale every coordinate's jitter into the estimate.
    if sizes is None:
        sizes = person_size_px(keypoints, min_confidence)
    size = torch.where(valid, sizes, torch.nan).nanmedian(1).values
    xy = keypoints[..., :2] / size.nan_to_num(1.0)[:, None, None, None]
    d2 = (xy[:, 2:] - 2 * xy[:, 1:-1] + xy[:, :-2]).abs()  # (S, T-2, 33, 2)
    ok = conf[:, 2:] & conf[:, 1:-1] & conf[:, :-2] & (valid[:, 2:] & valid[:, 1:-1] & valid[:, :-2])[..., None]
    out = torch.full((keypoints.shape[0],), default, dtype=keypoints.dtype)
    if d2.shape[1] == 0:
        return out.clamp(*limits)
    # Every window's quartile in one call: the points not counted are NaN, which it skips.
    counted = 2 * ok.sum((1, 2))  # both coordinates of each point
    vals = torch.where(ok[..., None], d2, torch.nan).flatten(1)
    measured = vals.nanquantile(0.25, dim=1) / (0.3186 * 6 ** 0.5)
    return torch.where(counted >= 20, measured, out).clamp(*limits)


#: Limbs whose depth the 2D cannot tell: (BlazePose root point, tip point), SMPL joint that
#: turns them (left/right elbow -> wrist, knee -> ankle).
_FLIP_LIMBS = (((13, 15), 18), ((14, 16), 19), ((25, 27), 4), ((26, 28), 5))


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotations (N, 3, 3) turning directions ``a`` (N, 3) onto ``b`` (N, 3)."""
    a = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    b = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    axis = torch.linalg.cross(a, b, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    # Opposite directions: any axis across them will do; take one away from a's largest part.
    other = torch.eye(3, dtype=a.dtype)[a.abs().argmin(-1)]
    across = torch.linalg.cross(a, other, dim=-1)
    axis = torch.where(sin < 1e-6, across / across.norm(dim=-1, keepdim=True), axis / sin.clamp(min=1e-9))
    return axis_angle_to_matrix(axis * angle)


def _signal(joints: torch.Tensor, which: str) -> torch.Tensor:
    """A temporal term's signal from joints (..., 72): all of them ("joints"), about the
    pelvis ("relative") or the pelvis alone ("root")."""
    if which == "joints":
        return joints
    j = joints.unflatten(-1, (NUM_JOINTS, 3))
    return (j - j[..., :1, :]).flatten(-2) if which == "relative" else j[..., 0, :]


def _signal_jacobian(Jj: torch.Tensor, which: str) -> torch.Tensor:
    """The Jacobian (S, F, D, THETA) of :func:`_signal` from the joints' (S, F, 72, THETA)."""
    if which == "joints":
        return Jj
    j = Jj.unflatten(2, (NUM_JOINTS, 3))
    return (j - j[:, :, :1]).flatten(2, 3) if which == "relative" else j[:, :, 0]


class KeypointFitter:
    """Fits :class:`WindowBatch` es to their keypoints (and world landmarks) under the
    diffusion prior, by Levenberg-Marquardt (Gauss-Newton with iteratively reweighted robust
    residuals) on all free frames of a window at once, so the temporal terms are solved
    exactly rather than smoothed over many small steps. ``model`` is any callable
    ``(x_t, t, cond) -> x0`` (torch module or the forward-only ONNX engine; no gradient goes
    through it), or None for the per-frame lift as the only prior."""

    def __init__(self, model, body: BodyModel, settings: FitSettings | None = None,
                 scheduler: DDIMScheduler | None = None):
        self.model = model
        if isinstance(model, torch.nn.Module):
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        self.body = body
        self.settings = settings or FitSettings()
        self.scheduler = scheduler or DDIMScheduler()
        # A prior network conditioned on the world landmarks lifted with them too (one network
        # lifts and fits): its limbs already lie the landmarks' way in depth, and turning them
        # over on a noisy landmark would only add errors (measured: docs/refinement.md).
        self.turn_limbs = not getattr(getattr(model, "config", None), "world_landmarks", False)

    # -- the model of one frame and its Jacobian ------------------------------------------
    def _outputs(self, R: torch.Tensor, betas: torch.Tensor, trans: torch.Tensor, camera: CameraParams,
                 K: torch.Tensor, dist: torch.Tensor | None) -> torch.Tensor:
        """(N, 391): pixels (66), camera-frame points (99), joints (72), 6D rotations (144)."""
        out = self.body(R, betas, trans, keypoints="blazepose33")
        kp = out.keypoints["blazepose33"]
        px = project_points(kp, K, dist, camera.model)
        return torch.cat([px.flatten(1), kp.flatten(1), out.joints.flatten(1), matrix_to_rotation_6d(R).flatten(1)], 1)

    def _linearise(self, R0, b0, t0, camera, K, dist) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (N, 391) and their Jacobian (N, 391, THETA) at ``theta = 0``: the body
        model's own derivatives (:meth:`BodyModel.pose_jacobian`), chained through the lens."""
        N = R0.shape[0]
        pj = self.body.pose_jacobian(R0, b0, t0)
        eye3 = torch.eye(3, dtype=R0.dtype).expand(N, 1, 3, 3)

        def theta_jac(dturn, dbetas, count):
            return torch.cat([dturn.reshape(N, count, 3, 72), dbetas, eye3.expand(N, count, 3, 3)], -1)

        Jk = theta_jac(pj.dkeypoints_dturn, pj.dkeypoints_dbetas, 33)  # (N, 33, 3, THETA)
        Jj = theta_jac(pj.djoints_dturn, pj.djoints_dbetas, NUM_JOINTS)
        kp = pj.keypoints
        # The lens: d pixel / d point for every point (closed form for a plain pinhole).
        px, Jp = project_with_jacobian(kp, Jk, K, dist, camera.model)  # (N, 33, 2), (N, 33, 2, THETA)
        # 6D: column c of R exp(w) moves by R (e_m x e_c) per unit of w_m.
        d6 = torch.einsum("nixy,cmy->nicxm", R0, _D6_AXES.to(R0)).reshape(N, NUM_JOINTS, 6, 3)
        Jx = R0.new_zeros(N, NUM_JOINTS, 6, NUM_JOINTS, 3)
        idx = torch.arange(NUM_JOINTS)
        Jx[:, idx, :, idx, :] = d6.transpose(0, 1)
        Jx = torch.cat([Jx.reshape(N, _X6, 72), R0.new_zeros(N, _X6, THETA - 72)], -1)
        out = torch.cat([px.flatten(1), kp.flatten(1), pj.joints.flatten(1), matrix_to_rotation_6d(R0).flatten(1)], 1)
        J = torch.cat([Jp.reshape(N, _PX, THETA), Jk.reshape(N, _KP, THETA), Jj.reshape(N, _JOINTS, THETA), Jx], 1)
        return out, J

    # -- the fit ----------------------------------------------------------------------------
    def refine(self, batch: WindowBatch, camera: CameraParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitted ``(x, trans)`` (S, T, 154), (S, T, 3): free rows changed, others as given."""
        return self.refine_bodies(batch, camera)[:2]

    def refine_bodies(self, batch: WindowBatch, camera: CameraParams):
        """:meth:`refine`'s ``(x, trans)`` and the fitted bodies' joints (S, T, 24, 3) and
        BlazePose-33 points (S, T, 33, 3), camera frame, metres, at the free frames (zeros
        at the others; None for both when no frame was free): the fit has posed them
        already, so a caller need not pose them again."""
        with torch.no_grad():
            return self._refine(batch, camera)

    def _refine(self, batch: WindowBatch, camera: CameraParams):
        s = self.settings
        valid = batch.valid
        free = batch.free & valid
        base_x = torch.where(valid[..., None], batch.x,
                             torch.cat([IDENTITY_6D, batch.x.new_zeros(batch.x.shape[-1] - ROT_DIM)]))
        if not bool(free.any()):
            return base_x, batch.trans, None, None
        S, T = free.shape
        # Free frames of each window, padded to F (rows of the linear system per window).
        counts = free.sum(1)
        F = int(counts.max())
        cols = torch.zeros(S, F, dtype=torch.long)
        used = torch.zeros(S, F, dtype=torch.bool)
        for i in range(S):
            idx = torch.nonzero(free[i]).flatten()
            cols[i, :len(idx)], used[i, :len(idx)] = idx, True
        rows = torch.arange(S)[:, None].expand(S, F)
        sel = (rows[used], cols[used])  # the free frames, in (window, column) order
        # The same frames as rows of the (S T, ...) flattening: gathered and scattered with
        # index_select / index_copy, a fraction of advanced indexing's cost on small tensors.
        flat = sel[0] * T + sel[1]

        def take(x: torch.Tensor) -> torch.Tensor:
            """(S, T, ...) -> (N, ...): the free frames' rows."""
            return x.flatten(0, 1).index_select(0, flat)

        def put(x: torch.Tensor, rows_: torch.Tensor) -> torch.Tensor:
            """``x`` (S, T, ...) with the free frames' rows replaced by ``rows_`` (N, ...)."""
            return x.flatten(0, 1).index_copy(0, flat, rows_).view(x.shape)

        K = camera.K if camera.K.dim() == 2 else take(camera.K)
        dist = camera.dist if camera.dist is None or camera.dist.dim() == 1 else take(camera.dist)
        kp_obs = take(batch.keypoints)
        sizes = person_size_px(batch.keypoints, s.min_confidence)  # (S, T), for the noise and the data term
        size = take(sizes)
        noise = keypoint_noise(batch.keypoints, valid, s.min_confidence, s.detector_noise, s.noise_range, sizes)
        noise = noise.index_select(0, sel[0])[:, None]  # (N, 1) per free frame
        conf = kp_obs[..., 2]
        conf = torch.where(conf > s.min_confidence, conf, torch.zeros_like(conf))
        world = None
        if s.world_weight > 0 and batch.world is not None:
            world = take(batch.world)
            has = (world.abs().sum((-1, -2)) > 0).to(conf.dtype)
            world_w = conf * has[:, None] * (s.world_weight / s.world_sigma ** 2)
            world_axes = torch.tensor([s.world_lateral, s.world_lateral, 1.0])
        others = None
        if camera.views and batch.views is not None:
            # The rig's other cameras: the same robust term per view, its noise measured there.
            V = batch.views.shape[2]
            view_noise = torch.stack([keypoint_noise(batch.views[:, :, v], valid, s.min_confidence, s.detector_noise,
                                                     s.noise_range) for v in range(V)], -1)  # (S, V)
            # Their world landmarks too, each weighted along its own camera's depth axis.
            others = ViewTerms(camera.views, take(batch.views), view_noise.index_select(0, sel[0]),
                               robust_scale=s.robust_scale, min_confidence=s.min_confidence,
                               world=None if batch.views_world is None else take(batch.views_world), settings=s)
        cond = take(batch.cond)
        x_obs = take(batch.x if batch.x_obs is None else batch.x_obs)
        # The lift's spread is one camera's doubt: in a rig the other views' keypoints settle
        # it, and the prior stays alike over the joints (measured: docs/multi-camera.md).
        spread = None if batch.x_std is None or others is not None else take(batch.x_std)
        # Frames whose lift saw the world landmarks (FitSettings.lift_weight_world): the
        # network takes them and the frame has them, in one camera.
        saw_world = None
        if world is not None and others is None and not self.turn_limbs:
            saw_world = has > 0
        lift_w = self._per_frame(s.lift_weight, s.lift_weight_world, saw_world, len(x_obs))
        prior_w = self._prior_weights(spread, self._per_frame(s.prior_spread, s.prior_spread_world, saw_world,
                                                              len(x_obs)))

        # A track back after a gap: its frames' shapes held to the one it had.
        held = None
        if batch.shape is not None:
            held = batch.shape[rows[used]]
            held_w = torch.isfinite(held).all(-1, keepdim=True).to(held.dtype) / s.shape_sigma ** 2  # (N, 1)
            held = held.nan_to_num(0.0)
            if not bool(held_w.any()):
                held = None
        x_free = take(base_x)
        R = rotation_6d_to_matrix(x_free[:, :ROT_DIM].reshape(-1, NUM_JOINTS, 6))
        b = x_free[:, ROT_DIM:ROT_DIM + NUM_BETAS].clone()
        t = take(batch.trans)
        if world is not None and s.flip_depth > 0 and self.turn_limbs:
            R, x_obs = self._turn_over_limbs(R, b, t, x_obs, world, world_w)
        # Context frames' joints and shapes: constants of the temporal terms (the joints as the
        # caller kept them from an earlier fit, else posed here).
        if batch.joints is not None:
            joints_all = batch.joints.reshape(S, T, _JOINTS)
        else:
            joints_all = self.body(rotation_6d_to_matrix(base_x[..., :ROT_DIM].reshape(S * T, NUM_JOINTS, 6)),
                                   base_x[..., ROT_DIM:ROT_DIM + NUM_BETAS].reshape(S * T, -1),
                                   batch.trans.reshape(S * T, 3)).joints.view(S, T, _JOINTS)
        betas_all = base_x[..., ROT_DIM:ROT_DIM + NUM_BETAS].clone()
        temporal = self._temporal_operators(valid)

        def energy_and_system(R, b, t, x_prior, want_system: bool):
            if want_system:
                out, J = self._linearise(R, b, t, camera, K, dist)
            else:
                out, J = self._outputs(R, b, t, camera, K, dist), None
            N = out.shape[0]
            px, kp, jt, x6 = torch.split(out, [_PX, _KP, _JOINTS, _X6], 1)
            # The acceptance test of a step needs only the energy: no system is built then.
            H = out.new_zeros(N, THETA, THETA) if want_system else None
            g = out.new_zeros(N, THETA) if want_system else None
            E = out.new_zeros(N)
            # data: robust reprojection by iteratively reweighted least squares
            E = add_reprojection_term(px.view(N, 33, 2) - kp_obs[..., :2],
                                      J[:, :_PX].view(N, 33, 2, THETA) if want_system else None,
                                      conf, size[:, None], noise, s.robust_scale, E, H, g)
            if world is not None:
                # world: the landmarks' shape, aligned onto the body, mostly along the camera
                # axis (depth is what the 2D cannot tell), robust to a landmark gone astray
                E = add_world_term(kp.view(N, 33, 3), J[:, _PX:_PX + _KP].view(N, 33, 3, THETA) if want_system else None,
                                   world, world_w, world_axes, s.world_robust, E, H, g)
            if others is not None:
                E = others.add(kp.view(N, 33, 3), J[:, _PX:_PX + _KP].view(N, 33, 3, THETA) if want_system else None,
                               E, H, g)
            # prior: the pose and shape near the denoiser's prediction (and the lift)
            rp = x6 - x_prior[:, :ROT_DIM]
            rb = b - x_prior[:, ROT_DIM:]
            E = E + (rp.pow(2) * prior_w).sum(-1) + rb.pow(2).sum(-1) / s.betas_sigma ** 2
            if held is not None:
                rh = b - held
                E = E + (rh.pow(2) * held_w).sum(-1)
            if want_system:
                Jx = J[:, _PX + _KP + _JOINTS:]
                H = H + Jx.transpose(1, 2) @ (Jx * prior_w[..., None])
                g = g + (Jx.transpose(1, 2) @ (rp * prior_w)[..., None])[..., 0]
                H[:, 72:82, 72:82] += torch.eye(NUM_BETAS) / s.betas_sigma ** 2
                g[:, 72:82] += rb / s.betas_sigma ** 2
                if held is not None:
                    H[:, 72:82, 72:82] += torch.eye(NUM_BETAS) * held_w[..., None]
                    g[:, 72:82] += rh * held_w
            # per window: the per-frame blocks, plus the temporal terms that couple frames
            Hw = gw = Jj = None
            if one_column is not None:
                # One free frame per window, in the same column (live): its blocks are the
                # window's as they are, no scatter.
                Ew = E
                if want_system:
                    Hw, gw = H.view(S, 1, THETA, 1, THETA), g.view(S, 1, THETA)
                    Jj = J[:, None, _PX + _KP:_PX + _KP + _JOINTS]
            else:
                Ew = out.new_zeros(S).index_add_(0, rows[used], E)
                if want_system:
                    Hw = out.new_zeros(S, F, THETA, F, THETA)
                    gw = out.new_zeros(S, F, THETA)
                    Hw[rows[used], cols_pos[used], :, cols_pos[used], :] = H
                    gw[used] = g
                    Jj = out.new_zeros(S, F, _JOINTS, THETA)
                    Jj[used] = J[:, _PX + _KP:_PX + _KP + _JOINTS]
            jt_all = put(joints_all, jt)
            b_all = put(betas_all, b)
            for energy, M, grad, which in temporal(jt_all, b_all):
                Ew = Ew + energy
                if want_system:
                    # M: (S, T, T), or (S, T, T, D) with one matrix per coordinate
                    if one_column is not None:
                        c = one_column
                        Mf, grad = M[:, c:c + 1, c:c + 1], grad[:, c:c + 1]
                    else:
                        Mf = M[rows[:, :, None], cols[:, :, None], cols[:, None, :]]
                        pair = used[:, :, None] & used[:, None, :]
                        Mf = Mf * (pair if Mf.dim() == 3 else pair[..., None])
                        grad = grad[rows, cols] * used[..., None]  # (S, F, D)
                    if which == "betas":  # identity on the shape block
                        Hw[:, :, 72:82, :, 72:82] += Mf[:, :, None, :, None] * torch.eye(NUM_BETAS)[None, None, :, None, :]
                        gw[:, :, 72:82] += grad
                    else:
                        Js = _signal_jacobian(Jj, which)
                        spec = "sfg,sfda,sgdb->sfagb" if Mf.dim() == 3 else "sfgd,sfda,sgdb->sfagb"
                        Hw += torch.einsum(spec, Mf, Js, Js)
                        gw += torch.einsum("sfda,sfd->sfa", Js, grad)
            return Ew, Hw, gw, out

        cols_pos = torch.arange(F)[None].expand(S, F)
        # Every window with its one free frame in one column (live: the newest, in the last):
        # that column, else None.
        one_column = int(cols[0, 0]) if F == 1 and bool(used.all()) and bool((cols == cols[0, 0]).all()) else None
        times = s.prior_times if self.model is not None else ()
        lam = 1e-3
        final = None
        # The first denoiser call's prediction where the lift made it already (its network call
        # took these very inputs beside its samples: PriorGuess); checked row by row, not trusted.
        guess = None if batch.prior is None or not times or batch.prior.t != times[0] else \
            (take(batch.prior.x_t), take(batch.prior.x0))
        for t_noise in times or (None,):
            x_now = pose_vector(R, b)  # as first_prior_input makes it
            x_prior = x_obs if t_noise is None else self._prior(x_now, x_obs, cond, t_noise, lift_w, guess)
            guess = None
            for _ in range(s.iters):
                E0, H, g, out0 = energy_and_system(R, b, t, x_prior, True)
                n = F * THETA
                Hm = H.reshape(S, n, n)
                diag = torch.diagonal(Hm, dim1=-2, dim2=-1)
                pad = (~used).repeat_interleave(THETA, 1).to(Hm.dtype)  # padding rows: identity
                for _try in range(3):
                    A = Hm + torch.diag_embed(lam * diag + 1e-6 + pad)
                    # A is symmetric positive definite (Gauss-Newton plus damping): Cholesky.
                    L, info = torch.linalg.cholesky_ex(A)
                    if bool(info.any()):
                        sol = torch.linalg.solve(A, g.reshape(S, n))
                    else:
                        sol = torch.cholesky_solve(g.reshape(S, n, 1), L)[..., 0]
                    step = -sol.view(S, F, THETA)[used]
                    R1 = R @ axis_angle_to_matrix(step[:, :72].reshape(-1, NUM_JOINTS, 3))
                    b1, t1 = b + step[:, 72:82], t + step[:, 82:]
                    E1, _, _, out1 = energy_and_system(R1, b1, t1, x_prior, False)
                    better = E1 <= E0 + 1e-9
                    if bool(better.all()):
                        lam = max(lam / 3, 1e-7)
                        break
                    lam *= 10
                # Windows whose energy went down take the step; the others keep theirs.
                accept = better[rows[used]]
                R = torch.where(accept[:, None, None, None], R1, R)
                b = torch.where(accept[:, None], b1, b)
                t = torch.where(accept[:, None], t1, t)
                final = torch.where(accept[:, None], out1, out0)  # the outputs of the bodies kept
        x_fit = torch.cat([matrix_to_rotation_6d(R).flatten(1), b], -1)
        if final is None:  # no iteration: the bodies as they came
            final = self._outputs(R, b, t, camera, K, dist)
        joints = put(final.new_zeros(S, T, NUM_JOINTS, 3), final[:, _PX + _KP:_PX + _KP + _JOINTS].reshape(-1, NUM_JOINTS, 3))
        points = put(final.new_zeros(S, T, 33, 3), final[:, _PX:_PX + _KP].reshape(-1, 33, 3))
        return put(base_x, x_fit), put(batch.trans, t), joints, points

    @staticmethod
    def _per_frame(value: float, with_world: float | None, saw_world: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n, 1) ``value`` per free frame, ``with_world`` where the lift saw the landmarks."""
        out = torch.full((n, 1), float(value))
        if saw_world is None or with_world is None:
            return out
        return torch.where(saw_world[:, None], torch.full_like(out, float(with_world)), out)

    def _prior_weights(self, x_std: torch.Tensor | None, power: torch.Tensor) -> torch.Tensor:
        """(n, 144) weights of the pose prior's residuals: 1 / prior_sigma^2, per joint scaled
        by the lift's spread ``x_std`` (n, 24) to the per-frame ``power`` (n, 1) (the
        settings' ``prior_spread``; 0: every joint alike)."""
        s = self.settings
        w = torch.full((power.shape[0], NUM_JOINTS), 1.0 / s.prior_sigma ** 2)
        if bool((power > 0).any()) and x_std is not None:
            rms = x_std.pow(2).mean(-1, keepdim=True).sqrt()
            ratio = (x_std / rms.clamp(min=1e-6)).clamp(1 / 3, 3) ** power
            # Frames without a spread (zeros: none was measured) keep the plain weight.
            w = torch.where(rms > 1e-6, w / ratio.pow(2), w)
        return w.repeat_interleave(ROT_DIM // NUM_JOINTS, -1)

    def _turn_over_limbs(self, R, b, t, x_obs, world, world_w):
        """Where the 2D cannot tell whether a forearm or shin points towards the camera or
        away (both project alike) and the world landmarks clearly say the other way than
        the current estimate, turn that limb over (its depth mirrored about its root joint),
        in the estimate and in the per-frame lift the prior pulls towards. The fit then
        starts in the right basin instead of being held in the wrong one by the prior."""
        s = self.settings
        out = self.body(R, b, t, keypoints="blazepose33")
        pts = out.keypoints["blazepose33"]
        aligned = similarity_align(world, pts, world_w)
        R_obs = rotation_6d_to_matrix(x_obs[:, :ROT_DIM].reshape(-1, NUM_JOINTS, 6))
        flipped = False
        for (root, child), joint in _FLIP_LIMBS:
            d = pts[:, child] - pts[:, root]
            dz_world = aligned[:, child, 2] - aligned[:, root, 2]
            sure = (world_w[:, root] > 0) & (world_w[:, child] > 0)
            turn = sure & (d[:, 2] * dz_world < 0) & (dz_world.abs() > s.flip_depth) & (d[:, 2].abs() > s.flip_depth / 2)
            if not bool(turn.any()):
                continue
            flipped = True
            target = d * torch.tensor([1.0, 1.0, -1.0])
            Q = _rotation_between(d, target)  # camera frame, about the limb's root
            G_parent = out.rotations[:, self.body.parents[joint]]
            turned = G_parent.transpose(1, 2) @ Q @ G_parent
            R_new, R_obs_new = R.clone(), R_obs.clone()
            R_new[:, joint] = turned @ R[:, joint]
            R_obs_new[:, joint] = turned @ R_obs[:, joint]
            R = torch.where(turn[:, None, None, None], R_new, R)
            R_obs = torch.where(turn[:, None, None, None], R_obs_new, R_obs)
        if flipped:
            x_obs = torch.cat([matrix_to_rotation_6d(R_obs).flatten(1), x_obs[:, ROT_DIM:]], -1)
        return R, x_obs

    def _temporal_operators(self, valid: torch.Tensor):
        """The temporal terms: a function of the window's joints (S, T, 72) and shapes
        (S, T, 10) that yields ``(energy (S,), M, grad (S, T, D), which)`` per term, where
        ``M`` = D^T D (S, T, T) of the term's difference operator over runs of valid frames,
        times its weight, is its Hessian in its signal, ``grad`` the gradient, and ``which``
        names the signal (:func:`_signal`, or "betas")."""
        s = self.settings
        D1, D2 = difference_matrix(valid, 1), difference_matrix(valid, 2)
        mats = {1: D1.transpose(1, 2) @ D1, 2: D2.transpose(1, 2) @ D2}

        def quadratic(M, signal, sigma, which):
            Ms = M @ signal / sigma ** 2
            return (signal * Ms).sum((-1, -2)), M / sigma ** 2, Ms, which

        def student_t(signal, which):
            # Iteratively reweighted: each joint's |a|^2 weighs dE/d|a|^2 at the current estimate,
            # so M is one (S, T, T) matrix per coordinate.
            S = signal.shape[0]
            acc = D2 @ signal  # (S, T - 2, 72)
            r2 = acc.view(S, acc.shape[1], NUM_JOINTS, 3).pow(2).sum(-1)
            nu, nu_s2 = s.joint_acc_dof, s.joint_acc_dof * s.joint_acc_sigma ** 2
            energy = ((nu + 3) * torch.log1p(r2 / nu_s2)).sum((-1, -2))
            w = ((nu + 3) / (nu_s2 + r2)).repeat_interleave(3, -1)
            M = torch.einsum("srt,srd,sru->stud", D2, w, D2)
            return energy, M, D2.transpose(1, 2) @ (w * acc), which

        def terms(joints, betas):
            out = []
            if s.joint_acc_sigma > 0 and s.joint_acc_dof > 0:
                out.append(student_t(_signal(joints, "relative"), "relative"))
            elif s.joint_acc_sigma > 0:
                out.append(quadratic(mats[2], _signal(joints, "relative"), s.joint_acc_sigma, "relative"))
            if s.root_acc_sigma > 0:
                out.append(quadratic(mats[2], _signal(joints, "root"), s.root_acc_sigma, "root"))
            if s.joint_vel_sigma > 0:
                out.append(quadratic(mats[1], joints, s.joint_vel_sigma, "joints"))
            if s.betas_vel_sigma > 0:
                out.append(quadratic(mats[1], betas, s.betas_vel_sigma, "betas"))
            return out

        return terms

    def _prior(self, x_free: torch.Tensor, x_obs: torch.Tensor, cond: torch.Tensor, t: int,
               lift_weight: torch.Tensor, guess: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The pull's target: the denoiser's clean prediction from ``x_free`` brought to noise
        level ``t`` (its score, by Tweedie's formula), averaged with the per-frame lift ``x_obs``
        with ``lift_weight`` (n, 1). ``guess``: ``(x_t, x0)`` per row, a prediction made
        elsewhere, taken when its input is exactly this call's (zeros where none was made)."""
        x_t = self.scheduler.invert(x_free, t)
        tt = torch.full((x_free.shape[0],), t, dtype=torch.long)
        hit = None if guess is None else (guess[0] == x_t).all(-1)
        if hit is None or not bool(hit.any()):
            pred = self.model(x_t, tt, cond)
        elif bool(hit.all()):
            pred = guess[1]
        else:  # the network for the rows without one
            miss = ~hit
            pred = guess[1].clone()
            pred[miss] = self.model(x_t[miss], tt[miss], cond[miss])
        return (pred + lift_weight * x_obs) / (1 + lift_weight)

    def first_prior_input(self, x_start: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """``(t, x_t)``: what the first denoiser call of a fit whose free frames start at
        ``x_start`` (n, 154) takes (the same operations as :meth:`refine` makes), so that a
        caller with the network at hand can make the prediction beforehand (the live lift:
        :class:`PriorGuess`); None where the fit makes no such call, or where it may turn
        limbs over before it (:attr:`turn_limbs`)."""
        times = self.settings.prior_times
        if self.model is None or not times or self.turn_limbs:
            return None
        x_now = pose_vector(rotations_of(x_start), x_start[:, BETAS])
        return times[0], self.scheduler.invert(x_now, times[0])

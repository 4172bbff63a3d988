"""Several calibrated cameras, one body: the data terms of the views beyond the first.

The keypoint fit (:class:`engines.refinement.fitting.KeypointFitter`) estimates each body in
the frame of a *reference* camera (the one its per-frame lift came from). Every other
camera of a rig sees the same body through its own pose and lens: a point ``X`` of the
reference frame is at ``R X + t`` in that camera (:class:`RigView`). Its keypoints add one
robust, confidence-weighted reprojection term per view, exactly like the reference view's,
with the Jacobian rotated into the view (``d(R X + t) = R dX``) and chained through its lens.
Depth that one camera cannot see is then a matter of geometry, not of the prior. Each view's
world landmarks (the landmark network run on that view's crop) add the reference view's
``world`` term too, in that view's frame: aligned onto the body's points there, weighted
mostly along *that* camera's depth axis (what its own 2D cannot tell).

>>> camera = CameraParams(K0, views=(RigView(K1, None, "pinhole", R1, t1),))
>>> Observation(x, trans, cond, keypoints0, world, views=keypoints_per_view,   # (V-1, 33, 3)
...             views_world=landmarks_per_view)                              # (V-1, 33, 3)

A view that does not see the person in a frame has all confidences 0 there and adds nothing:
with no other view the fit is exactly the single-camera one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from calibration.torch_projection import project_points

from .losses import add_reprojection_term, add_world_term, person_size_px

#: A triangulated hip point further than this (metres) is a near-parallel pair of rays, not
#: a place: the lift keeps its own depth then.
MAX_TRIANGULATED_DEPTH = 50.0
#: Each other view's world landmarks weigh this share of the reference view's (the fit's
#: ``world_weight``): with 2D from several views, held-out 8 clips, 2 and 4 cameras, 0.5 keeps
#: the position gain of 1 (within 0.1 mm) without its extra acceleration error (0.04-0.08
#: mm/frame^2); 2 is worse in both, 0.25 as 0.5 (docs/multi-camera.md).
VIEW_WORLD_SHARE = 0.5


@dataclass(frozen=True)
class RigView:
    """A camera of the rig besides the reference: intrinsics ``K`` (3, 3), ``dist`` (D,) or
    None, lens ``model`` (``pinhole`` or ``fisheye``), and its pose: ``R`` (3, 3), ``t`` (3,)
    map reference-camera coordinates (metres) into this camera's."""

    K: torch.Tensor
    dist: torch.Tensor | None
    model: str
    R: torch.Tensor
    t: torch.Tensor

    @classmethod
    def from_camera(cls, camera, R, t) -> "RigView":
        """From a :class:`calibration.camera.Camera` and its pose relative to the reference."""
        K, dist = camera.torch_params(torch.float32)
        return cls(K=K, dist=dist if dist.numel() else None, model=camera.model,
                   R=torch.as_tensor(R, dtype=torch.float32), t=torch.as_tensor(t, dtype=torch.float32).reshape(3))


def project_with_jacobian(points: torch.Tensor, jac: torch.Tensor | None, K: torch.Tensor, dist: torch.Tensor | None,
                          model: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pixels (N, P, 2) of camera-frame ``points`` (N, P, 3) and, when ``jac`` (N, P, 3, A)
    (their derivatives w.r.t. A parameters) is given, the pixels' (N, P, 2, A)."""
    if model == "pinhole" and (dist is None or not bool(dist.any())):
        z = points[..., 2:].clamp(min=1e-6)
        fxy = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1).reshape(-1, 1, 2)
        px = points[..., :2] / z * fxy + K[..., :2, 2].reshape(-1, 1, 2)
        if jac is None:
            return px, None
        return px, fxy[..., None] / z[..., None] * (jac[:, :, :2] - points[..., :2, None] / z[..., None] * jac[:, :, 2:])
    if jac is None:
        return project_points(points, K, dist, model), None
    N, P = points.shape[:2]
    basis = torch.eye(3, dtype=points.dtype)[:, None, None, :].expand(3, N, P, 3)
    project = lambda p: project_points(p, K, dist, model)  # noqa: E731
    px, dpx = torch.func.vmap(lambda v: torch.func.jvp(project, (points,), (v,)), out_dims=(None, 0))(basis)
    return px, torch.einsum("xnjc,njxa->njca", dpx, jac)


class ViewTerms:
    """The other views' robust reprojection terms (and world-landmark terms) for the free
    frames of one fit call.

    ``keypoints`` (N, V, 33, 3): each free frame's detections in each extra view (pixels +
    confidence, zeros where a view does not see the person); ``noise`` (N, V): the
    detector's noise per view (fraction of the person's size there). ``world`` (N, V, 33, 3):
    each view's world landmarks (metres, hip-centred, zeros where a view has none; None:
    unused), weighted as the fit's own ``world`` term by ``settings`` (a
    :class:`~engines.refinement.fitting.FitSettings`: ``world_weight`` times
    :data:`VIEW_WORLD_SHARE`, ``world_sigma``, ``world_lateral``, ``world_robust``); with
    ``world_weight`` 0 they are unused."""

    def __init__(self, views: tuple[RigView, ...], keypoints: torch.Tensor, noise: torch.Tensor, *,
                 robust_scale: float, min_confidence: float, world: torch.Tensor | None = None,
                 settings=None):
        self.views = views
        self.obs = keypoints
        conf = keypoints[..., 2]
        self.conf = torch.where(conf > min_confidence, conf, torch.zeros_like(conf))
        self.size = person_size_px(keypoints, min_confidence)  # (N, V)
        self.noise = noise
        self.robust_scale = robust_scale
        self.world = None
        if world is not None and settings is not None and settings.world_weight > 0:
            # As the reference view's term (fitting.py): each landmark weighted by the
            # confidence of its keypoint in the same view (the same crop saw both).
            has = (world.abs().sum((-1, -2)) > 0).to(self.conf.dtype)  # (N, V)
            self.world = world
            weight = VIEW_WORLD_SHARE * settings.world_weight / settings.world_sigma ** 2
            self.world_w = self.conf * has[..., None] * weight
            self.world_axes = torch.tensor([settings.world_lateral, settings.world_lateral, 1.0], dtype=world.dtype)
            self.world_robust = settings.world_robust

    def add(self, points: torch.Tensor, jac: torch.Tensor | None, E: torch.Tensor, H: torch.Tensor | None,
            g: torch.Tensor | None) -> torch.Tensor:
        """Add the terms at reference-frame ``points`` (N, 33, 3), with their Jacobian ``jac``
        (N, 33, 3, A) when the normal equations ``H`` (N, A, A), ``g`` (N, A) are wanted (they
        are updated in place); returns the new energy (N,)."""
        for v, view in enumerate(self.views):
            conf = self.conf[:, v]
            if not bool(conf.any()):
                continue
            pts = points @ view.R.T + view.t
            jv = None if jac is None else torch.einsum("xy,njya->njxa", view.R, jac)
            px, jp = project_with_jacobian(pts, jv, view.K, view.dist, view.model)
            E = add_reprojection_term(px - self.obs[:, v, :, :2], jp, conf, self.size[:, v, None],
                                      self.noise[:, v, None], self.robust_scale, E, H, g)
            if self.world is not None and bool(self.world_w[:, v].any()):
                # The fit's world term in this view's frame: its depth axis (z) weighted most.
                E = add_world_term(pts, jv, self.world[:, v], self.world_w[:, v], self.world_axes,
                                   self.world_robust, E, H, g)
        return E


def triangulate(points_px: list[torch.Tensor], cameras: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                weights: list[torch.Tensor]) -> torch.Tensor:
    """Weighted linear (DLT) triangulation of (N,) points seen in pinhole views, in the
    reference frame: ``points_px`` per view (N, 2) undistorted pixels, ``cameras`` per view
    ``(K, R, t)`` (reference -> camera), ``weights`` per view (N,) (0: not seen). Needs two
    views with weight per point; returns (N, 3), NaN where fewer than two saw it."""
    rows, seen = [], 0
    for px, (K, R, t), w in zip(points_px, cameras, weights):
        P = K @ torch.cat([R, t.reshape(3, 1)], 1)  # (3, 4)
        rows.append(w[:, None, None] * torch.stack([px[:, :1] * P[2] - P[0], px[:, 1:] * P[2] - P[1]], 1))
        seen = seen + (w > 0).long()
    A = torch.cat(rows, 1)  # (N, 2V, 4)
    X = torch.linalg.svd(A.double()).Vh[:, -1]
    out = (X[:, :3] / X[:, 3:]).float()
    return torch.where((seen >= 2)[:, None], out, torch.full_like(out, float("nan")))


def place_on_triangulated_hips(body, x: torch.Tensor, trans: torch.Tensor, keypoints: list[torch.Tensor],
                               cameras: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The lifts' translations (N, 3) moved so that each body's hips (the midpoint of
    BlazePose's two hip points) land on the point triangulated from every view that sees
    them. ``x`` (N, 154) the lifts' poses and shapes; ``keypoints`` per view (N, 33, 3) in the
    undistorted pixels of ``cameras`` per view ``(K, R, t)`` (as :func:`triangulate`). A body
    seen by one view alone, or by rays too close to parallel, keeps the lift's own place (one
    camera cannot know the depth; the fit's robust terms would count a far-off view as
    outliers)."""
    from engines.diffusion.denoiser import BETAS, rotations_of

    hips = [k[:, [23, 24], :2].mean(1) for k in keypoints]
    weights = [k[:, [23, 24], 2].amin(1).clamp(min=0) for k in keypoints]
    target = triangulate(hips, cameras, weights)
    with torch.no_grad():
        own = body(rotations_of(x), x[:, BETAS], trans, keypoints="blazepose33").keypoints["blazepose33"][:, [23, 24]].mean(1)
    ok = torch.isfinite(target).all(-1) & (target[:, 2] > 0.1) & (target[:, 2] < MAX_TRIANGULATED_DEPTH)
    return torch.where(ok[:, None], trans + (target - own), trans)

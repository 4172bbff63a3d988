"""Where a keypoint detector puts its points on the body, measured on real video.

A body model's keypoint regressor says which blend of mesh vertices a keypoint is. A
detector has its own idea, learnt from its annotators: BlazePose puts the ears nearer the
face, the wrists further down the arm and the hips wider apart than the bundled model's
vertex blends. A fit that trusts the model's definition bends the body to close gaps that
are no error of the pose (docs/body-model.md, "Keypoints as the detector places them").

These functions measure that difference on bodies fitted to real video and move the
regressor by it:

- :func:`offset_motion`: how a keypoint's rest-frame offset moves with the pose (the
  keypoint's own blend of its joints' rotations);
- :func:`estimate_offsets`: the rest-frame offset of every keypoint that best closes the
  residuals of fitted bodies against their detected keypoints (robust, confidence-masked,
  optionally left/right symmetric, held towards zero where the evidence is thin);
- :func:`offsets_of_fits`: the same, from fitted SMPL parameters and the camera;
- :func:`shifted_regressor`: a new vertex regressor whose keypoints sit at those offsets
  and move with the pose as before.

``tools/calibrate_keypoints.py`` alternates them with runs of the pipeline.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from calibration.torch_projection import project_points

from .body_model import BodyModel
from .joint_sets import BLAZEPOSE33_NAMES, mirror_points
from .model_file import BodyModelData


def offset_motion(body: BodyModel, rotations: torch.Tensor, keypoints: str = "blazepose33") -> torch.Tensor:
    """(B, K, 3, 3): the rotation each keypoint's rest-frame offset turns by, for bodies
    whose joints have global rotations ``rotations`` (B, J, 3, 3): the keypoint's blend of
    its joints' rotations (``sum_j M_kj G_j``, its skinning moments), which is how an offset
    built into the regressor by :func:`shifted_regressor` moves."""
    M = getattr(body, f"kp_{keypoints}_M").to(rotations.dtype)  # (K, J)
    return torch.einsum("kj,bjcd->bkcd", M, rotations)


def estimate_offsets(points: torch.Tensor, motion: torch.Tensor, keypoints: torch.Tensor, size: torch.Tensor,
                     K: torch.Tensor, dist: torch.Tensor | None = None, model: str = "pinhole", *,
                     min_confidence: float = 0.5, robust_scale: float = 0.01, prior: float = 0.02,
                     mirror_names: tuple[str, ...] | None = None, iterations: int = 60) -> np.ndarray:
    """The rest-frame offsets (K, 3) metres that bring N fitted bodies' keypoints onto the
    detected ones.

    Args:
        points: (N, K, 3) camera-frame keypoints of the fitted bodies.
        motion: (N, K, 3, 3) :func:`offset_motion` of the same bodies (camera frame).
        keypoints: (N, K, 3) detected keypoints, pixels and confidence.
        size: (N,) each person's size in the image (px): residuals are in units of it.
        K, dist, model: the camera (:func:`calibration.torch_projection.project_points`).
        min_confidence: keypoints at or below are not used.
        robust_scale: Geman-McClure scale of a residual (fraction of the person's size):
            a keypoint the detector got wrong does not move the estimate.
        prior: metres; an offset this large costs what one outlier does, so a keypoint
            seldom seen confidently stays where the model put it.
        mirror_names: the keypoints' names: the offsets are made mirror symmetric (a
            detector has no handedness); None leaves them free.
        iterations: L-BFGS iterations (the problem is small: 3K numbers).
    """
    points, motion, keypoints, size = (t.detach().double() for t in (points, motion, keypoints, size))
    K = K.double()
    dist = dist.double() if dist is not None else None
    mask = (keypoints[..., 2] > min_confidence).double()
    delta = torch.zeros(points.shape[1], 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([delta], max_iter=iterations, line_search_fn="strong_wolfe")
    n_obs = mask.sum().clamp(min=1.0)

    def offsets() -> torch.Tensor:
        return delta if mirror_names is None else 0.5 * (delta + mirror_points(delta, mirror_names))

    def loss() -> torch.Tensor:
        opt.zero_grad()
        d = offsets()
        moved = points + (motion @ d[None, :, :, None])[..., 0]
        r = (project_points(moved, K, dist, model) - keypoints[..., :2]) / size[:, None, None]
        r2 = (r * r).sum(-1)
        data = (mask * r2 / (r2 + robust_scale ** 2)).sum()
        # An offset of ``prior`` costs what one outlier does (the robust term's ceiling).
        reg = (d * d).sum() / prior ** 2
        total = (data + reg) / n_obs
        total.backward()
        return total

    opt.step(loss)
    return offsets().detach().numpy()


def offsets_of_fits(body: BodyModel, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray, keypoints: np.ndarray,
                    camera, **options) -> np.ndarray:
    """:func:`estimate_offsets` (K, 3) metres for bodies fitted to video: ``poses`` (N, 72)
    axis-angle, ``betas`` (N, S), ``trans`` (N, 3) in the camera's frame (a motion file's
    ``poses``, ``betas_per_frame``, ``trans``), against their detected ``keypoints`` (N, K,
    3), seen by ``camera`` (:class:`calibration.camera.Camera`). ``options`` go to
    :func:`estimate_offsets`; the BlazePose-33 set, mirror symmetric, by default."""
    from engines.refinement.losses import person_size_px
    from engines.refinement.quality import QUALITY_MIN_CONFIDENCE

    if body.J_template.dtype != torch.float64:
        body = copy.deepcopy(body).double()  # a copy: the caller's model keeps its dtype
    with torch.no_grad():
        out = body(*(torch.as_tensor(a, dtype=torch.float64) for a in (poses, betas, trans)), keypoints="blazepose33")
    kp = torch.as_tensor(keypoints, dtype=torch.float64)
    K, dist = camera.torch_params(torch.float64)
    options = {"mirror_names": BLAZEPOSE33_NAMES, "min_confidence": QUALITY_MIN_CONFIDENCE, **options}
    return estimate_offsets(out.keypoints["blazepose33"], offset_motion(body, out.rotations), kp,
                            person_size_px(kp, options["min_confidence"]), K, dist, camera.model, **options)


def shifted_regressor(data: BodyModelData, name: str, offsets: np.ndarray, neighbours: int = 64) -> np.ndarray:
    """The ``name`` regressor (K, V) of ``data`` with each keypoint moved by ``offsets``
    (K, 3) metres in the rest pose, moving with the pose as before.

    Each row is changed as little as possible (least squares) over its own vertices and the
    ``neighbours`` nearest to its new place, so that, for the mean shape, every joint's
    share of the keypoint (its skinning moments ``sum_i w_i W_ij`` and ``sum_i w_i W_ij
    v_i``) becomes the old one plus ``M_kj * offset``: posed, the keypoint moves by
    :func:`offset_motion` times the offset, exactly. Rows still sum to one; weights may go
    negative (a point inside the surface is an affine, not a convex, blend).
    """
    reg = data.keypoint_regressors[name]
    V = data.v_template
    W = data.weights
    out = reg.copy()
    for k in range(reg.shape[0]):
        old = reg[k]
        M = old @ W  # (J,)
        U = np.einsum("i,ij,ic->jc", old, W, V)  # (J, 3)
        target = U + M[:, None] * offsets[k][None, :]
        place = old @ V + offsets[k]
        near = np.argsort(((V - place) ** 2).sum(1))[:neighbours]
        support = np.union1d(np.nonzero(old)[0], near)
        Ws, Vs = W[support], V[support]
        joints = np.nonzero((np.abs(Ws) > 0).any(0) | (M != 0))[0]
        # Constraints on the row's weights over the support: per joint, the zeroth and
        # first moments (4 numbers each).
        A = np.concatenate([Ws[:, joints].T, *(Ws[:, joints].T * Vs[:, c][None, :] for c in range(3))])
        b = np.concatenate([M[joints], *(target[joints, c] for c in range(3))])
        w0 = old[support]
        step, *_ = np.linalg.lstsq(A, b - A @ w0, rcond=None)  # the least change meeting them
        row = np.zeros_like(old)
        row[support] = w0 + step
        out[k] = row / row.sum()
    return out

"""Training views made on the fly: a mocap pose with a sampled body shape, seen by a random
virtual camera, projected to the BlazePose-33 keypoints through the body model's keypoint
regressors, and damaged the way a real detector damages them.

Cameras: horizontal field of view from narrow (30 deg) to wide-angle (120 deg), several
aspect ratios, pitch from looking up to looking down, some roll; the person anywhere in
the frame at a size from small to filling it, sometimes partly out of it.

Noise: pixel jitter proportional to the person's size (different per sample and per
point), occasional gross outliers, single points and whole limbs dropped, points outside
the image dropped or kept with low confidence, confidences that fall with the damage done,
and a share of samples reduced to the COCO-17 points (as from a COCO detector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engines.body.joint_sets import BLAZEPOSE33_NAMES, COCO17_FROM_BLAZEPOSE33
from engines.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from engines.diffusion.features import viewing_ray_rotation

# Limbs that detectors lose as a whole (occlusion), as BlazePose-33 indices.
_LIMB_NAMES = (
    ("left_elbow", "left_wrist", "left_pinky", "left_index", "left_thumb"),
    ("right_elbow", "right_wrist", "right_pinky", "right_index", "right_thumb"),
    ("left_knee", "left_ankle", "left_heel", "left_foot_index"),
    ("right_knee", "right_ankle", "right_heel", "right_foot_index"),
    ("left_ankle", "left_heel", "left_foot_index", "right_ankle", "right_heel", "right_foot_index"),
)
LIMBS = tuple(tuple(BLAZEPOSE33_NAMES.index(n) for n in limb) for limb in _LIMB_NAMES)
COCO_IN_BLAZEPOSE = torch.tensor(COCO17_FROM_BLAZEPOSE33)


@dataclass
class ViewConfig:
    """Ranges of the virtual cameras and of the keypoint damage (the defaults train the
    shipped model)."""

    hfov_deg: tuple[float, float] = (30.0, 120.0)
    aspects: tuple[float, ...] = (16 / 9, 4 / 3, 1.0, 9 / 16)
    image_width: float = 1280.0
    person_height_frac: tuple[float, float] = (0.12, 1.05)  # of the image height
    pitch_deg: tuple[float, float] = (-30.0, 40.0)  # positive: camera looks down
    roll_sd_deg: float = 5.0
    min_depth: float = 0.8  # metres from the camera to the pelvis
    inside_prob: float = 0.85  # pelvis well inside the frame; otherwise anywhere near it
    jitter_frac: tuple[float, float] = (0.002, 0.03)  # of the person's size
    outlier_prob: float = 0.03
    outlier_frac: float = 0.3
    drop_prob_max: float = 0.12
    limb_drop_prob: float = 0.12
    outside_keep_prob: float = 0.3  # points out of the image kept (low confidence)
    coco_only_prob: float = 0.2
    betas_sd: float = 1.0


@dataclass
class SyntheticViews:
    """A batch of training views (B persons)."""

    x0: torch.Tensor  # (B, 154) target: 6D rotations (root in camera frame), then betas
    keypoints: torch.Tensor  # (B, 33, 3) noisy normalised camera coords + confidence
    keypoints_px: torch.Tensor  # (B, 33, 3) the same in pixels
    clean_px: torch.Tensor  # (B, 33, 2) noiseless projections
    K: torch.Tensor  # (B, 3, 3) intrinsics
    image_size: torch.Tensor  # (B, 2) width, height
    joints_cam: torch.Tensor  # (B, 24, 3) true joints in the camera, metres
    trans_cam: torch.Tensor  # (B, 3) true translation (model origin = pelvis) in the camera
    poses_cam: torch.Tensor  # (B, 24, 3, 3) local rotations with the root in the camera frame
    betas: torch.Tensor  # (B, 10)
    keypoints_cam: torch.Tensor | None = None  # (B, 33, 3) true BlazePose-33 points in the camera, metres


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).view(-1, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).view(-1, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(-1, 3, 3)


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


# SMPL world (Y up, the body faces +Z) to a camera looking along world -Z (OpenCV: y down).
WORLD_TO_CAMERA = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


@dataclass
class _Camera:
    """One virtual camera per row: world-to-camera rotation and pinhole intrinsics."""

    R_cw: torch.Tensor  # (B, 3, 3)
    K: torch.Tensor  # (B, 3, 3)
    f: torch.Tensor  # (B,)
    W: torch.Tensor  # (B,)
    H: torch.Tensor  # (B,)


def _sample_rotation(n: int, cfg: ViewConfig, g: torch.Generator) -> torch.Tensor:
    """Heading, pitch, roll: the world as the camera sees it, (n, 3, 3)."""
    yaw = _uniform(-math.pi, math.pi, n, g)
    pitch = torch.deg2rad(_uniform(*cfg.pitch_deg, n, g))
    roll = torch.deg2rad(torch.randn(n, generator=g, device=g.device) * cfg.roll_sd_deg)
    return _rot_z(roll) @ _rot_x(-pitch) @ WORLD_TO_CAMERA.to(yaw.device) @ _rot_y(yaw)


def _sample_intrinsics(R_cw: torch.Tensor, cfg: ViewConfig, g: torch.Generator) -> _Camera:
    n = R_cw.shape[0]
    hfov = torch.deg2rad(_uniform(*cfg.hfov_deg, n, g))
    dev = g.device
    aspect = torch.tensor(cfg.aspects, device=dev)[torch.randint(len(cfg.aspects), (n,), generator=g, device=dev)]
    W = torch.full((n,), cfg.image_width, device=dev)
    H = W / aspect
    f = (W / 2) / torch.tan(hfov / 2)
    K = torch.zeros(n, 3, 3, device=dev)
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1.0
    return _Camera(R_cw=R_cw, K=K, f=f, W=W, H=H)


def _sample_placement(cam: _Camera, extent: torch.Tensor, cfg: ViewConfig, g: torch.Generator) -> torch.Tensor:
    """Camera-frame position (n, 3) for a pelvis of a person ``extent`` metres large: depth from
    the size the person should appear at, at a random image point."""
    n = cam.f.shape[0]
    frac = _uniform(*cfg.person_height_frac, n, g)
    depth = (cam.f * extent / (frac * cam.H)).clamp(min=cfg.min_depth)
    inside = _uniform(0, 1, n, g) < cfg.inside_prob
    lo = torch.where(inside, 0.15, -0.1)
    hi = 1 - lo
    u = (lo + (hi - lo) * _uniform(0, 1, n, g)) * cam.W
    v = (lo + (hi - lo) * _uniform(0, 1, n, g)) * cam.H
    ray = torch.stack([(u - cam.W / 2) / cam.f, (v - cam.H / 2) / cam.f, torch.ones_like(u)], -1)
    return depth[:, None] * ray


def _observe(kp_cam: torch.Tensor, cam: _Camera, cfg: ViewConfig, g: torch.Generator):
    """Project camera-frame keypoints (B, J, 3) and damage them like a detector:
    (clean px (B, J, 2), noisy px + conf (B, J, 3), noisy normalised + conf (B, J, 3))."""
    f, W, H, K = cam.f, cam.W, cam.H, cam.K
    z = kp_cam[..., 2].clamp(min=1e-3)
    clean = kp_cam[..., :2] / z[..., None] * f[:, None, None] + torch.stack([W / 2, H / 2], -1)[:, None]
    behind = kp_cam[..., 2] < 0.1
    keypoints_px, conf = _damage(clean, behind, W, H, cfg, g)
    norm = (keypoints_px[..., :2] - K[:, None, :2, 2]) / f[:, None, None]
    keypoints = torch.cat([norm * (conf[..., None] > 0), conf[..., None]], dim=-1)
    return clean, torch.cat([keypoints_px, conf[..., None]], -1), keypoints


def observe_points(points_cam: torch.Tensor, K: torch.Tensor, image_size: tuple[float, float], cfg: ViewConfig,
                   g: torch.Generator) -> torch.Tensor:
    """Camera-frame points (B, 33, 3) as a detector in a pinhole camera ``K`` (3, 3) of
    ``image_size`` (width, height) would report them, damaged as for training: pixels +
    confidence (B, 33, 3), confidence 0 where a point was lost."""
    B = points_cam.shape[0]
    W, H = (torch.full((B,), float(v)) for v in image_size)
    cam = _Camera(R_cw=torch.eye(3).expand(B, 3, 3), K=K.expand(B, 3, 3), f=K[0, 0].expand(B), W=W, H=H)
    return _observe(points_cam, cam, cfg, g)[1]


@torch.no_grad()
def make_views(body, poses: torch.Tensor, cfg: ViewConfig, g: torch.Generator,
               betas: torch.Tensor | None = None) -> SyntheticViews:
    """Training views for mocap ``poses`` (B, 72) axis-angle in SMPL world axes."""
    B = poses.shape[0]
    R = axis_angle_to_matrix(poses.view(B, 24, 3).float())
    if betas is None:
        betas = (torch.randn(B, 10, generator=g, device=g.device) * cfg.betas_sd).clamp(-3, 3)
    R_cw = _sample_rotation(B, cfg, g)
    poses_cam = torch.cat([(R_cw @ R[:, 0])[:, None], R[:, 1:]], dim=1)
    out = body(poses_cam, betas, keypoints="blazepose33")
    joints, kp3d = out.joints, out.keypoints["blazepose33"]
    cam = _sample_intrinsics(R_cw, cfg, g)
    spread = kp3d[..., :2].amax(1) - kp3d[..., :2].amin(1)
    extent = spread.amax(-1).clamp(min=0.3)  # larger of the width and height, metres
    trans = _sample_placement(cam, extent, cfg, g) - joints[:, 0]
    clean, keypoints_px, keypoints = _observe(kp3d + trans[:, None], cam, cfg, g)
    x0 = torch.cat([matrix_to_rotation_6d(poses_cam).flatten(1), betas], dim=-1)
    return SyntheticViews(x0=x0, keypoints=keypoints, keypoints_px=keypoints_px, clean_px=clean, K=cam.K,
                          image_size=torch.stack([cam.W, cam.H], -1), joints_cam=joints + trans[:, None],
                          trans_cam=trans, poses_cam=poses_cam, betas=betas, keypoints_cam=kp3d + trans[:, None])


@torch.no_grad()
def make_sequence_views(body, poses: torch.Tensor, cfg: ViewConfig, g: torch.Generator,
                        trans_world: torch.Tensor | None = None,
                        betas: torch.Tensor | None = None) -> SyntheticViews:
    """Views of one clip: ``poses`` (T, 72) axis-angle and ``trans_world`` (T, 3) metres in
    SMPL world axes, seen by one camera with one body shape for all T frames (the clip's
    centre placed as :func:`make_views` places a single pose); the keypoint damage is drawn
    afresh every frame, like a detector's."""
    T = poses.shape[0]
    R = axis_angle_to_matrix(poses.view(T, 24, 3).float())
    if betas is None:
        betas = (torch.randn(1, 10, generator=g, device=g.device) * cfg.betas_sd).clamp(-3, 3)
    betas = betas.reshape(1, -1).expand(T, -1).contiguous()
    R_cw = _sample_rotation(1, cfg, g)
    poses_cam = torch.cat([(R_cw @ R[:, 0])[:, None], R[:, 1:]], dim=1)
    out = body(poses_cam, betas, keypoints="blazepose33")
    joints, kp3d = out.joints, out.keypoints["blazepose33"]
    cam = _sample_intrinsics(R_cw, cfg, g)
    spread = kp3d[..., :2].amax(1) - kp3d[..., :2].amin(1)
    extent = spread.amax(-1).clamp(min=0.3).mean().reshape(1)
    path = torch.zeros(T, 3, device=g.device) if trans_world is None else (R_cw[0] @ (trans_world.float() - trans_world.float().mean(0)).T).T
    centre = _sample_placement(cam, extent, cfg, g)[0]
    # Keep the whole clip in front of the camera: push the camera back along its axis if needed.
    nearest = (centre[2] + path[:, 2]).min()
    centre = centre * (cfg.min_depth / nearest).clamp(min=1.0)
    trans = centre + path - joints[:, 0]
    cam = _Camera(**{k: v.expand(T, *v.shape[1:]) for k, v in vars(cam).items()})
    clean, keypoints_px, keypoints = _observe(kp3d + trans[:, None], cam, cfg, g)
    x0 = torch.cat([matrix_to_rotation_6d(poses_cam).flatten(1), betas], dim=-1)
    return SyntheticViews(x0=x0, keypoints=keypoints, keypoints_px=keypoints_px, clean_px=clean, K=cam.K,
                          image_size=torch.stack([cam.W, cam.H], -1), joints_cam=joints + trans[:, None],
                          trans_cam=trans, poses_cam=poses_cam, betas=betas, keypoints_cam=kp3d + trans[:, None])


def _damage(clean: torch.Tensor, behind: torch.Tensor, W: torch.Tensor, H: torch.Tensor, cfg: ViewConfig,
            g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like noise on clean pixel positions (B, J, 2) -> (noisy (B, J, 2), conf (B, J))."""
    B, J, _ = clean.shape
    dev = g.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, device=dev)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=dev)

    def between(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * rand(*shape)
    size = (clean.amax(1) - clean.amin(1)).amax(-1).clamp(min=8.0)  # person's extent, px
    level = _uniform(*cfg.jitter_frac, B, g)[:, None] * between(0.5, 1.5, B, J)
    sigma = level * size[:, None]
    noisy = clean + randn(B, J, 2) * sigma[..., None]
    conf = (between(0.75, 1.0, B, J) - 4.0 * level).clamp(0.05, 1.0)

    outlier = rand(B, J) < cfg.outlier_prob
    jump = randn(B, J, 2) * (cfg.outlier_frac * size)[:, None, None]
    noisy = torch.where(outlier[..., None], noisy + jump, noisy)
    conf = torch.where(outlier, between(0.1, 0.8, B, J), conf)

    missing = rand(B, J) < _uniform(0, cfg.drop_prob_max, B, g)[:, None]
    for limb in LIMBS:
        lost = rand(B) < cfg.limb_drop_prob / len(LIMBS)
        missing[:, list(limb)] |= lost[:, None]
    outside = (noisy[..., 0] < 0) | (noisy[..., 0] >= W[:, None]) | (noisy[..., 1] < 0) | (noisy[..., 1] >= H[:, None])
    keep_outside = rand(B, J) < cfg.outside_keep_prob
    conf = torch.where(outside & keep_outside, conf * 0.3, conf)
    missing |= (outside & ~keep_outside) | behind
    coco_only = rand(B) < cfg.coco_only_prob
    not_coco = torch.ones(J, dtype=torch.bool, device=dev)
    not_coco[COCO_IN_BLAZEPOSE.to(dev)] = False
    missing |= coco_only[:, None] & not_coco[None]
    conf = torch.where(missing, torch.zeros_like(conf), conf)
    noisy = torch.where(missing[..., None], torch.zeros_like(noisy), noisy)
    return noisy, conf


@dataclass
class WorldLandmarkNoise:
    """How the landmark network's metric 3D landmarks err, for simulating them from a body's
    own BlazePose-33 points. Chosen from the real clip: BlazePose's world landmarks, aligned
    onto our fitted bodies by a similarity transform, sit 7-8 cm from them on average
    (``docs/refinement.md``); a monocular network errs most along the camera axis, so the
    depth share is the larger one, and it sometimes puts a whole forearm or shin on the
    wrong side in depth.

    The default (:data:`WORLD_NOISE` ``"points"``) puts most of the error into independent
    per-point noise; ``"limbs"`` turns whole bones about their joints instead (bones keep
    their length, as the real landmarks nearly do: ``docs/lifter.md``)."""

    lateral_sd: float = 0.03  # metres, x and y (camera frame), per point
    depth_sd: float = 0.06  # metres, z, per point
    limb_depth_sd: float = 0.05  # metres: a shared depth offset per limb (errors come in limbs)
    flip_prob: float = 0.05  # per limb: its depth mirrored about its root joint
    scale_sd: float = 0.05  # relative, whole body
    rotation_sd_deg: float = 5.0  # whole body, about a random axis
    dropout_prob: float = 0.03  # per frame: no landmarks at all (zeros)
    turn_depth_sd_deg: float = 0.0  # per bone: a turn about its joint that moves its end in depth
    turn_lateral_sd_deg: float = 0.0  # per bone: a turn about the camera axis (across the image)
    torso_turn_sd_deg: float = 0.0  # the upper body turned about the hips, in depth
    # Along a sequence's frames, every draw above as an AR(1) series with this lag-one
    # correlation (0: afresh each frame). The real landmarks' bone-length errors on the clip
    # correlate 0.67 from one frame to the next and 0.47 over two (tools/world_noise_stats.py
    # --clip): a network shown nearly the same crop errs nearly alike, which a temporal fit
    # cannot average away.
    frame_correlation: float = 0.0


#: The error models by name: ``points`` (the shipped lifter's training) and ``limbs`` (the
#: same overall size, spent on turns of whole bones; ``docs/lifter.md``).
WORLD_NOISE = {
    "points": WorldLandmarkNoise(),
    "limbs": WorldLandmarkNoise(lateral_sd=0.01, depth_sd=0.02, limb_depth_sd=0.0, turn_depth_sd_deg=12.5,
                                turn_lateral_sd_deg=5.0, torso_turn_sd_deg=5.0),
}


#: The real landmarks' errors from one frame to the next (lag-one correlation of their bone
#: lengths on the clip, ``tools/world_noise_stats.py --clip``): what sequence benchmarks
#: give ``WorldLandmarkNoise.frame_correlation``.
MEASURED_FRAME_CORRELATION = 0.67

#: Limbs (root point first) whose depth a monocular network flips: forearms and shins.
_FLIP_LIMBS = tuple(tuple(BLAZEPOSE33_NAMES.index(n) for n in names) for names in (
    ("left_elbow", "left_wrist", "left_pinky", "left_index", "left_thumb"),
    ("right_elbow", "right_wrist", "right_pinky", "right_index", "right_thumb"),
    ("left_knee", "left_ankle", "left_heel", "left_foot_index"),
    ("right_knee", "right_ankle", "right_heel", "right_foot_index"),
))

#: Bones turned about their joint (joint first, then every point the turn carries), parents
#: before children: upper arms, forearms, thighs, shins.
_TURN_BONES = tuple(tuple(BLAZEPOSE33_NAMES.index(n) for n in names) for names in (
    ("left_shoulder", "left_elbow", "left_wrist", "left_pinky", "left_index", "left_thumb"),
    ("right_shoulder", "right_elbow", "right_wrist", "right_pinky", "right_index", "right_thumb"),
    ("left_hip", "left_knee", "left_ankle", "left_heel", "left_foot_index"),
    ("right_hip", "right_knee", "right_ankle", "right_heel", "right_foot_index"),
)) + _FLIP_LIMBS
#: Everything above the hips (turned with the torso).
_UPPER_BODY = tuple(range(0, 23))


def _turn(w: torch.Tensor, joint: int, carried: list[int], R: torch.Tensor) -> torch.Tensor:
    """Turn the points ``carried`` of (B, 33, 3) ``w`` about point ``joint`` by (B, 3, 3) ``R``."""
    pivot = w[:, joint:joint + 1]
    out = w.clone()
    out[:, carried] = (w[:, carried] - pivot) @ R.transpose(1, 2) + pivot
    return out


def _depth_turn(w: torch.Tensor, joint: int, end: int, angle: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) turns by ``angle`` (B,) about the axis across both the bone joint->end and
    the camera axis: the end moves along the bone's depth direction, its length kept."""
    bone = w[:, end] - w[:, joint]
    z = torch.zeros_like(bone)
    z[:, 2] = 1.0
    axis = torch.linalg.cross(bone, z)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    return axis_angle_to_matrix(axis * angle[:, None])


def _frame_draws(g: torch.Generator, device, correlation: float):
    """``randn(*shape)`` and ``rand(*shape)`` drawing from ``g``: independent, or (``correlation``
    > 0) along dim 0, the frames, AR(1) series with that lag-one correlation (uniforms through
    the normal's CDF, so a limb flipped or landmarks dropped in one frame tend to stay so)."""
    if correlation <= 0:
        return (lambda *shape: torch.randn(*shape, generator=g, device=device),
                lambda *shape: torch.rand(*shape, generator=g, device=device))
    keep, fresh = correlation, math.sqrt(1.0 - correlation ** 2)

    def randn(*shape: int) -> torch.Tensor:
        out = torch.randn(*shape, generator=g, device=device)
        for t in range(1, shape[0]):
            out[t] = keep * out[t - 1] + fresh * out[t]
        return out

    def rand(*shape: int) -> torch.Tensor:
        return 0.5 * (1.0 + torch.erf(randn(*shape) / math.sqrt(2.0)))
    return randn, rand


@torch.no_grad()
def simulate_world_landmarks(points_cam: torch.Tensor, g: torch.Generator,
                             noise: WorldLandmarkNoise | None = None) -> torch.Tensor:
    """World landmarks (B, 33, 3), metres, origin between the hips, as the landmark network
    would give them for bodies whose true camera-frame BlazePose-33 points are ``points_cam``
    (B, 33, 3), with the errors of ``noise`` (default ``WORLD_NOISE["points"]``): in the frame
    of the ray through the hips (the network sees a crop;
    ``features.world_landmarks_to_camera`` turns them back). With ``noise.frame_correlation``
    above 0 the B rows are taken as consecutive frames of one sequence."""
    n = noise or WORLD_NOISE["points"]
    B = points_cam.shape[0]
    dev = points_cam.device
    randn, rand = _frame_draws(g, dev, n.frame_correlation)
    hips = points_cam[:, [23, 24]].mean(1, keepdim=True)
    w = (points_cam - hips).clone()
    deg = math.pi / 180
    if n.torso_turn_sd_deg > 0:
        # Leaning the torso in depth: a turn about the hips' left-right axis.
        across = w[:, 24] - w[:, 23]
        across = across / across.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        angle = n.torso_turn_sd_deg * deg * randn(B, 1)
        w = torch.cat([w[:, :23] @ axis_angle_to_matrix(across * angle).transpose(1, 2), w[:, 23:]], dim=1)
    if n.turn_depth_sd_deg > 0 or n.turn_lateral_sd_deg > 0:
        z = torch.tensor([0.0, 0.0, 1.0], device=dev)
        for bone in _TURN_BONES:
            joint, carried = bone[0], list(bone[1:])
            R = _depth_turn(w, joint, bone[1], n.turn_depth_sd_deg * deg * randn(B))
            lateral = n.turn_lateral_sd_deg * deg * randn(B, 1)
            R = axis_angle_to_matrix(z * lateral) @ R
            w = _turn(w, joint, carried, R)
    for limb in _FLIP_LIMBS:
        flip = rand(B) < n.flip_prob
        root_z = w[:, limb[0], 2:3]
        flipped = 2 * root_z - w[:, list(limb[1:]), 2]
        w[:, list(limb[1:]), 2] = torch.where(flip[:, None], flipped, w[:, list(limb[1:]), 2])
        w[:, list(limb), 2] += n.limb_depth_sd * randn(B, 1)
    sd = torch.tensor([n.lateral_sd, n.lateral_sd, n.depth_sd], device=dev)
    w = w + sd * randn(B, 33, 3)
    axis = randn(B, 3)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = math.radians(n.rotation_sd_deg) * randn(B, 1)
    w = w @ axis_angle_to_matrix(axis * angle).transpose(1, 2)
    w = w * (1 + n.scale_sd * randn(B, 1, 1))
    w = w - w[:, [23, 24]].mean(1, keepdim=True)
    # The crop's centre: between the hips as the image shows them (features.person_ray).
    seen = points_cam[:, [23, 24]]
    ray = (seen[..., :2] / seen[..., 2:].clamp(min=1e-3)).mean(1)
    w = w @ viewing_ray_rotation(ray)  # camera axes -> the ray's (rows: R^T w)
    drop = rand(B) < n.dropout_prob
    return torch.where(drop[:, None, None], torch.zeros_like(w), w)

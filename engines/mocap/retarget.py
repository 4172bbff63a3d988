"""Retarget source motion capture to the SMPL 24-joint tree by matching global bone directions.

Local Euler angles cannot be copied between skeletons whose rest poses and joint frames differ,
so each frame is solved in world space:

1. A :class:`SkeletonMap` places 24 SMPL-like points on the source skeleton (a source joint, a
   blend of joints, or a point along the source spine at the SMPL's arc-length fractions).
2. For each SMPL joint, parents first, its global rotation G is solved so the target's rest
   bone directions (to its children) point along the source's directions:
   * two or more directions (pelvis: both hips + spine; spine3: neck + collar line) give a
     weighted Kabsch/Wahba fit;
   * one direction fixes the bone but not its twist: the twist comes from the source joint's
     rotation relative to its calibration pose (a T-pose facing +Z), then the smallest swing
     aligns the bone exactly;
   * leaves (feet, head, hands) take the source joint's rotation relative to calibration.
3. Local axis-angle poses ``(T, 72)`` follow from G; translation puts the midpoint of the SMPL
   hips on the source's, scaled by the ratio of leg lengths so feet stay on the floor.

Also: slerp resampling to a new frame rate, left/right mirroring, and the per-bone direction
error that measures the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from engines.mocap.motion import SourceMotion

SMPL_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
]
SMPL_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                         20, 21])
# Joint k of a mirrored body is joint SMPL_MIRROR[k] of the original.
SMPL_MIRROR = np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21,
                        20, 23, 22])

# Fallback target: an SMPL-like T-pose of an average adult, defined here (not SMPL's data):
# metres, Y up, facing +Z, left = +X, origin near the navel like SMPL's rest pose, symmetric.
# Used only when the bundled body model is absent; see load_target_skeleton().
FALLBACK_TPOSE_JOINTS = np.array([
    [0.000, -0.220, 0.025],   # pelvis
    [0.068, -0.315, 0.022],   # left_hip
    [-0.068, -0.315, 0.022],  # right_hip
    [0.000, -0.110, 0.000],   # spine1
    [0.105, -0.680, 0.020],   # left_knee
    [-0.105, -0.680, 0.020],  # right_knee
    [0.000, 0.025, 0.005],    # spine2
    [0.090, -1.090, -0.025],  # left_ankle
    [-0.090, -1.090, -0.025],  # right_ankle
    [0.000, 0.080, 0.030],    # spine3
    [0.118, -1.145, 0.095],   # left_foot
    [-0.118, -1.145, 0.095],  # right_foot
    [0.000, 0.290, -0.015],   # neck
    [0.077, 0.195, -0.018],   # left_collar
    [-0.077, 0.195, -0.018],  # right_collar
    [0.000, 0.380, 0.045],    # head
    [0.160, 0.236, -0.017],   # left_shoulder
    [-0.160, 0.236, -0.017],  # right_shoulder
    [0.416, 0.224, -0.035],   # left_elbow
    [-0.416, 0.224, -0.035],  # right_elbow
    [0.668, 0.225, -0.035],   # left_wrist
    [-0.668, 0.225, -0.035],  # right_wrist
    [0.746, 0.221, -0.042],   # left_hand
    [-0.746, 0.221, -0.042],  # right_hand
])

BUNDLED_BODY_MODEL = Path(__file__).resolve().parents[1] / "body" / "assets" / "anny_smpl.npz"


@dataclass
class TargetSkeleton:
    """The SMPL-24 tree to retarget onto: parents and rest (T-pose) joints, Y up, facing +Z."""

    parents: np.ndarray  # (24,)
    rest_joints: np.ndarray  # (24, 3) metres
    name: str = "fallback-tpose"

    def leg_length(self) -> float:
        """Mean hip-knee-ankle length, used to scale root translation."""
        J = self.rest_joints
        return float(np.mean([np.linalg.norm(J[h] - J[k]) + np.linalg.norm(J[k] - J[a])
                              for h, k, a in ((1, 4, 7), (2, 5, 8))]))


def fallback_target() -> TargetSkeleton:
    """The module's own SMPL-like T-pose (see :data:`FALLBACK_TPOSE_JOINTS`)."""
    return TargetSkeleton(SMPL_PARENTS.copy(), FALLBACK_TPOSE_JOINTS.copy(), "fallback-tpose")


def load_target_skeleton(path: str | Path | None = None) -> TargetSkeleton:
    """Target skeleton from an SMPL-format ``.npz`` (the bundled body model by default).

    Rest joints come from a ``J``/``joints``/``rest_joints`` array, or from ``J_regressor @
    v_template``; parents from ``parents`` or ``kintree_table``. Without ``path`` and without
    the bundled model, returns :func:`fallback_target`.
    """
    if path is None:
        if not BUNDLED_BODY_MODEL.exists():
            return fallback_target()
        path = BUNDLED_BODY_MODEL
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        J = None
        for k in ("J", "joints", "rest_joints", "J_rest", "joints_rest"):
            if k in keys:
                J = np.asarray(z[k], float)
                break
        if J is None and {"J_regressor", "v_template"} <= keys:
            J = np.asarray(z["J_regressor"] @ z["v_template"], float)
        if J is None:
            raise ValueError(f"{path}: no rest joints (J / rest_joints / J_regressor+v_template)")
        J = J.reshape(-1, 3)[:24]
        if "parents" in keys:
            par = np.asarray(z["parents"]).astype(int).reshape(-1)[:24]
        elif "kintree_table" in keys:
            par = np.asarray(z["kintree_table"])[0].astype(np.int64)[:24]
        else:
            par = SMPL_PARENTS.copy()
    par = np.where(par > 23, -1, par)
    par[0] = -1
    if J.shape != (24, 3) or not np.array_equal(par, SMPL_PARENTS):
        raise ValueError(f"{path}: expected the SMPL 24-joint tree; got {J.shape} joints, "
                         f"parents {par.tolist()}")
    return TargetSkeleton(par, J, Path(path).name)


@dataclass
class SkeletonMap:
    """How a source skeleton maps onto SMPL's 24 joints.

    Attributes:
        name: skeleton kind ("asf-cmu", "bvh-daz", "bvh-iclone").
        points: SMPL joint -> source joint name, or {name: weight} blend. Joints 3, 6, 9 may be
            left out when ``spine_chain`` is given.
        spine_chain: source joints from pelvis to neck base; SMPL spine1-3 are placed along it at
            the target's arc-length fractions.
        twist: SMPL joint -> source joint whose rotation carries that SMPL joint's segment (for
            twist and for leaves). Missing: no twist relative to the parent.
        to_smpl_axes: rotation from the source's world axes to SMPL's (Y up).
        hinge_twist_default: upper-limb joint -> twist (radians) used when a clip does not bend
            that limb enough to measure it (see :func:`hinge_twist_corrections`).
        calibration: a T-pose facing +Z as {"rotations": name -> world rotation (3, 3),
            "positions": name -> world position (3,)}, in SMPL axes. ``None``: the source's
            zero pose (all channels/dofs zero) is that T-pose.
    """

    name: str
    points: dict[int, str | dict[str, float]]
    twist: dict[int, str]
    spine_chain: list[str] = field(default_factory=list)
    to_smpl_axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    calibration: dict[str, dict[str, np.ndarray]] | None = None
    hinge_twist_default: dict[int, float] = field(default_factory=dict)


def _lr(left: dict[int, object], swap: callable) -> dict[int, object]:
    """Add right-side entries mirrored from left-side ones."""
    out = dict(left)
    for k, v in left.items():
        m = int(SMPL_MIRROR[k])
        if m != k:
            out[m] = swap(v)
    return out


# All three archives descend from CMU/Vicon skeletons whose T-pose holds the upper arms twisted
# 30 degrees from palms-down (the ASF humerus/radius "axis 180 -30 -90"): the elbow hinge is
# tilted 30 degrees. hinge_twist_corrections() measures +30.0 (left) / -30.0 (right) on every
# clip of the three archives that bends its elbows; this is used for clips that do not.
CMU_ARM_TWIST = {1: 0.0, 2: 0.0, 16: float(np.radians(30.0)), 17: float(np.radians(-30.0))}


def _swap_asf(v):
    if isinstance(v, dict):
        return {_swap_asf(k): w for k, w in v.items()}
    return "r" + v[1:] if v[:1] == "l" and v not in ("lowerback", "lowerneck") else v


ASF_CMU_MAP = SkeletonMap(
    "asf-cmu",
    points=_lr({0: "root", 1: "lhipjoint", 4: "lfemur", 7: "ltibia", 10: "lfoot", 12: "thorax",
                15: "upperneck", 13: {"thorax": 0.55, "lclavicle": 0.45}, 16: "lclavicle",
                18: "lhumerus", 20: "lradius", 22: "lhand"}, _swap_asf),
    twist=_lr({0: "root", 1: "lfemur", 4: "ltibia", 7: "lfoot", 10: "ltoes", 3: "lowerback",
               6: "upperback", 9: "thorax", 12: "upperneck", 15: "head", 13: "lclavicle",
               16: "lhumerus", 18: "lwrist", 20: "lhand", 22: "lfingers"}, _swap_asf),
    spine_chain=["root", "lowerback", "upperback", "thorax"],
    hinge_twist_default=dict(CMU_ARM_TWIST),
)


def _swap_daz(v):
    return "r" + v[1:] if v[:1] == "l" else v


BVH_DAZ_MAP = SkeletonMap(
    "bvh-daz",
    points=_lr({0: "hip", 1: "lThigh", 4: "lShin", 7: "lFoot", 10: "lFoot_end", 12: "neck",
                15: "head", 13: "lCollar", 16: "lShldr", 18: "lForeArm", 20: "lHand",
                22: "lMid1"}, _swap_daz),
    twist=_lr({0: "hip", 1: "lThigh", 4: "lShin", 7: "lFoot", 10: "lFoot", 3: "abdomen",
               6: "chest", 9: "chest", 12: "neck", 15: "head", 13: "lCollar", 16: "lShldr",
               18: "lForeArm", 20: "lHand", 22: "lHand"}, _swap_daz),
    spine_chain=["hip", "abdomen", "chest", "neck"],
    hinge_twist_default=dict(CMU_ARM_TWIST),
)


def _swap_cc(v):
    return v.replace("_L_", "_R_") if "_L_" in v else v


_ICLONE_TPOSE_FILE = Path(__file__).with_name("iclone_tpose.json")


def _load_iclone_calibration() -> dict[str, dict[str, np.ndarray]] | None:
    if not _ICLONE_TPOSE_FILE.exists():
        return None
    data = json.loads(_ICLONE_TPOSE_FILE.read_text())
    return {"rotations": {k: Rotation.from_quat(q).as_matrix()
                          for k, q in data["rotations_xyzw"].items()},
            "positions": {k: np.array(v) for k, v in data["positions_m"].items()}}


def tpose_calibration(motion: SourceMotion, frame: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A calibration (see :class:`SkeletonMap`) from one frame of ``motion`` that shows a T-pose.

    The frame is turned about the vertical so the hips line runs along +X (facing +Z) and moved
    so the root sits at the origin. Used to build ``iclone_tpose.json`` from a CMU iClone clip
    whose frame 0 is the added T-pose (subject 007, clips 03-12).
    """
    pos, rot = motion.positions[frame], motion.rotations[frame]
    hips = [i for i, n in enumerate(motion.names) if "Thigh" in n and "Twist" not in n]
    if len(hips) != 2:
        raise ValueError(f"{motion.source}: cannot find the two thigh joints to face the T-pose")
    lr = pos[hips[0]] - pos[hips[1]]
    if "_R_" in motion.names[hips[0]]:
        lr = -lr
    yaw = np.arctan2(-lr[2], lr[0])  # rotate about Y so lr -> +X
    Ry = Rotation.from_euler("y", -yaw).as_matrix()
    pos = (pos - pos[0]) @ Ry.T
    rot = np.einsum("ab,jbc->jac", Ry, rot)
    return {"rotations": {n: rot[i] for i, n in enumerate(motion.names)},
            "positions": {n: pos[i] for i, n in enumerate(motion.names)}}


def save_calibration(cal: dict[str, dict[str, np.ndarray]], path: str | Path, note: str) -> None:
    """Write a calibration as JSON (quaternions x, y, z, w and positions in metres)."""
    data = {"note": note,
            "rotations_xyzw": {k: np.round(Rotation.from_matrix(R).as_quat(), 7).tolist()
                               for k, R in cal["rotations"].items()},
            "positions_m": {k: np.round(p, 6).tolist() for k, p in cal["positions"].items()}}
    Path(path).write_text(json.dumps(data, indent=0))


BVH_ICLONE_MAP = SkeletonMap(
    "bvh-iclone",
    points=_lr({0: "CC_Base_Pelvis", 1: "CC_Base_L_Thigh", 4: "CC_Base_L_Calf",
                7: "CC_Base_L_Foot", 10: "CC_Base_L_ToeBase", 12: "CC_Base_NeckTwist01",
                15: "CC_Base_Head", 13: "CC_Base_L_Clavicle", 16: "CC_Base_L_Upperarm",
                18: "CC_Base_L_Forearm", 20: "CC_Base_L_Hand", 22: "CC_Base_L_Mid1"}, _swap_cc),
    twist=_lr({0: "CC_Base_Pelvis", 1: "CC_Base_L_Thigh", 4: "CC_Base_L_Calf",
               7: "CC_Base_L_Foot", 10: "CC_Base_L_ToeBase", 3: "CC_Base_Waist",
               6: "CC_Base_Spine01", 9: "CC_Base_Spine02", 12: "CC_Base_NeckTwist01",
               15: "CC_Base_Head", 13: "CC_Base_L_Clavicle", 16: "CC_Base_L_Upperarm",
               18: "CC_Base_L_Forearm", 20: "CC_Base_L_Hand", 22: "CC_Base_L_Hand"}, _swap_cc),
    spine_chain=["CC_Base_Hip", "CC_Base_Waist", "CC_Base_Spine01", "CC_Base_Spine02",
                 "CC_Base_NeckTwist01"],
    calibration=_load_iclone_calibration(),
    hinge_twist_default=dict(CMU_ARM_TWIST),
)

SKELETON_MAPS = {m.name: m for m in (ASF_CMU_MAP, BVH_DAZ_MAP, BVH_ICLONE_MAP)}

# Joints solved from several directions at once (pairs of SMPL joints: from -> to, weight).
# The pelvis trusts the hips (rigid with the source pelvis) more than the spine (which bends).
MULTI_DIRECTION = {
    0: [(0, 1, 1.0), (0, 2, 1.0), (2, 1, 1.0), (0, 3, 0.25)],
    9: [(9, 12, 1.0), (14, 13, 1.0)],
}


# ----------------------------------------------------------------------------- rotation helpers

def _normalize(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def swing_rotation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest rotations taking unit vectors u to v: (..., 3) -> (..., 3, 3)."""
    u, v = _normalize(u), _normalize(v)
    axis = np.cross(u, v)
    s = np.linalg.norm(axis, axis=-1)
    c = np.sum(u * v, axis=-1)
    # antiparallel: any axis perpendicular to u
    alt = np.cross(u, np.array([1.0, 0, 0]))
    alt = np.where(np.linalg.norm(alt, axis=-1, keepdims=True) < 1e-6,
                   np.cross(u, np.array([0, 1.0, 0])), alt)
    axis = np.where((s < 1e-9)[..., None] & (c < 0)[..., None], _normalize(alt), axis)
    angle = np.arctan2(s, c)
    rv = _normalize(axis) * angle[..., None]
    return Rotation.from_rotvec(rv.reshape(-1, 3)).as_matrix().reshape(u.shape[:-1] + (3, 3))


def kabsch(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rotations R minimising sum_i w_i |R a_i - b_i|^2 (Wahba), batched.

    a: (K, 3) or (T, K, 3) reference directions, b: (T, K, 3) observed, w: (K,).
    Returns (T, 3, 3).
    """
    a = np.broadcast_to(a, b.shape)
    B = np.einsum("k,tki,tkj->tij", w, b, a)
    U, _, Vt = np.linalg.svd(B)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.zeros(B.shape)
    D[:, 0, 0] = 1
    D[:, 1, 1] = 1
    D[:, 2, 2] = d
    return U @ D @ Vt


# ----------------------------------------------------------------------------- source points

def source_points(motion: SourceMotion, smap: SkeletonMap, target: TargetSkeleton) -> np.ndarray:
    """(T, 24, 3) SMPL-like joint positions on the source skeleton, in SMPL axes, metres."""
    T = motion.num_frames
    P = np.zeros((T, 24, 3))
    for j, spec in smap.points.items():
        if isinstance(spec, dict):
            tot = sum(spec.values())
            P[:, j] = sum(w * motion.positions[:, motion.index(n)] for n, w in spec.items()) / tot
        else:
            P[:, j] = motion.positions[:, motion.index(spec)]
    if smap.spine_chain:
        chain = np.stack([motion.positions[:, motion.index(n)] for n in smap.spine_chain], 1)
        seg = np.linalg.norm(np.diff(chain, axis=1), axis=-1)  # (T, S)
        cum = np.concatenate([np.zeros((T, 1)), np.cumsum(seg, 1)], 1)
        J = target.rest_joints
        tl = [np.linalg.norm(J[b] - J[a]) for a, b in ((0, 3), (3, 6), (6, 9), (9, 12))]
        fr = np.cumsum(tl)[:3] / np.sum(tl)
        for j, f in zip((3, 6, 9), fr):
            s = f * cum[:, -1]
            k = np.clip((cum[:, 1:] < s[:, None]).sum(1), 0, chain.shape[1] - 2)
            lo = cum[np.arange(T), k]
            hi = cum[np.arange(T), k + 1]
            a = ((s - lo) / np.maximum(hi - lo, 1e-9))[:, None]
            P[:, j] = (1 - a) * chain[np.arange(T), k] + a * chain[np.arange(T), k + 1]
    missing = sorted(set(range(24)) - set(smap.points) - ({3, 6, 9} if smap.spine_chain else set()))
    if missing:
        raise ValueError(f"skeleton map {smap.name!r} places no point for SMPL joints {missing}")
    return P @ smap.to_smpl_axes.T


def calibration_pose(motion: SourceMotion, smap: SkeletonMap) -> SourceMotion:
    """The source skeleton in its T-pose facing +Z, as a one-frame motion in SMPL axes."""
    A = smap.to_smpl_axes
    rot = np.einsum("ab,jbc->jac", A, motion.rest_rotations)
    pos = motion.rest_positions @ A.T
    if smap.calibration is not None:  # stored calibrations are already in SMPL axes
        used = set(smap.twist.values()) | set(smap.spine_chain)
        for spec in smap.points.values():
            used |= set(spec) if isinstance(spec, dict) else {spec}
        missing = sorted(used - set(smap.calibration["rotations"]))
        if missing:
            raise ValueError(f"{motion.source}: calibration of {smap.name!r} lacks joints "
                             f"{missing[:5]}; is this the right skeleton map?")
        rot, pos = rot.copy(), pos.copy()
        for i, n in enumerate(motion.names):  # joints the map does not use keep the zero pose
            if n in smap.calibration["rotations"]:
                rot[i] = smap.calibration["rotations"][n]
                pos[i] = smap.calibration["positions"][n]
    return SourceMotion(motion.names, motion.parents, pos[None], rot[None], motion.fps,
                        pos, rot, motion.source + " (calibration)")


# ----------------------------------------------------------------------------- retargeting

@dataclass
class RetargetResult:
    """SMPL motion: local axis-angle ``poses`` (T, 72), ``trans`` (T, 3), plus diagnostics."""

    poses: np.ndarray
    trans: np.ndarray
    fps: float
    global_rot: np.ndarray  # (T, 24, 3, 3)
    source_points: np.ndarray  # (T, 24, 3) SMPL axes, metres (unscaled source)
    scale: float  # target leg length / source leg length, applied to translation
    hinge_twist: dict[int, float] = field(default_factory=dict)  # joint -> radians applied


def retarget(motion: SourceMotion, smap: SkeletonMap, target: TargetSkeleton | None = None,
             hinge_twist: bool = True) -> RetargetResult:
    """Retarget every frame of ``motion`` onto ``target`` (see the module docstring).

    ``hinge_twist``: correct the twist of thighs and upper arms so knees and elbows bend about
    the target's hinge axes (see :func:`hinge_twist_corrections`).
    """
    target = target or load_target_skeleton()
    J = target.rest_joints
    par = target.parents
    P = source_points(motion, smap, target)
    T = P.shape[0]
    A = smap.to_smpl_axes
    Gsrc = np.einsum("ab,tjbc->tjac", A, motion.rotations)
    cal_motion = calibration_pose(motion, smap)
    cal = cal_motion.rotations[0]
    P_cal = source_points(cal_motion, SkeletonMap(smap.name, smap.points, smap.twist,
                                                  smap.spine_chain), target)[0]

    children = {j: [c for c in range(24) if par[c] == j] for j in range(24)}
    G = np.zeros((T, 24, 3, 3))
    for j in range(24):  # parents come first in SMPL order
        if j in smap.twist:
            s = motion.index(smap.twist[j])
            R_rel = Gsrc[:, s] @ cal[s].T  # source joint's rotation away from its T-pose
        else:
            R_rel = G[:, par[j]] if par[j] >= 0 else np.broadcast_to(np.eye(3), (T, 3, 3))
        if j in MULTI_DIRECTION:
            # Wahba fit of the source's directions now against the same directions in its own
            # T-pose: the rotation away from the T-pose, which is the target's global rotation
            # (its rest pose is a T-pose with identity rotations). Fitting against the target's
            # rest directions instead would tilt the pelvis by the skeletons' shape difference.
            pairs = MULTI_DIRECTION[j]
            a = np.stack([_normalize(P_cal[q] - P_cal[p]) for p, q, _ in pairs])
            b = np.stack([_normalize(P[:, q] - P[:, p]) for p, q, _ in pairs], 1)
            G[:, j] = kabsch(a, b, np.array([w for *_, w in pairs]))
        elif children[j]:
            c = children[j][0]
            d_rest = _normalize(J[c] - J[j])
            d_src = _normalize(P[:, c] - P[:, j])
            u = np.einsum("tab,b->ta", R_rel, d_rest)
            G[:, j] = swing_rotation(u, d_src) @ R_rel
        else:
            G[:, j] = R_rel
    hinge = {}
    if hinge_twist:
        hinge = dict(smap.hinge_twist_default)
        hinge.update(hinge_twist_corrections(G, P, target))
    for j, angle in hinge.items():
        d = _normalize(J[children[j][0]] - J[j])
        G[:, j] = G[:, j] @ Rotation.from_rotvec(-angle * d).as_matrix()
    local = G.copy()
    local[:, 1:] = np.einsum("tjba,tjbc->tjac", G[:, par[1:]], G[:, 1:])
    poses = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_rotvec().reshape(T, 72)

    src_leg = np.mean([np.linalg.norm(P[:, h] - P[:, k], axis=-1).mean()
                       + np.linalg.norm(P[:, k] - P[:, a], axis=-1).mean()
                       for h, k, a in ((1, 4, 7), (2, 5, 8))])
    scale = target.leg_length() / src_leg
    # Put the midpoint of the SMPL hips on the (scaled) source's: the legs hang from there, so
    # feet meet the floor even where skeletons place their pelvis joint differently.
    hip_mid_rest = 0.5 * (J[1] + J[2]) - J[0]
    pelvis = scale * 0.5 * (P[:, 1] + P[:, 2]) - np.einsum("tab,b->ta", G[:, 0], hip_mid_rest)
    trans = pelvis - J[0]
    return RetargetResult(poses, trans, motion.fps, G, P, float(scale), hinge)


# Hinge joints: (parent segment's joint, hinge joint, hinge axis in the target's T-pose frame).
# Knees flex with the shin going back (-Z), elbows with the forearm going forward (+Z).
HINGES = [(1, 4, (1.0, 0, 0)), (2, 5, (1.0, 0, 0)), (16, 18, (0, -1.0, 0)),
          (17, 19, (0, 1.0, 0))]


def hinge_twist_corrections(G: np.ndarray, P: np.ndarray, target: TargetSkeleton,
                            min_bend_deg: float = 30.0, min_frames: int = 30,
                            min_consistency: float = 0.9) -> dict[int, float]:
    """Twist angles (radians, about the bone) that make knees and elbows bend about the target's
    hinge axes.

    A source T-pose may hold the thigh or upper arm twisted differently from the target's (a
    palm turned forward, say); twist copied from it then makes the limb bend in a tilted plane.
    For each hinge the lower bone is seen from the upper segment's solved frame; its tip moves
    on a circle about the bend axis, found as the normal of the tips' plane. If the clip bends
    it (``min_frames`` frames beyond ``min_bend_deg``), the bends agree (mean resultant length
    of their normals >= ``min_consistency``) and the tips spread over a flat arc, the upper
    segment is turned
    about its bone so the mean axis, seen across the bone, matches the target's. Returns, per
    upper joint, the angle from the observed to the target axis about the bone (the segment is
    turned by minus that). Bone directions do not change.
    """
    J = target.rest_joints
    out: dict[int, float] = {}
    for upper, joint, axis in HINGES:
        child = [c for c in range(24) if target.parents[c] == joint][0]
        # the lower bone seen from the upper segment's frame, against its rest direction there:
        # their plane's normal is the bend axis (exact for a hinge at right angles to the bone)
        low_rest = _normalize(J[child] - J[joint])
        low = np.einsum("tba,tb->ta", G[:, upper], _normalize(P[:, child] - P[:, joint]))
        n = np.cross(low_rest, low)
        s = np.linalg.norm(n, axis=-1)
        bent = (s > np.sin(np.radians(min_bend_deg))) | (low @ low_rest < 0)
        bent &= low @ low_rest < np.cos(np.radians(min_bend_deg))
        if bent.sum() < min_frames:
            continue
        # a hinge moves the bone's tip on a circle about its axis: the axis is the normal of the
        # plane of all observed tips (least-variance direction; exact whatever the bone's angle
        # to the axis and the rest poses). The bend normals give its sign and a consistency check.
        disp = low - low.mean(0)
        evals, evecs = np.linalg.eigh(disp.T @ disp / len(low))
        mean = (n[bent] / s[bent, None]).mean(0)
        if (np.linalg.norm(mean) < min_consistency or evals[1] < 1e-3
                or evals[0] > 0.05 * evals[1]):
            continue
        axis_obs = evecs[:, 0] * np.sign(evecs[:, 0] @ mean)
        d = _normalize(J[joint] - J[upper])
        e = np.asarray(axis)
        a_p = _normalize(axis_obs - d * (axis_obs @ d))
        e_p = _normalize(e - d * (e @ d))
        out[upper] = float(np.arctan2(np.cross(a_p, e_p) @ d, a_p @ e_p))
    return out


# ----------------------------------------------------------------------------- SMPL utilities

def smpl_fk(poses: np.ndarray, target: TargetSkeleton, trans: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions (T, 24, 3) and global rotations (T, 24, 3, 3) of the target skeleton."""
    T = poses.shape[0]
    R = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(T, 24, 3, 3)
    J = target.rest_joints
    par = target.parents
    G = np.zeros_like(R)
    X = np.zeros((T, 24, 3))
    for j in range(24):
        if par[j] < 0:
            G[:, j] = R[:, j]
            X[:, j] = J[j]
        else:
            G[:, j] = G[:, par[j]] @ R[:, j]
            X[:, j] = X[:, par[j]] + np.einsum("tab,b->ta", G[:, par[j]], J[j] - J[par[j]])
    if trans is not None:
        X = X + trans[:, None]
    return X, G


def bone_direction_errors(result: RetargetResult, target: TargetSkeleton) -> np.ndarray:
    """(T, 23) angle in degrees between each retargeted SMPL bone (parent -> joint k, k=1..23)
    and the same bone on the source."""
    par = target.parents
    J = target.rest_joints
    G = result.global_rot
    d_rest = _normalize(J[1:] - J[par[1:]])
    d_tgt = np.einsum("tjab,jb->tja", G[:, par[1:]], d_rest)
    d_src = _normalize(result.source_points[:, 1:] - result.source_points[:, par[1:]])
    cos = np.clip(np.sum(d_tgt * d_src, -1), -1, 1)
    return np.degrees(np.arccos(cos))


def calibration_offsets(motion: SourceMotion, smap: SkeletonMap,
                        target: TargetSkeleton) -> np.ndarray:
    """(23,) bone direction errors (degrees) of the source's own T-pose retargeted: the part of
    :func:`bone_direction_errors` that comes from the skeletons' different rest shapes."""
    cal = calibration_pose(motion, smap)
    plain = SkeletonMap(smap.name, smap.points, smap.twist, smap.spine_chain,
                        calibration={"rotations": dict(zip(cal.names, cal.rest_rotations)),
                                     "positions": dict(zip(cal.names, cal.rest_positions))})
    return bone_direction_errors(retarget(cal, plain, target), target)[0]


def mirror_poses(poses: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror SMPL motion across the sagittal plane (x -> -x): swap left/right joints and
    reflect each axis-angle (x, y, z) -> (x, -y, -z); translation x -> -x."""
    p = poses.reshape(poses.shape[0], 24, 3)[:, SMPL_MIRROR] * np.array([1.0, -1.0, -1.0])
    return p.reshape(poses.shape), trans * np.array([-1.0, 1.0, 1.0])


def resample(poses: np.ndarray, trans: np.ndarray, fps_in: float, fps_out: float = 30.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """Resample to ``fps_out``: slerp per joint for rotations, linear for translation.

    Output frames sit at k / fps_out for every k with k / fps_out <= the last input time
    (within a microsecond), so the first frame is kept exactly and so is the last whenever the
    clip's duration is a multiple of 1 / fps_out.
    """
    T = poses.shape[0]
    if T < 2:
        return poses.copy(), trans.copy()
    t_in = np.arange(T) / fps_in
    n_out = int(np.floor(t_in[-1] * fps_out + 1e-6)) + 1
    t_out = np.minimum(np.arange(n_out) / fps_out, t_in[-1])
    nj = poses.shape[1] // 3
    out = np.zeros((n_out, nj, 3))
    for j in range(nj):
        rots = Rotation.from_rotvec(poses[:, 3 * j:3 * j + 3])
        out[:, j] = Slerp(t_in, rots)(t_out).as_rotvec()
    tr = np.stack([np.interp(t_out, t_in, trans[:, k]) for k in range(3)], -1)
    return out.reshape(n_out, -1), tr

"""Named joint sets in one place: SMPL-24, COCO-17 and BlazePose-33.

Everything that talks about joints by index (training data, guidance, outputs, the
keypoint regressors of the body model) takes its names, orders, parents, left/right
flips and cross-set mappings from here.

Conventions: "left" is the person's own left. Index maps are tuples of ints; ``-1``
in a map means "no counterpart".
"""
from __future__ import annotations

# --- SMPL (24 joints, the standard SMPL order) -----------------------------------------

SMPL24_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)

#: Parent of each SMPL joint (-1 for the root), the SMPL kinematic tree.
SMPL24_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)

# --- COCO-17 (the COCO keypoint order) --------------------------------------------------

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: Bones drawn for COCO-17 (pairs of indices), the usual COCO skeleton.
COCO17_EDGES: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
)

# --- BlazePose-33 (MediaPipe pose landmark order) ---------------------------------------

BLAZEPOSE33_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)


#: Bones drawn for BlazePose-33 (pairs of indices): face, arms and hands, torso, legs and feet.
BLAZEPOSE33_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)


def _mirror_name(name: str) -> str:
    """The name of the mirrored point: swaps left/right in a joint or landmark name."""
    for a, b in (("left", "right"), ("right", "left")):
        if name.startswith(a + "_"):
            return b + name[len(a):]
        if name.endswith("_" + a):
            return name[: -len(a)] + b
    return name


def flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    """Index permutation that swaps left and right points of a joint set.

    ``points[..., flip_permutation(names), :]`` relabels a mirrored skeleton.
    """
    index = {n: i for i, n in enumerate(names)}
    return tuple(index[_mirror_name(n)] for n in names)


SMPL24_FLIP: tuple[int, ...] = flip_permutation(SMPL24_NAMES)
COCO17_FLIP: tuple[int, ...] = flip_permutation(COCO17_NAMES)
BLAZEPOSE33_FLIP: tuple[int, ...] = flip_permutation(BLAZEPOSE33_NAMES)


def index_map(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[int, ...]:
    """For each name of ``target``, its index in ``source`` (-1 where absent).

    ``source_points[..., index_map(source, target), :]`` reorders points of the source
    set into the target set wherever the target's name exists in the source.
    """
    index = {n: i for i, n in enumerate(source)}
    return tuple(index.get(n, -1) for n in target)


#: BlazePose-33 index of each COCO-17 keypoint (all 17 exist in BlazePose).
COCO17_FROM_BLAZEPOSE33: tuple[int, ...] = index_map(BLAZEPOSE33_NAMES, COCO17_NAMES)

#: SMPL-24 joint that best stands in for each COCO-17 keypoint, -1 where none does
#: (face points). Joint centres are not surface landmarks: hips in particular differ
#: by several centimetres, so use this only as a fallback.
COCO17_FROM_SMPL24: tuple[int, ...] = index_map(SMPL24_NAMES, COCO17_NAMES)

#: SMPL-24 joint standing in for each BlazePose-33 point, -1 where none does.
BLAZEPOSE33_FROM_SMPL24: tuple[int, ...] = index_map(SMPL24_NAMES, BLAZEPOSE33_NAMES)

JOINT_SETS: dict[str, tuple[str, ...]] = {
    "smpl24": SMPL24_NAMES,
    "coco17": COCO17_NAMES,
    "blazepose33": BLAZEPOSE33_NAMES,
}


def joint_names(joint_set: str) -> tuple[str, ...]:
    """Names of a joint set by its id (``smpl24``, ``coco17`` or ``blazepose33``)."""
    try:
        return JOINT_SETS[joint_set]
    except KeyError:
        raise ValueError(
            f"unknown joint set {joint_set!r}; expected one of {sorted(JOINT_SETS)}"
        ) from None


def mirror_points(points, names: tuple[str, ...]):
    """Mirror 3D points (..., J, 3) of a joint set through the body's sagittal plane.

    Negates X (the body's left in SMPL axes) and swaps left and right points, so that a
    left-right mirrored body gets correctly labelled points. Works on numpy arrays and
    torch tensors alike.
    """
    out = points[..., list(flip_permutation(names)), :]
    return out * out.new_tensor([-1.0, 1.0, 1.0]) if hasattr(out, "new_tensor") else out * [-1.0, 1.0, 1.0]


def mirror_smpl_axis_angle(pose):
    """Mirror SMPL poses (..., 24, 3) axis-angle left-right (the usual flip augmentation).

    Mirroring through the plane x = 0 maps a rotation vector (x, y, z) to (x, -y, -z),
    and the left and right joints swap. A body posed with the result is the mirror
    image of the original one (exactly, for a left-right symmetric model).
    """
    out = pose[..., list(SMPL24_FLIP), :]
    return out * out.new_tensor([1.0, -1.0, -1.0]) if hasattr(out, "new_tensor") else out * [1.0, -1.0, -1.0]

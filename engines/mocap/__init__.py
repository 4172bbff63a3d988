"""Motion-capture readers (ASF/AMC, BVH) and retargeting onto the SMPL 24-joint tree.

See ``docs/mocap.md``. Training arrays come from :func:`engines.mocap.dataset.main`.
"""

from engines.mocap.asf_amc import read_asf, read_amc, read_asf_amc
from engines.mocap.bvh import read_bvh
from engines.mocap.motion import SourceMotion
from engines.mocap.retarget import (
    SKELETON_MAPS, SMPL_JOINT_NAMES, SMPL_PARENTS, SkeletonMap, TargetSkeleton,
    bone_direction_errors, fallback_target, load_target_skeleton, mirror_poses, resample,
)
# The function ``retarget`` is not re-exported: it would hide the module of the same name.

__all__ = [
    "SKELETON_MAPS", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "SkeletonMap", "SourceMotion",
    "TargetSkeleton", "bone_direction_errors", "fallback_target", "load_target_skeleton",
    "mirror_poses", "read_amc", "read_asf", "read_asf_amc", "read_bvh", "resample",
]

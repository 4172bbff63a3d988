"""The SMPL skeleton as a chain of frames, for outputs that send bones rather than joint
positions (ROS 2 TF, VMC): each joint's offset from its parent in the parent's frame.

For posed joints ``J`` and global rotations ``G`` (the local rotations composed along the
chain), ``J_j - J_parent = G_parent (rest_j - rest_parent)``, so the bone in the parent's
frame is ``G_parent^T (J_j - J_parent)``; chaining local rotations and these offsets gives
``J`` back exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def global_rotations(local: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(J, 3, 3) local rotations (parents before children) -> (J, 3, 3) global ones."""
    glob = np.array(local, np.float64, copy=True)
    for j in range(1, len(glob)):
        glob[j] = glob[parents[j]] @ local[j]
    return glob


def parent_frame_offsets(joints: np.ndarray, local: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(J, 3): joint j's offset from its parent, in the parent's frame (row 0, the root: zero),
    from posed ``joints`` (J, 3) and ``local`` rotations (J, 3, 3)."""
    joints = np.asarray(joints, np.float64)
    glob = global_rotations(local, parents)
    par = np.asarray(parents[1:])
    out = np.zeros_like(joints)
    out[1:] = np.einsum("nji,nj->ni", glob[par], joints[1:] - joints[par])  # G_parent^T (child - parent)
    return out

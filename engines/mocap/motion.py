"""The common result of the motion-capture readers: a source skeleton's joints posed over time."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SourceMotion:
    """Global joint positions and orientations of a source skeleton, frame by frame.

    Attributes:
        names: joint (node) names, parents before children.
        parents: index of each joint's parent, -1 for the root.
        positions: (T, J, 3) global joint positions in metres, in the file's world axes.
        rotations: (T, J, 3, 3) global orientation of each joint's frame (the frame that moves
            the segments hanging from it; for ASF nodes, the bone that ends at the node).
        fps: frames per second.
        rest_positions: (J, 3) joint positions of the skeleton's own zero pose (all channels or
            dofs zero), metres, same axes.
        rest_rotations: (J, 3, 3) global orientations in that zero pose.
        source: file the motion came from, for error messages and bookkeeping.
    """

    names: list[str]
    parents: np.ndarray
    positions: np.ndarray
    rotations: np.ndarray
    fps: float
    rest_positions: np.ndarray
    rest_rotations: np.ndarray
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    def index(self, name: str) -> int:
        """Index of joint ``name``; a clear error naming the file when it is missing."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.source or 'motion'}: no joint named {name!r} "
                           f"(joints: {', '.join(self.names[:12])}...)") from None

    def bone_lengths(self) -> np.ndarray:
        """(T, J) distance from each joint to its parent (0 for the root)."""
        par = np.where(self.parents < 0, np.arange(len(self.parents)), self.parents)
        return np.linalg.norm(self.positions - self.positions[:, par], axis=-1)

    def frames(self, sel: slice | np.ndarray) -> "SourceMotion":
        """A copy holding only the selected frames."""
        return SourceMotion(self.names, self.parents, self.positions[sel], self.rotations[sel],
                            self.fps, self.rest_positions, self.rest_rotations, self.source,
                            dict(self.meta))


def forward_kinematics(parents: np.ndarray, offsets: np.ndarray, local_rot: np.ndarray,
                       root_trans: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chain local rotations down a tree.

    Args:
        parents: (J,) parent indices, each parent before its children, -1 for roots.
        offsets: (J, 3) or (T, J, 3) joint position relative to the parent, in the parent's frame.
        local_rot: (T, J, 3, 3) rotation of each joint relative to its parent's frame.
        root_trans: (T, 3) added to root positions (offsets of roots are added too).

    Returns:
        positions (T, J, 3) and global rotations (T, J, 3, 3).
    """
    T, J = local_rot.shape[:2]
    offsets = np.broadcast_to(offsets, (T, J, 3))
    pos = np.zeros((T, J, 3))
    rot = np.zeros((T, J, 3, 3))
    for j in range(J):
        p = parents[j]
        if p < 0:
            rot[:, j] = local_rot[:, j]
            pos[:, j] = offsets[:, j] + (0.0 if root_trans is None else root_trans)
        else:
            rot[:, j] = rot[:, p] @ local_rot[:, j]
            pos[:, j] = pos[:, p] + np.einsum("tab,tb->ta", rot[:, p], offsets[:, j])
    return pos, rot

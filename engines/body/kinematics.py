"""Forward kinematics and linear blend skinning for SMPL-style trees, in torch.

Batched over a leading dimension B, differentiable, dtype/device of the inputs.
"""
from __future__ import annotations

import torch

from engines.tensor_cache import tensor_cache


def tree_levels(parents: list[int] | tuple[int, ...]) -> list[list[int]]:
    """Joints grouped by depth: level 0 is the root, level d+1 holds children of level d.

    Forward kinematics then takes one batched product per level instead of one per joint.
    """
    depth = []
    for j, p in enumerate(parents):
        if p < 0:
            depth.append(0)
        else:
            if p >= j:
                raise ValueError(f"parents must come before children; joint {j} has parent {p}")
            depth.append(depth[p] + 1)
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for j, d in enumerate(depth):
        levels[d].append(j)
    return levels


@tensor_cache(maxsize=16)
def _level_plan(parents: tuple[int, ...], device: str):
    """Index tensors for level-by-level kinematics: the joints in level order (root first),
    each one's parent (the root's own index for the root), per level after the root its span
    in level order and the position of each joint's parent within the level before it, and
    the permutation from level order back to joint order."""
    levels = tree_levels(parents)
    level_order = [j for level in levels for j in level]
    at = {j: k for k, j in enumerate(level_order)}
    spans, start = [], 0
    for level in levels:
        spans.append((start, start + len(level)))
        start += len(level)
    plan = [((a, b), torch.tensor([at[parents[j]] - prev[0] for j in level_order[a:b]], device=device))
            for (a, b), prev in zip(spans[1:], spans[:-1])]
    order = torch.empty(len(parents), dtype=torch.long)
    order[torch.tensor(level_order)] = torch.arange(len(parents))
    parent = torch.tensor([max(parents[j], 0) for j in level_order], device=device)
    return torch.tensor(level_order, device=device), parent, plan, order.to(device)


#: The last row of a 4x4 rigid map (a constant: a tensor made from a list costs a few us a call).
_BOTTOM_ROW = torch.tensor([0.0, 0.0, 0.0, 1.0])


def forward_kinematics(
    rotations: torch.Tensor,
    rest_joints: torch.Tensor,
    parents: list[int] | tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotations and positions of the joints of a posed tree.

    Args:
        rotations: (B, J, 3, 3) local joint rotations (the root's is its world rotation).
        rest_joints: (B, J, 3) rest-pose joint positions.
        parents: parent of each joint, -1 for the root (a single root at index 0).

    Returns:
        (B, J, 3, 3) world rotations G_j and (B, J, 3) posed joint positions t_j, with
        ``G_j = G_parent R_j`` and ``t_j = t_parent + G_parent (J_j - J_parent)``; the root
        stays at its rest position.
    """
    parents = tuple(int(p) for p in parents)
    level_order, parent, plan, order = _level_plan(parents, str(rest_joints.device))
    B, J = rotations.shape[:2]
    # Each joint's local map x -> R_j x + (J_j - J_parent) as one 4x4 matrix, in level order,
    # so that a level is a slice and its world maps are one gather of its parents' and one
    # batched product: a few dozen tensor operations for any batch (this runs inside the
    # fit's every step, where the count of operations, not their size, sets the time).
    # (index_select, not advanced indexing: a fraction of the cost per call on small tensors)
    rest = rest_joints.index_select(1, level_order)
    offsets = rest - rest_joints.index_select(1, parent)
    offsets[:, 0] = rest[:, 0]  # the root's map places it at its rest position
    bottom = _BOTTOM_ROW.to(rotations).expand(B, J, 1, 4)
    local = torch.cat([torch.cat([rotations.index_select(1, level_order), offsets[..., None]], -1), bottom], -2)
    world = [local[:, :1]]
    for (a, b), parent_pos in plan:
        world.append(world[-1].index_select(1, parent_pos) @ local[:, a:b])
    world = torch.cat(world, dim=1).index_select(1, order)
    return world[..., :3, :3], world[..., :3, 3]


def linear_blend_skinning(
    rest_vertices: torch.Tensor,
    weights: torch.Tensor,
    world_rotations: torch.Tensor,
    translations: torch.Tensor,
) -> torch.Tensor:
    """Skinned vertices (B, V, 3): v' = sum_j w_vj (G_j v + T_j).

    Args:
        rest_vertices: (B, V, 3) shaped (and pose-corrected) rest vertices.
        weights: (V, J) skinning weights.
        world_rotations: (B, J, 3, 3); translations: (B, J, 3): the per-joint rigid maps
            from the rest pose to the posed one, x -> G_j x + (t_j - G_j J_j).
    """
    B, J = world_rotations.shape[:2]
    # Blend the per-joint maps with one (V, J) x (J, B*12) product, the columns of each
    # rotation first (so column d of the blended matrix is a contiguous slice), then
    # apply them as 3 multiply-adds, all in a (V, B, .) layout that keeps memory contiguous.
    A = torch.cat([world_rotations.transpose(-1, -2).reshape(B, J, 9), translations], dim=-1)
    Av = (weights @ A.permute(1, 0, 2).reshape(J, B * 12)).view(-1, B, 12)  # (V, B, 12)
    v = rest_vertices.transpose(0, 1)  # (V, B, 3)
    out = Av[..., 9:] + Av[..., 0:3] * v[..., 0:1]
    out = out + Av[..., 3:6] * v[..., 1:2]
    out = out + Av[..., 6:9] * v[..., 2:3]
    return out.transpose(0, 1).contiguous()

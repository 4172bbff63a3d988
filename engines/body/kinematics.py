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
    """Index tensors for level-by-level kinematics: per level after the root, its joints and
    the position of each one's parent within the previous level; the permutation from level
    order back to joint order; and each joint's parent (the root's own index for the root)."""
    levels = tree_levels(parents)
    plan = []
    for prev, level in zip(levels, levels[1:]):
        where = {j: k for k, j in enumerate(prev)}
        plan.append((torch.tensor(level, device=device), torch.tensor([where[parents[j]] for j in level], device=device)))
    level_order = [j for level in levels for j in level]
    order = torch.empty(len(parents), dtype=torch.long)
    order[torch.tensor(level_order)] = torch.arange(len(parents))
    par = torch.tensor([max(p, 0) for p in parents], device=device)
    return plan, order.to(device), par


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
    plan, order, par = _level_plan(parents, str(rest_joints.device))
    offsets = rest_joints - rest_joints[:, par]  # root row: zero
    # One batched product per tree level, each level's parents gathered from the level
    # before it: a few dozen tensor operations for any batch (this runs inside guidance's
    # gradient loop, where the count of operations, not their size, sets the time).
    G, t = rotations[:, :1], rest_joints[:, :1]
    Gs, ts = [G], [t]
    for idx, parent_pos in plan:
        Gp, tp = G[:, parent_pos], t[:, parent_pos]
        G = Gp @ rotations[:, idx]
        t = tp + (Gp @ offsets[:, idx, :, None])[..., 0]
        Gs.append(G)
        ts.append(t)
    return torch.cat(Gs, dim=1)[:, order], torch.cat(ts, dim=1)[:, order]


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

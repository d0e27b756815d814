"""Pure SMPL forward pass: shape blend, joint regression, pose blend, kinematics, skinning.

Written for XLA on CPU/GPU/TPU: the batch is flattened so that every blend is one GEMM
(the pose blend is [N, 207] x [207, 20670]); joints come from betas through the precomputed
`J_shapedirs` instead of regressing 6890 shaped vertices; the kinematic chain is composed one
tree level at a time (8 levels for SMPL instead of 23 sequential steps); skinning is a dense
[6890, 24] x [24, 12] product per sample fused with the per-vertex transform by XLA.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from lmr_jax.smpl.model import SMPLModel


@functools.lru_cache(maxsize=8)
def _tree_levels(parents: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Groups joints by depth in the tree, root first; each level depends only on earlier ones."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return tuple(
        tuple(j for j in range(len(parents)) if depth[j] == d) for d in range(max(depth) + 1)
    )


def _kinematic_chain(rotmats, joints, parents):
    """World rotations and joint positions by forward kinematics.

    Args:
      rotmats: [N, 24, 3, 3] local rotations.
      joints: [N, 24, 3] rest-pose joint positions.
      parents: static kinematic tree.

    Returns:
      ([N, 24, 3, 3] world rotations, [N, 24, 3] posed joint positions).
    """
    num = len(parents)
    world_rot = [None] * num
    world_pos = [None] * num
    world_rot[0] = rotmats[:, 0]
    world_pos[0] = joints[:, 0]
    for level in _tree_levels(parents)[1:]:
        idx = np.asarray(level)
        par = np.asarray([parents[j] for j in level])
        parent_rot = jnp.stack([world_rot[p] for p in par], axis=1)
        parent_pos = jnp.stack([world_pos[p] for p in par], axis=1)
        offset = joints[:, idx] - joints[:, par]
        rot = jnp.einsum("nkab,nkbc->nkac", parent_rot, rotmats[:, idx])
        pos = jnp.einsum("nkab,nkb->nka", parent_rot, offset) + parent_pos
        for i, j in enumerate(level):
            world_rot[j] = rot[:, i]
            world_pos[j] = pos[:, i]
    return jnp.stack(world_rot, axis=1), jnp.stack(world_pos, axis=1)


def forward(
    model: SMPLModel, betas: jnp.ndarray, rotmats: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """SMPL vertices and joints for a batch of shapes and poses.

    Computes in the dtype of `rotmats` (float32 or bfloat16). Betas beyond the model's shape
    space are refused; fewer betas than the model has use the leading directions.

    Args:
      model: the body model.
      betas: [..., B] shape coefficients (B <= model.num_betas, usually 10).
      rotmats: [..., 24, 3, 3] local joint rotations (rotmats[..., 0] is the global
        orientation).

    Returns:
      vertices [..., 6890, 3] and joints [..., 24, 3] (posed SMPL joints), in metres.
    """
    batch = rotmats.shape[:-3]
    if rotmats.shape[-3:] != (len(model.parents), 3, 3):
        raise ValueError(f"rotmats has shape {rotmats.shape}, expected [..., 24, 3, 3].")
    num_betas = betas.shape[-1]
    if num_betas > model.num_betas or betas.shape[:-1] != batch:
        raise ValueError(f"betas has shape {betas.shape}, expected {(*batch, model.num_betas)} "
                         f"(at most {model.num_betas} shape coefficients).")  # fmt: skip
    dtype = rotmats.dtype
    num_verts = model.v_template.shape[0]
    rot = rotmats.reshape(-1, len(model.parents), 3, 3)
    beta = betas.reshape(-1, num_betas).astype(dtype)
    n = rot.shape[0]

    # Shape blend and joint regression (from the precomputed joint shape directions).
    shapedirs = model.shapedirs[..., :num_betas].astype(dtype).reshape(num_verts * 3, num_betas)
    v_shaped = model.v_template.astype(dtype) + (beta @ shapedirs.T).reshape(n, num_verts, 3)
    j_shapedirs = model.J_shapedirs[..., :num_betas].astype(dtype)
    rest_joints = model.J_template.astype(dtype) + jnp.einsum("nk,jck->njc", beta, j_shapedirs)

    # Pose blend: one GEMM over the batch, driven by (R - I) of the non-root joints.
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(n, -1)
    posedirs = model.posedirs.astype(dtype).reshape(num_verts * 3, -1)
    v_posed = v_shaped + (pose_feature @ posedirs.T).reshape(n, num_verts, 3)

    world_rot, world_pos = _kinematic_chain(rot, rest_joints, model.parents)

    # Skinning: transforms relative to the rest pose, blended per vertex.
    rel_trans = world_pos - jnp.einsum("njab,njb->nja", world_rot, rest_joints)
    transforms = jnp.concatenate([world_rot, rel_trans[..., None]], axis=-1)  # [n, 24, 3, 4]
    weights = model.weights.astype(dtype)
    blended = jnp.einsum("vj,njk->nvk", weights, transforms.reshape(n, -1, 12))
    blended = blended.reshape(n, num_verts, 3, 4)
    vertices = jnp.einsum("nvab,nvb->nva", blended[..., :3], v_posed) + blended[..., 3]
    return vertices.reshape(*batch, num_verts, 3), world_pos.reshape(*batch, -1, 3)

"""Pure SMPL forward pass: shape blend, joint regression, pose blend, kinematics, skinning.

Written for XLA, and measured on CPU (experiments/benchmarks/smpl_forward.py):

- The mesh is carried as three [N, 6890] arrays, one per coordinate, with the vertex axis minor:
  every per-vertex step is then an elementwise loop that XLA vectorises along vertices. (With a
  [N, 6890, 3] or [N, 3, 6890] array, XLA's CPU backend fuses the reshapes around the GEMMs
  into those loops, indexes every element through a division, and runs 5x slower.)
- Shape and pose blends are one GEMM per coordinate over the whole batch,
  [N, B + 207] x [B + 207, 6890], against the precomputed `model.blend_dirs`.
- Joints come from betas through the precomputed `J_shapedirs` instead of regressing 6890
  shaped vertices; the kinematic chain is composed one tree level at a time (8 levels for SMPL
  instead of 23 sequential steps).
- Skinning never materialises the per-vertex blended transforms ([N, 6890, 3, 4], 85 MB at
  batch 256): it is an unrolled sum over the 24 joints of elementwise terms, one loop fusion that
  reads the posed mesh once and writes the result once.
- Skinning has a custom JVP (`_skin`), written so that its transpose, which reverse mode runs,
  is elementwise loops and GEMMs over vertices done a few samples at a time (their operands stay
  in cache). Plain autodiff of the loop would sum over the vertex axis with reduction ops, a
  hundred times slower on CPU. Forward mode works too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from lmr_jax.smpl.model import SMPLModel

# Samples per step of the transform tangent's GEMMs: their operands (12 x 6890 floats per
# sample, 2.6 MB for 8) stay in cache.
_SAMPLES_PER_STEP = 8


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


def _blend(weights_t, terms):
    """sum_j weights_t[j] * terms(j), unrolled: one elementwise fusion, no reduction op."""
    out = 0.0
    for j in range(weights_t.shape[0]):
        out = out + weights_t[j] * terms(j)
    return out


def _skin_points(weights_t, transforms, points):
    """sum_j weights_t[j] * (transforms[:, j] applied to points), coordinate by coordinate.

    Args:
      weights_t: [24, V] skinning weights.
      transforms: [n, 24, 3, 4] rest-to-posed joint transforms.
      points: three [n, V] arrays, the x, y and z of the posed rest mesh.

    Returns:
      Three [n, V] arrays, the x, y and z of the skinned mesh.
    """

    def moved(a):  # coordinate a of every point moved by joint j
        def term(j):
            t = transforms[:, j, a, :, None]  # [n, 4, 1]
            return t[:, 0] * points[0] + t[:, 1] * points[1] + t[:, 2] * points[2] + t[:, 3]

        return term

    return tuple(_blend(weights_t, moved(a)) for a in range(3))


def _points_tangent(weights_t, transforms, points_dot):
    """The skinned mesh's tangent for a tangent of the posed rest mesh (linear in it).

    sum_j sum_b R_j[a, b] * (w_j * dp_b), with each w_j * dp_b formed once: its transpose
    (reverse mode) is then sum_j w_j * (sum_a R_j[a, b] * ct_a), the cheapest order.
    """
    out = [0.0, 0.0, 0.0]
    for j in range(weights_t.shape[0]):
        weighted = [weights_t[j] * d for d in points_dot]
        for a in range(3):
            r = transforms[:, j, a, :, None]
            out[a] = out[a] + (
                r[:, 0] * weighted[0] + r[:, 1] * weighted[1] + r[:, 2] * weighted[2]
            )
    return tuple(out)


def _transform_tangent(weights_t, points, transforms_dot):
    """The skinned mesh's tangent for a tangent [n, 24, 3, 4] of the transforms (linear in it).

    Blends each column of the tangent transforms over joints with a GEMM ([3, 24] x [24, V])
    a few samples at a time, then applies them to the points: the transpose, which reverse mode
    runs, is then GEMMs [3, V] x [V, 24] on products that stay in cache, instead of reductions
    over the vertex axis.
    """
    weights = weights_t.T  # [V, 24]: the transposed GEMMs' right operand as XLA prefers it

    def chunk(args):
        dot, *xyz = args
        # Per column b of the tangent transforms, their blend over joints: [3, V] (GEMMs).
        columns = [jnp.einsum("ja,vj->av", dot[:, :, b], weights) for b in range(4)]
        # Whole-array products (no slices): the transpose is one product per GEMM, no pads.
        out = columns[0] * xyz[0] + columns[1] * xyz[1] + columns[2] * xyz[2] + columns[3]
        return tuple(out[a] for a in range(3))

    chunk = jax.checkpoint(chunk)
    if transforms_dot.shape[0] <= _SAMPLES_PER_STEP:  # one step: no loop
        return jax.vmap(chunk)((transforms_dot, *points))
    return jax.lax.map(chunk, (transforms_dot, *points), batch_size=_SAMPLES_PER_STEP)


@jax.custom_jvp
def _skin(weights_t, transforms, points):
    """Linear blend skinning with the vertex axis minor (see `_skin_points`).

    The custom JVP below is linear in the tangents in a form whose transpose is elementwise
    loops and GEMMs only (see the module docstring).
    """
    return _skin_points(weights_t, transforms, points)


@functools.partial(_skin.defjvp, symbolic_zeros=True)
def _skin_jvp(primals, tangents):
    weights_t, transforms, points = primals
    weights_dot, transforms_dot, points_dot = tangents
    terms = []
    if not all(isinstance(p, SymbolicZero) for p in points_dot):
        points_dot = [
            jnp.zeros_like(p) if isinstance(d, SymbolicZero) else d
            for p, d in zip(points, points_dot, strict=True)
        ]
        terms.append(_points_tangent(weights_t, transforms, points_dot))
    if not isinstance(transforms_dot, SymbolicZero):
        terms.append(_transform_tangent(weights_t, points, transforms_dot))
    if not isinstance(weights_dot, SymbolicZero):
        terms.append(_skin_points(weights_dot, transforms, points))
    tangent = tuple(sum(term[a] for term in terms) if terms else jnp.zeros_like(points[a])
                    for a in range(3))  # fmt: skip
    return _skin_points(weights_t, transforms, points), tangent


def forward(
    model: SMPLModel, betas: jnp.ndarray, rotmats: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """SMPL vertices and joints for a batch of shapes and poses.

    Computes in the dtype of `rotmats` (float32 or bfloat16; float64 under jax_enable_x64):
    the blend GEMMs take their operands in that dtype and accumulate in at least float32; the
    kinematic chain and the skinning sums run in at least float32 (they are small or
    elementwise, and they are where bfloat16 rounding would add up); the outputs are cast to
    that dtype. Betas beyond the model's shape space are refused; fewer betas than the model
    has use the leading directions.

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
    acc = jnp.promote_types(dtype, jnp.float32)
    num_verts = model.v_template.shape[0]
    rot = rotmats.reshape(-1, len(model.parents), 3, 3)
    beta = betas.reshape(-1, num_betas)
    n = rot.shape[0]

    # Shape and pose blend: one GEMM per coordinate over the batch, the pose part driven by
    # (R - I) of the non-root joints; missing betas are zeros so that blend_dirs is used whole.
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(n, -1)
    coeffs = jnp.concatenate(
        [jnp.pad(beta.astype(dtype), ((0, 0), (0, model.num_betas - num_betas))), pose_feature],
        axis=1,
    )
    template = model.v_template_t.astype(acc)
    v_posed = tuple(
        jnp.matmul(coeffs, dirs.astype(dtype), preferred_element_type=acc) + template[c]
        for c, dirs in enumerate(model.blend_dirs)
    )

    # Rest joints from betas, then forward kinematics.
    j_shapedirs = model.J_shapedirs[..., :num_betas].astype(acc)
    rest_joints = model.J_template.astype(acc) + jnp.einsum(
        "nk,jck->njc", beta.astype(acc), j_shapedirs
    )
    world_rot, world_pos = _kinematic_chain(rot.astype(acc), rest_joints, model.parents)

    # Skinning with transforms relative to the rest pose.
    rel_trans = world_pos - jnp.einsum("njab,njb->nja", world_rot, rest_joints)
    transforms = jnp.concatenate([world_rot, rel_trans[..., None]], axis=-1)  # [n, 24, 3, 4]
    # Interleaving x, y, z into [n, V, 3] is the one strided step (fused into the skinning loop).
    vertices = jnp.stack(_skin(model.weights_t.astype(acc), transforms, v_posed), axis=-1)
    return (
        vertices.astype(dtype).reshape(*batch, num_verts, 3),
        world_pos.astype(dtype).reshape(*batch, -1, 3),
    )

"""PC-HMR's pose calibration (paper 003, section 3.3, eq. 6-13): pure functions, a Flax module.

Given a mesh M_hmr [V, 3] from any regressor, its joints J_hmr (the layout's regressor applied to
that mesh, eq. 2) and target 3D joints J_target of the same layout, every bone i (parent p,
child c, b = J_p - J_c) gets a rotation Psi_i taking b_hmr onto the direction of b_target
(eq. 6-7), a translation T_i = J_p^target - Psi_i J_p^hmr (eq. 8), and the non-rigid residual
Delta_i = J_c^target - (Psi_i J_c^hmr + T_i) (eq. 9-10). Every vertex moves with every bone,
V_ji = Psi_i V_j + T_i + W_ji Delta_i (eq. 12), and the bones are blended,
V_j = sum_i A_ji V_ji (eq. 13). `calibrate` evaluates eq. 12-13 in the equal, cheaper order
V_j = (sum_i A_ji Psi_i) V_j + sum_i A_ji T_i + sum_i A_ji W_ji Delta_i (as LBS blends
transforms), so no [V, bones, 3] array is formed; tests check it against the literal double loop.

Choices where the paper is silent:

* Bone list: the Human3.6M 17-joint skeleton (`h36m17`, VideoPose3D's tree, the pose lifter's
  joints in the paper's Human3.6M experiments), 16 bones, bone k = (parent, child k + 1):
  pelvis->hips, hips->knees, knees->ankles, pelvis->spine->thorax->neck/nose->head top,
  thorax->shoulders->elbows->wrists. J_hmr is `smpl.layout_joints(..., 'h36m17')` of the
  regressed mesh (J_regressor_h36m, the linear U of eq. 2). `smpl24` (23 bones, parent ->
  joint along SMPL's tree) is the alternative for body models without the H36M regressor.
* A is initialised from the body model's skinning weights mapped to bones, A0 = weights @ P
  with P [24, bones]: SMPL joint k's weight goes to the bone that joint k's rotation drives
  (the bone starting at k's counterpart: left_knee -> knee->ankle), split equally when several
  bones start there (pelvis -> the two hip bones and pelvis->spine), and to the bone ending at
  k for joints with no bone below them in the skeleton (ankles, feet, wrists, hands -> the
  shin / forearm; head -> neck/nose->head top). Rows of A0 sum to 1 because skinning rows do.
* A's rows are normalised by a softmax over learnable logits initialised at
  log(max(A0, a_floor)) (a_floor = 1e-6: the untrained A equals A0 to 2e-5; rows always sum
  to 1, entries stay positive, no dead units as a normalised relu would have).
* W (unconstrained, learnable) is initialised at the vertex's position along the bone in the
  template at rest, W0_ji = clip(<V_j - J_p, J_c - J_p> / |J_c - J_p|^2, 0, 1): a vertex at
  the parent gets none of the non-rigid offset, one at (or beyond) the child all of it, so the
  untrained module stretches every bone to its target length without tearing at the joints
  (a vertex at the child joint lands where the next bone, anchored at the target child, puts
  it). experiments/benchmarks/calibration_init.py compares it with W = 0, W = 1, W = A0 and
  a uniform A: on 24 synthetic frames whose regressed meshes are 142 mm PVE off, the
  untrained module gives 18.6 mm (W = 0: 19.8, W = 1: 19.4, uniform A: 140.4), and puts the
  H36M joints within 0.9 mm of their targets (W = 0: 4.1 mm).
* Safe rotation (eq. 6-7): the angle is atan2(|u x v|, u . v) of the unit bone directions
  (equal to eq. 6's arccos, without arccos' infinite slope at +-1), the rotation vector goes
  through `geometry.axis_angle_to_matrix` (eq. 7). Near-parallel bones use the Taylor series
  of angle / |u x v|, so Psi -> I smoothly; exactly or nearly anti-parallel bones
  (|u x v|^2 < 1e-6, u . v < 0) use pi about a fixed axis perpendicular to u (u x e, e the
  coordinate axis least aligned with u) followed by the small rotation taking -u onto v, so
  Psi b_hmr still points exactly along b_target; a bone shorter than 1e-5 m in either pose
  gives Psi = I. Every branch sees guarded inputs (the double-where pattern), so values and
  gradients are finite everywhere. Rotations and the blend compute in float32 (float64 under
  x64) and return the input dtype, so bfloat16 inputs work.
* Ablations (the paper's Table 3): `nonrigid=False` (W = 0, "w/o Non-Rigid");
  `template_source` gives the body model's template (zero shape, the regressors' mean pose:
  the root turned 180 degrees about x, as every regressor starts) and its joints, to calibrate
  instead of the regressed mesh ("PC-Template"); ground-truth 3D joints as J_target ("GT 3D
  Pose", the upper bound) needs nothing here: they are just the target.
* FLOPs per frame (`calibration_flops`): 31 V n + 21 V + 60 n (multiply and add counted
  separately), for the full body and 16 bones 3.57 MFLOPs; XLA's cost analysis of the jitted
  `calibrate` on CPU reports 3.59 MFLOPs (it counts the rotations' transcendental and
  select ops). Both are about 0.1% of HMR's 3.5 GFLOPs (the paper's Table 2): the calibration
  itself adds nothing measurable; the serial and parallel forms differ by their lifter / pose
  stream, not by this module.

The lifter is models/lifter.py; serial and parallel targets, the calibrated meshes and
`lmr-predict --calibration` are in lmr_jax/calibrated.py, the side-by-side evaluation in
lmr_jax/calibrated_eval.py. Stage 2 (W, A and the networks fine-tuned end to end with 3D mesh
supervision) is the 'pchmr' system, models/pchmr.py.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import params as params_lib

_MIN_BONE_SQ = 1e-10  # (10 micrometres)^2: a shorter bone has no direction, Psi = I
_SMALL_CROSS_SQ = 1e-6  # |u x v|^2 below this: the parallel / anti-parallel branches
_A_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """A joint layout's bones and the map of SMPL skinning weights onto them.

    Attributes:
      layout: the joint layout (smpl.LAYOUTS) of J_hmr and J_target.
      bones: (parent, child) joint indices of the layout, one pair per bone.
      smpl_to_bones: for each of the 24 SMPL joints, the bones its skinning weight goes to
        (split equally).
    """

    layout: str
    bones: tuple[tuple[int, int], ...]
    smpl_to_bones: tuple[tuple[int, ...], ...]

    @property
    def num_bones(self) -> int:
        return len(self.bones)

    def skinning_to_bones(self) -> np.ndarray:
        """[24, bones] matrix P: bone weights = skinning weights @ P; rows sum to 1."""
        table = np.zeros((len(self.smpl_to_bones), self.num_bones), np.float32)
        for joint, bones in enumerate(self.smpl_to_bones):
            table[joint, list(bones)] = 1.0 / len(bones)
        return table


# VideoPose3D's Human3.6M tree in our h36m17 order (smpl.layouts.H36M17_NAMES); bone k ends at
# joint k + 1.
H36M17_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
_H36M17_BONES = tuple((H36M17_PARENTS[c], c) for c in range(1, 17))
# SMPL joint -> bones (by child joint: bone = child - 1), see the module docstring.
_H36M17_FROM_SMPL = (
    (1, 4, 7), (2,), (5,), (7,), (3,), (6,), (8,), (3,), (6,), (8,), (3,), (6,),
    (9,), (11,), (14,), (10,), (12,), (15,), (13,), (16,), (13,), (16,), (13,), (16,),
)  # fmt: skip


def _smpl24_skeleton() -> Skeleton:
    """SMPL's own tree: bone (parent[k], k) for k = 1..23 (bone k - 1)."""
    parents = smpl_lib.SMPL_PARENTS
    bones = tuple((parents[k], k) for k in range(1, 24))
    to_bones = []
    for k in range(24):
        starting = tuple(b for b, (p, _) in enumerate(bones) if p == k)
        to_bones.append(starting or (k - 1,))  # a leaf: the bone ending at k
    return Skeleton("smpl24", bones, tuple(to_bones))


SKELETONS: dict[str, Skeleton] = {
    "h36m17": Skeleton(
        "h36m17", _H36M17_BONES, tuple(tuple(c - 1 for c in cs) for cs in _H36M17_FROM_SMPL)
    ),
    "smpl24": _smpl24_skeleton(),
}


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """A built-in skeleton by name (or the skeleton itself)."""
    if isinstance(name, Skeleton):
        return name
    if name not in SKELETONS:
        raise ValueError(f"unknown calibration skeleton '{name}', expected one of "
                         f"{sorted(SKELETONS)}.")  # fmt: skip
    return SKELETONS[name]


def _compute_dtype(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def _perpendicular(u: jnp.ndarray) -> jnp.ndarray:
    """A unit vector perpendicular to unit `u` [..., 3]: u x e, e the least aligned axis."""
    eye = jnp.eye(3, dtype=u.dtype)
    axis = eye[jnp.argmin(jnp.abs(u), axis=-1)]
    perp = jnp.cross(u, axis)  # |perp|^2 = 1 - u_k^2 >= 2/3
    return perp / jnp.sqrt(jnp.sum(perp * perp, axis=-1, keepdims=True))


def _small_rotation_vector(u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Rotation vector taking unit `u` onto unit `v` when u . v > 0 and u x v is small.

    angle / |u x v| = atan(s / c) / s = (1 - s^2 / (3 c^2)) / c + O(s^4), s = |u x v|, c = u . v.
    """
    cross = jnp.cross(u, v)
    c = jnp.maximum(jnp.sum(u * v, axis=-1, keepdims=True), 0.5)
    s_sq = jnp.sum(cross * cross, axis=-1, keepdims=True)
    return (1.0 - s_sq / (3.0 * c * c)) / c * cross


def bone_rotations(b_src: jnp.ndarray, b_tgt: jnp.ndarray) -> jnp.ndarray:
    """Rotations taking each source bone direction onto its target direction (eq. 6-7).

    Args:
      b_src: [..., n, 3] source bone vectors (b = J_parent - J_child).
      b_tgt: [..., n, 3] target bone vectors.

    Returns:
      [..., n, 3, 3] rotation matrices Psi with Psi b_src parallel to b_tgt; identity where
      either bone is shorter than 1e-5 m; finite values and gradients for every input.
    """
    dtype = jnp.result_type(b_src, b_tgt)
    b_src, b_tgt = (x.astype(_compute_dtype(dtype)) for x in (b_src, b_tgt))
    len_sq = lambda x: jnp.sum(x * x, axis=-1, keepdims=True)
    zero = (len_sq(b_src) < _MIN_BONE_SQ) | (len_sq(b_tgt) < _MIN_BONE_SQ)
    e_x = jnp.asarray([1.0, 0.0, 0.0], b_src.dtype)
    b_src = jnp.where(zero, e_x, b_src)  # guarded inputs: the discarded branch stays finite
    b_tgt = jnp.where(zero, e_x, b_tgt)
    u = b_src / jnp.sqrt(len_sq(b_src))
    v = b_tgt / jnp.sqrt(len_sq(b_tgt))
    cross = jnp.cross(u, v)
    c = jnp.sum(u * v, axis=-1, keepdims=True)
    s_sq = len_sq(cross)
    near = s_sq < _SMALL_CROSS_SQ
    anti = near & (c < 0.0)
    # Regular bones: eq. 6 with atan2 for arccos; the angle is taken from guarded s.
    s = jnp.sqrt(jnp.where(near, 1.0, s_sq))
    regular = jnp.arctan2(s, c) / s * cross
    # Near-parallel: the Taylor form (inputs with c < 0 are replaced, so it stays accurate).
    parallel = _small_rotation_vector(jnp.where(anti, -u, u), v)
    psi = jnp.where(near, parallel, regular)
    rotation = geometry.axis_angle_to_matrix(psi)
    # Anti-parallel: pi about a fixed perpendicular of u, then the small rotation -u -> v
    # (`psi` already holds it on these bones).
    perp = _perpendicular(u)
    flip = 2.0 * perp[..., :, None] * perp[..., None, :] - jnp.eye(3, dtype=u.dtype)
    rotation = jnp.where(anti[..., None], rotation @ flip, rotation)
    rotation = jnp.where(zero[..., None], jnp.eye(3, dtype=u.dtype), rotation)
    return rotation.astype(dtype)


def _bone_ends(joints: jnp.ndarray, bones) -> tuple[jnp.ndarray, jnp.ndarray]:
    parents = jnp.asarray([p for p, _ in bones])
    children = jnp.asarray([c for _, c in bones])
    return jnp.take(joints, parents, axis=-2), jnp.take(joints, children, axis=-2)


def bone_transforms(
    joints_src: jnp.ndarray, joints_tgt: jnp.ndarray, bones: tuple[tuple[int, int], ...]
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-bone rotation, translation and non-rigid residual (eq. 6-10).

    Args:
      joints_src: [..., J, 3] the regressed mesh's joints J_hmr.
      joints_tgt: [..., J, 3] the target joints J_target (same layout and frame).
      bones: (parent, child) joint indices, n pairs.

    Returns:
      Psi [..., n, 3, 3] (eq. 7), T [..., n, 3] = J_p^tgt - Psi J_p^src (eq. 8) and
      Delta [..., n, 3] = J_c^tgt - (Psi J_c^src + T) (eq. 9-10), in float32 (or wider).
    """
    dtype = _compute_dtype(jnp.result_type(joints_src, joints_tgt))
    parent_src, child_src = _bone_ends(joints_src.astype(dtype), bones)
    parent_tgt, child_tgt = _bone_ends(joints_tgt.astype(dtype), bones)
    psi = bone_rotations(parent_src - child_src, parent_tgt - child_tgt)
    rotate = lambda x: jnp.einsum("...ab,...b->...a", psi, x)
    translation = parent_tgt - rotate(parent_src)
    child_moved = rotate(child_src) + translation
    return psi, translation, child_tgt - child_moved


def calibrate(
    vertices: jnp.ndarray,
    joints_src: jnp.ndarray,
    joints_tgt: jnp.ndarray,
    w: jnp.ndarray,
    a: jnp.ndarray,
    bones: tuple[tuple[int, int], ...],
) -> jnp.ndarray:
    """The calibrated mesh (eq. 12-13).

    Args:
      vertices: [..., V, 3] the mesh to calibrate (M_hmr).
      joints_src: [..., J, 3] its joints.
      joints_tgt: [..., J, 3] the target joints.
      w: [V, n] non-rigid weights W (zeros: the rigid ablation).
      a: [V, n] blend weights A (rows normally sum to 1).
      bones: n (parent, child) pairs.

    Returns:
      [..., V, 3] calibrated vertices, in the dtype of `vertices`.
    """
    psi, translation, delta = bone_transforms(joints_src, joints_tgt, bones)
    a = a.astype(psi.dtype)
    blended = jnp.einsum("vi,...iab->...vab", a, psi)
    offset = jnp.einsum("vi,...ia->...va", a, translation)
    offset = offset + jnp.einsum("vi,...ia->...va", a * w.astype(psi.dtype), delta)
    moved = jnp.einsum("...vab,...vb->...va", blended, vertices.astype(psi.dtype)) + offset
    return moved.astype(vertices.dtype)


def calibration_flops(num_vertices: int, num_bones: int) -> int:
    """Floating-point operations per frame of `calibrate` (a multiply-add counts 2).

    Per vertex and bone: A * W (1), sum_i A Psi (18), sum_i A T (6), sum_i A W Delta (6); per
    vertex: the blended 3x3 matrix times the vertex (15) and two 3-vector adds (6); per bone
    about 60 (eq. 6-10: norms, cross and dot products, Rodrigues, three matrix-vector products).
    """
    return 31 * num_vertices * num_bones + 21 * num_vertices + 60 * num_bones


def initial_weights(
    body_model: smpl_lib.SMPLModel, skeleton: str | Skeleton = "h36m17"
) -> tuple[np.ndarray, np.ndarray]:
    """A0 and W0 (module docstring) from the body model's skinning weights and rest template.

    Returns:
      (A0 [V, n], W0 [V, n]) float32 numpy arrays; rows of A0 sum to 1, W0 in [0, 1].
    """
    skeleton = get_skeleton(skeleton)
    weights = np.asarray(body_model.weights, np.float64)
    a0 = weights @ skeleton.skinning_to_bones()
    a0 = a0 / a0.sum(axis=-1, keepdims=True)
    vertices, joints = (
        np.asarray(x, np.float64) for x in template_source(body_model, skeleton, True)
    )
    parent, child = _bone_ends(joints, skeleton.bones)
    axis = np.asarray(child - parent)  # [n, 3]
    along = np.einsum("vnc,nc->vn", vertices[:, None] - np.asarray(parent)[None], axis)
    w0 = np.clip(along / np.maximum(np.sum(axis * axis, -1), _MIN_BONE_SQ), 0.0, 1.0)
    return a0.astype(np.float32), w0.astype(np.float32)


def template_source(
    body_model: smpl_lib.SMPLModel, skeleton: str | Skeleton = "h36m17", rest: bool = False
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The template mesh and its joints: what 'PC-Template' calibrates instead of M_hmr.

    Args:
      body_model: the body model.
      skeleton: gives the joint layout.
      rest: True: the template as stored (T-pose, y up); False: zero shape in the regressors'
        mean pose (params.MeanParams: root turned 180 degrees about x, the camera frame).

    Returns:
      vertices [V, 3] and joints [J, 3] of the skeleton's layout.
    """
    skeleton = get_skeleton(skeleton)
    if rest:
        vertices, joints = body_model.v_template, body_model.J_template
    else:
        pose6d, betas, _ = params_lib.MeanParams().initial(())
        rotmats = geometry.rot6d_to_matrix(pose6d)
        vertices, joints = smpl_lib.forward(body_model, betas, rotmats)
    return vertices, smpl_lib.layout_joints(body_model, vertices, joints, skeleton.layout)


class Calibration(nn.Module):
    """Learnable W and A around `calibrate` (eq. 12-13).

    Attributes:
      init_a: [V, n] initial blend weights A0 (rows sum to 1), see `initial_weights`.
      init_w: [V, n] initial non-rigid weights W0.
      bones: n (parent, child) pairs of the joint layout.
      nonrigid: False: W = 0, no parameter (the paper's "w/o Non-Rigid" ablation).
      a_floor: A's logits start at log(max(A0, a_floor)).
    """

    init_a: jnp.ndarray
    init_w: jnp.ndarray
    bones: tuple[tuple[int, int], ...]
    nonrigid: bool = True
    a_floor: float = _A_FLOOR

    def setup(self):
        init_logits = lambda _: jnp.log(jnp.maximum(jnp.asarray(self.init_a), self.a_floor))
        self.a_logits = self.param("a_logits", init_logits)
        if self.nonrigid:
            self.w = self.param("w", lambda _: jnp.asarray(self.init_w, jnp.float32))

    def weights(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """The current (W, A), A normalised by a softmax over its logits."""
        a = nn.softmax(self.a_logits, axis=-1)
        return (self.w if self.nonrigid else jnp.zeros_like(a)), a

    def __call__(
        self, vertices: jnp.ndarray, joints_src: jnp.ndarray, joints_tgt: jnp.ndarray
    ) -> jnp.ndarray:
        """Calibrated vertices [..., V, 3] from vertices [..., V, 3] and joints [..., J, 3]."""
        w, a = self.weights()
        return calibrate(vertices, joints_src, joints_tgt, w, a, self.bones)


def build_calibration(
    body_model: smpl_lib.SMPLModel,
    skeleton: str | Skeleton = "h36m17",
    nonrigid: bool = True,
    a_floor: float = _A_FLOOR,
) -> Calibration:
    """The calibration module for `body_model`'s mesh, initialised as the module docstring says."""
    skeleton = get_skeleton(skeleton)
    a0, w0 = initial_weights(body_model, skeleton)
    return Calibration(a0, w0, skeleton.bones, nonrigid=nonrigid, a_floor=a_floor)

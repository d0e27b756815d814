"""Training losses of the paper (eq. 2-5) with label masks: L_smpl, L_3D, L_2D and their sum.

Every term is a masked mean of an element-wise error over the valid items only, with a guard
against an empty mask (a batch without any 3D labels gives 0, not NaN):

- `pose`: predicted rotation matrices vs. the ground-truth pose (axis-angle, converted to
  matrices), over the frames with `has_smpl`; `shape`: betas, same frames (eq. 2).
- `kp3d`: 3D joints after centring both sets on the layout's pelvis (the mid-hips of the 14
  common joints for `vibe49`), over frames with `has_kp3d` and joints with non-zero 3D
  confidence, weighted by that confidence (eq. 3). `kp3d_joints='common14'` uses the 14 common
  joints (VIBE's setting for real data), 'all' every joint of the layout.
- `kp2d`: projected 2D joints weighted by the 2D confidence, averaged over the visible joints
  (confidence > 0) of all frames (eq. 4).

`norm='l1'` uses |d| (the LMR paper), `norm='l2'` uses d^2 (VIBE's MSE); both are averaged over
coordinates, so `l2` with VIBE's weights (2D 300, 3D 300, pose 60, shape 0.06) is VIBE's loss up
to its 2D denominator (VIBE divides by all joints, visible or not). The paper's per-joint L1 norm
sums the coordinates, i.e. it is the `l1` term times 3 (3D) or 2 (2D); the factor belongs in the
weights. Weights are not published by the paper; the defaults are VIBE's.

Terms are returned unweighted; the total is sum_k w_k * term_k (eq. 5). With `all_iterations`,
each term is summed over the V refinement iterations (iterative error feedback supervision): the
body model then also runs on the parameters of the V - 1 earlier iterations (restricted to the
vertices the joint layout needs, smpl.joint_model, so the extra cost is small).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lmr_jax import geometry
from lmr_jax import smpl as smpl_lib

NORMS = ("l1", "l2")


def default_loss_config() -> ml_collections.ConfigDict:
    """Loss fields: norm ('l1' | 'l2'), w_2d, w_3d, w_pose, w_shape, all_iterations,
    kp3d_joints ('all' | 'common14') and joint_layout (the models' output layout)."""
    config = ml_collections.ConfigDict()
    config.norm = "l1"
    config.w_2d = 300.0
    config.w_3d = 300.0
    config.w_pose = 60.0
    config.w_shape = 0.06
    config.all_iterations = False
    config.kp3d_joints = "common14"
    config.joint_layout = "vibe49"
    return config


def _error(diff: jnp.ndarray, norm: str) -> jnp.ndarray:
    """Element-wise |d| ('l1') or d^2 ('l2')."""
    if norm == "l1":
        return jnp.abs(diff)
    if norm == "l2":
        return jnp.square(diff)
    raise ValueError(f"loss norm is '{norm}', expected one of {NORMS}.")


def _masked_mean(
    error: jnp.ndarray, weight: jnp.ndarray, valid: jnp.ndarray, axis_name: str | None = None
) -> jnp.ndarray:
    """sum(weight * error) / count(valid) (0 when nothing is valid).

    Under pmap with `axis_name`, the count is the mean count over devices, so that averaging
    the devices' losses (lax.pmean) gives the masked mean of the whole global batch: the loss
    does not depend on how the batch is split over devices.
    """
    count = jnp.sum(valid.astype(jnp.float32))
    if axis_name is not None:
        count = jax.lax.pmean(count, axis_name)
    return jnp.sum(weight * error) / jnp.maximum(count, 1e-6)


def keypoint_2d_loss(
    pred: jnp.ndarray, gt: jnp.ndarray, norm: str, axis_name: str | None = None
) -> jnp.ndarray:
    """Confidence-weighted 2D keypoint loss over the visible joints.

    Args:
      pred: [..., J, 2] projected joints.
      gt: [..., J, 3] ground-truth joints, confidence last (0 = missing).
      norm: 'l1' or 'l2'.

    Returns:
      Scalar loss.
    """
    conf = gt[..., 2]
    error = jnp.mean(_error(pred - gt[..., :2], norm), axis=-1)
    return _masked_mean(error, conf, conf > 0, axis_name)


def _centre(joints: jnp.ndarray, pelvis: tuple[int, ...]) -> jnp.ndarray:
    """Subtracts the mean of the `pelvis` joints: [..., J, 3] -> [..., J, 3]."""
    return joints - jnp.mean(joints[..., list(pelvis), :], axis=-2, keepdims=True)


def kp3d_selection(joint_layout: str, kp3d_joints: str) -> tuple[tuple[int, ...] | None, tuple]:
    """Joints used by L_3D and the pelvis that centres them.

    Returns:
      (joint indices into the layout or None for all, pelvis indices into the selection).
    """
    layout = smpl_lib.get_layout(joint_layout)
    if kp3d_joints == "all":
        return None, layout.pelvis
    if kp3d_joints != "common14":
        raise ValueError(f"kp3d_joints is '{kp3d_joints}', expected 'all' or 'common14'.")
    if layout.name == "vibe49":
        return tuple(smpl_lib.VIBE49_TO_COMMON14), smpl_lib.COMMON14_PELVIS
    if layout.name == "common14":
        return None, smpl_lib.COMMON14_PELVIS
    raise ValueError(f"kp3d_joints='common14' needs the 'vibe49' or 'common14' layout, "
                     f"not '{layout.name}'.")  # fmt: skip


def keypoint_3d_loss(
    pred: jnp.ndarray,
    gt: jnp.ndarray,
    has_kp3d: jnp.ndarray,
    norm: str,
    joints: tuple[int, ...] | None,
    pelvis: tuple[int, ...],
    axis_name: str | None = None,
) -> jnp.ndarray:
    """Pelvis-centred 3D joint loss over the frames with 3D labels.

    Args:
      pred: [..., J, 3] predicted joints (metres).
      gt: [..., J, 4] ground-truth joints, confidence last.
      has_kp3d: [...] 1 where the frame has 3D joints.
      norm: 'l1' or 'l2'.
      joints: indices of the joints to use (None: all); `pelvis` indexes this selection.
      pelvis: the joints whose mean is the centre.

    Returns:
      Scalar loss.
    """
    if joints is not None:
        pred, gt = pred[..., list(joints), :], gt[..., list(joints), :]
    conf = gt[..., 3] * has_kp3d.astype(jnp.float32)[..., None]
    diff = _centre(pred, pelvis) - _centre(gt[..., :3], pelvis)
    error = jnp.mean(_error(diff, norm), axis=-1)
    return _masked_mean(error, conf, conf > 0, axis_name)


def smpl_losses(
    rotmats: jnp.ndarray,
    betas: jnp.ndarray,
    gt_pose: jnp.ndarray,
    gt_shape: jnp.ndarray,
    has_smpl: jnp.ndarray,
    norm: str,
    axis_name: str | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Pose (as rotation matrices) and shape losses over the frames with SMPL labels.

    Args:
      rotmats: [..., 24, 3, 3] predicted rotations.
      betas: [..., 10] predicted shape.
      gt_pose: [..., 72] ground-truth axis-angle pose.
      gt_shape: [..., 10] ground-truth shape.
      has_smpl: [...] 1 where the frame has SMPL parameters.
      norm: 'l1' or 'l2'.

    Returns:
      (pose loss, shape loss), scalars.
    """
    valid = has_smpl.astype(jnp.float32)
    gt_rotmats = geometry.pose72_to_rotmats(gt_pose)
    pose_error = jnp.mean(_error(rotmats - gt_rotmats, norm), axis=(-3, -2, -1))
    shape_error = jnp.mean(_error(betas - gt_shape, norm), axis=-1)
    return (
        _masked_mean(pose_error, valid, valid, axis_name),
        _masked_mean(shape_error, valid, valid, axis_name),
    )


def _joint_model(body_model, joint_layout: str):
    """The body model restricted to the vertices the layout needs (smpl.joint_model)."""
    try:
        with jax.ensure_compile_time_eval():  # concrete arrays closed over by a jitted loss
            return smpl_lib.joint_model(body_model, joint_layout)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return body_model  # the body model is itself a jit argument


def _predictions(outputs: dict, config, body_model) -> list[dict]:
    """The predictions to supervise: the final one, or every iteration's (earliest first)."""
    final = {k: outputs[k] for k in ("rotmats", "betas", "joints3d", "kp2d")}
    if not config.all_iterations:
        return [final]
    iterations = outputs["iterations"]
    rotmats, betas, cam = (iterations[k][:-1] for k in ("rotmats", "betas", "cam"))
    if rotmats.shape[0] == 0:
        return [final]
    joint_body = _joint_model(body_model, config.joint_layout)
    vertices, joints = smpl_lib.forward(joint_body, betas, rotmats)  # the V - 1 earlier ones
    joints3d = smpl_lib.layout_joints(joint_body, vertices, joints, config.joint_layout)
    kp2d = geometry.weak_perspective_project(joints3d, cam)
    earlier = [
        {"rotmats": rotmats[v], "betas": betas[v], "joints3d": joints3d[v], "kp2d": kp2d[v]}
        for v in range(rotmats.shape[0])
    ]
    return [*earlier, final]


def compute_losses(
    outputs: dict,
    batch: dict,
    loss_config: ml_collections.ConfigDict,
    body_model,
    axis_name: str | None = None,
) -> tuple[jnp.ndarray, dict]:
    """The training objective (paper eq. 5) and its terms.

    Args:
      outputs: a model's output dict (rotmats, betas, joints3d, kp2d, iterations).
      batch: kp2d [B, T, J, 3], kp3d [B, T, J, 4], pose [B, T, 72], shape [B, T, 10],
        has_smpl [B, T], has_kp3d [B, T] (labels missing where the flags are 0).
      loss_config: see `default_loss_config`.
      body_model: the SMPL model (used only with `all_iterations`).
      axis_name: the pmap axis, when called per device: masked means then use the global
        count of valid items (see `_masked_mean`); average the result with lax.pmean.

    Returns:
      (total, {'kp2d', 'kp3d', 'pose', 'shape'}): scalar float32 total and unweighted terms.
    """
    norm = loss_config.norm
    if norm not in NORMS:
        raise ValueError(f"loss norm is '{norm}', expected one of {NORMS}.")
    joints, pelvis = kp3d_selection(loss_config.joint_layout, loss_config.kp3d_joints)
    terms = {"kp2d": 0.0, "kp3d": 0.0, "pose": 0.0, "shape": 0.0}
    for pred in _predictions(outputs, loss_config, body_model):
        terms["kp2d"] += keypoint_2d_loss(pred["kp2d"], batch["kp2d"], norm, axis_name)
        terms["kp3d"] += keypoint_3d_loss(
            pred["joints3d"], batch["kp3d"], batch["has_kp3d"], norm, joints, pelvis, axis_name
        )
        pose, shape = smpl_losses(
            pred["rotmats"], pred["betas"], batch["pose"], batch["shape"], batch["has_smpl"],
            norm, axis_name,
        )  # fmt: skip
        terms["pose"] += pose
        terms["shape"] += shape
    weights = {
        "kp2d": loss_config.w_2d,
        "kp3d": loss_config.w_3d,
        "pose": loss_config.w_pose,
        "shape": loss_config.w_shape,
    }
    total = sum(weights[k] * terms[k] for k in terms)
    return jnp.asarray(total, jnp.float32), terms

"""Training losses (paper eq. 2-5) with label masks, per-term norms and named presets.

Terms (each a masked mean over the valid items, 0 rather than NaN when nothing is valid):

- `pose` and `shape` (eq. 2): predicted rotation matrices vs. the ground-truth pose (axis-angle,
  converted to matrices) and betas, over the frames with `has_smpl`. With
  `param_norm='euclidean'` the two form one term `smpl`: the Euclidean norm of the frame's whole
  parameter difference [R - R_gt, beta - beta_gt] (216 + 10 numbers), averaged over frames, as
  eq. 2 writes it (weight `w_smpl`).
- `kp3d` (eq. 3): 3D joints after centring both sets on the layout's pelvis (the mid-hips of the
  14 common joints for `vibe49`), over the frames with `has_kp3d`; `kp3d_confidence` weights
  each joint by its 3D confidence and counts only joints with a non-zero one (VIBE's
  `keypoint_3d_loss` ignores the confidence and averages over every selected joint).
  `kp3d_joints='common14'` uses the 14 common joints (VIBE's setting), 'all' every joint.
- `kp2d` (eq. 4): projected 2D joints weighted by the 2D confidence and averaged over ALL joints
  of all (unpadded) frames: a missing joint adds 0 through its confidence but still counts in
  the denominator, as VIBE's `(conf * MSELoss(reduction='none')(...)).mean()` and eq. 4's
  1/(TK) sum do (VIBE lib/core/loss.py, `VIBELoss.keypoint_loss`).

Keypoint norms (`keypoint_norm`): 'l1' |d| or 'mse' d^2, averaged over joints x coordinates.
Parameter norms (`param_norm`): 'l1', 'mse' (VIBE's `criterion_regr`: MSELoss over the 24 x 9
matrix entries and, separately, the 10 betas) or 'euclidean' (eq. 2, see above).

Presets (`preset`) fill every field left at None (`ml_collections` placeholders, so
`--config.loss.w_2d=100` still overrides one field of a preset):

| preset | param / keypoint norm | w_2d | w_3d | w_pose | w_shape | w_smpl | 3D conf |
|---|---|---|---|---|---|---|---|
| `vibe` | mse / mse | 300 | 300 | 60 | 0.06 | - | no |
| `lmr_paper` | euclidean / l1 | 600 | 900 | - | - | 60 | yes |
| `synthetic` | l1 / l1 | 300 | 300 | 60 | 0.06 | - | yes |
| `dsd_paper` | mse / l1 | 10 | 60 | 20 | 0.02 | - | yes |
| `hkmr_paper` | mse / l1 | 600 | 900 | 60 | 2.78 | - | yes |

All use the 14 common joints for L_3D; all but `hkmr_paper` supervise the last iteration only.

`vibe` is VIBE's loss exactly (configs/config.yaml: KP_2D_W 300, KP_3D_W 300, POSE_W 60,
SHAPE_W 0.06; lib/core/loss.py: MSE everywhere, 3D on joints 25..38 centred on their mid-hips,
supervision of the last regressor iteration only). `lmr_paper` is eq. 2-5 as written: eq. 3-4
are per-joint L1 norms (the sum over a joint's coordinates), i.e. 3x (3D) and 2x (2D) our mean
over coordinates, so the weights carry those factors; the paper publishes no weights, so we take
VIBE's (the setting the paper says it follows: 300 for both keypoint terms, hence 900 and 600)
and VIBE's pose weight 60 for the single L_smpl. `synthetic` is the default of the synthetic
experiments (L1 terms with VIBE's weights, what every earlier synthetic run used).
`dsd_paper` is DSD-SATN's eq. 5 (sec. 4.2: w_pm 20, w_3d 60, w_2d 10): L_pm is L2 on the
rotation matrices ('mse'); the paper's L_2d is L1 and its L_3d L2, but one `keypoint_norm`
serves both here, so both are L1; the paper names only theta in L_pm, so the shape weight is
VIBE's pose-to-shape ratio (60 : 0.06) applied to 20; its w_r 0.6 adversarial term needs a pose
discriminator, which the project does not have. The DSD/SATN skeleton and sort terms are the
models' own (models.dsd / models.satn `extra_losses`).

The total is sum_k w_k * term_k (eq. 5); terms are returned unweighted. With `all_iterations`
each term is summed over the V refinement iterations: the body model then also runs on the V - 1
earlier iterations' parameters (restricted to the vertices the joint layout needs).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from lmr_jax import geometry
from lmr_jax import smpl as smpl_lib

PARAM_NORMS = ("l1", "mse", "euclidean")
KEYPOINT_NORMS = ("l1", "mse")
_PRESET_FIELDS = ("param_norm", "keypoint_norm", "w_2d", "w_3d", "w_pose", "w_shape", "w_smpl",
                  "kp3d_confidence", "all_iterations", "kp3d_joints")  # fmt: skip
PRESETS = {
    "vibe": dict(param_norm="mse", keypoint_norm="mse", w_2d=300.0, w_3d=300.0, w_pose=60.0,
                 w_shape=0.06, w_smpl=0.0, kp3d_confidence=False, all_iterations=False,
                 kp3d_joints="common14"),
    "lmr_paper": dict(param_norm="euclidean", keypoint_norm="l1", w_2d=600.0, w_3d=900.0,
                      w_pose=0.0, w_shape=0.0, w_smpl=60.0, kp3d_confidence=True,
                      all_iterations=False, kp3d_joints="common14"),
    "synthetic": dict(param_norm="l1", keypoint_norm="l1", w_2d=300.0, w_3d=300.0, w_pose=60.0,
                      w_shape=0.06, w_smpl=0.0, kp3d_confidence=True, all_iterations=False,
                      kp3d_joints="common14"),
    "dsd_paper": dict(param_norm="mse", keypoint_norm="l1", w_2d=10.0, w_3d=60.0, w_pose=20.0,
                      w_shape=0.02, w_smpl=0.0, kp3d_confidence=True, all_iterations=False,
                      kp3d_joints="common14"),
    # HKMR's eq. 3: lambda_smpl x (216, 10) with lambda_smpl = 60 / 216 (module docstring).
    "hkmr_paper": dict(param_norm="mse", keypoint_norm="l1", w_2d=600.0, w_3d=900.0,
                       w_pose=60.0, w_shape=10.0 * 60.0 / 216.0, w_smpl=0.0,
                       kp3d_confidence=True, all_iterations=True, kp3d_joints="common14"),
}  # fmt: skip


def default_loss_config(preset: str = "synthetic") -> ml_collections.ConfigDict:
    """Loss fields: `preset` (a key of PRESETS), the preset's fields (None = the preset's
    value: param_norm, keypoint_norm, w_2d, w_3d, w_pose, w_shape, w_smpl, kp3d_confidence,
    all_iterations, kp3d_joints) and joint_layout (the models' output layout)."""
    config = ml_collections.ConfigDict()
    config.preset = preset
    types = {"param_norm": str, "keypoint_norm": str, "kp3d_joints": str,
             "kp3d_confidence": bool, "all_iterations": bool}  # fmt: skip
    for field in _PRESET_FIELDS:
        config[field] = config_dict.placeholder(types.get(field, float))
    config.joint_layout = "vibe49"
    return config


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """A loss config with its preset applied (hashable: a static argument of jitted code)."""

    param_norm: str
    keypoint_norm: str
    w_2d: float
    w_3d: float
    w_pose: float
    w_shape: float
    w_smpl: float
    kp3d_confidence: bool
    all_iterations: bool
    kp3d_joints: str
    joint_layout: str

    @property
    def weights(self) -> dict[str, float]:
        if self.param_norm == "euclidean":
            return {"kp2d": self.w_2d, "kp3d": self.w_3d, "smpl": self.w_smpl}
        return {"kp2d": self.w_2d, "kp3d": self.w_3d, "pose": self.w_pose, "shape": self.w_shape}


def resolve(loss_config) -> LossSettings:
    """The settings of `loss_config`: its preset's values, overridden by fields that are set.

    Raises:
      ValueError: an unknown preset or norm (one sentence naming the field).
    """
    if isinstance(loss_config, LossSettings):
        return loss_config
    preset = loss_config.get("preset", "synthetic")
    if preset not in PRESETS:
        raise ValueError(f"config field loss.preset is {preset!r}, expected one of "
                         f"{tuple(PRESETS)}.")  # fmt: skip
    values = dict(PRESETS[preset])
    for field in _PRESET_FIELDS:
        if loss_config.get(field) is not None:
            values[field] = loss_config[field]
    settings = LossSettings(**values, joint_layout=loss_config.get("joint_layout", "vibe49"))
    for field, allowed in (("param_norm", PARAM_NORMS), ("keypoint_norm", KEYPOINT_NORMS),
                           ("kp3d_joints", ("all", "common14"))):  # fmt: skip
        if getattr(settings, field) not in allowed:
            raise ValueError(f"config field loss.{field} is {getattr(settings, field)!r}, "
                             f"expected one of {allowed}.")  # fmt: skip
    return settings


def _error(diff: jnp.ndarray, norm: str) -> jnp.ndarray:
    """Element-wise |d| ('l1') or d^2 ('mse')."""
    if norm == "l1":
        return jnp.abs(diff)
    if norm == "mse":
        return jnp.square(diff)
    raise ValueError(f"loss norm is '{norm}', expected one of {KEYPOINT_NORMS}.")


def masked_mean(
    error: jnp.ndarray, weight: jnp.ndarray, count: jnp.ndarray, axis_name: str | None = None
) -> jnp.ndarray:
    """sum(weight * error) / sum(count) (0 when the count is 0); also for the loss terms of a
    system (its `extra_losses`, lmr_jax.models).

    Under pmap with `axis_name`, the count is the mean count over devices, so that averaging
    the devices' losses (lax.pmean) gives the mean over the whole global batch: the loss does
    not depend on how the batch is split over devices.
    """
    count = jnp.sum(count.astype(jnp.float32))
    if axis_name is not None:
        count = jax.lax.pmean(count, axis_name)
    return jnp.sum(weight * error) / jnp.maximum(count, 1e-6)


_masked_mean = masked_mean


def keypoint_2d_loss(
    pred: jnp.ndarray,
    gt: jnp.ndarray,
    norm: str,
    frames: jnp.ndarray | None = None,
    axis_name: str | None = None,
) -> jnp.ndarray:
    """Confidence-weighted 2D keypoint loss, averaged over all joints of all frames (eq. 4).

    Args:
      pred: [..., J, 2] projected joints.
      gt: [..., J, 3] ground-truth joints, confidence last (0 = missing: adds 0, still counted).
      norm: 'l1' or 'mse'.
      frames: [...] 1 on real frames, 0 on the padding of a short video (None: all real).
      axis_name: the pmap axis (see `_masked_mean`).

    Returns:
      Scalar loss.
    """
    conf = gt[..., 2]
    if frames is not None:
        conf = conf * frames[..., None]
    error = jnp.mean(_error(pred - gt[..., :2], norm), axis=-1)
    joints = jnp.ones(conf.shape, jnp.float32)
    count = joints if frames is None else joints * frames[..., None]
    return _masked_mean(error, conf, count, axis_name)


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
    use_confidence: bool = True,
) -> jnp.ndarray:
    """Pelvis-centred 3D joint loss over the frames with 3D labels (eq. 3).

    Args:
      pred: [..., J, 3] predicted joints (metres).
      gt: [..., J, 4] ground-truth joints, confidence last.
      has_kp3d: [...] 1 where the frame has 3D joints.
      norm: 'l1' or 'mse'.
      joints: indices of the joints to use (None: all); `pelvis` indexes this selection.
      pelvis: the joints whose mean is the centre.
      axis_name: the pmap axis (see `_masked_mean`).
      use_confidence: weight joints by their confidence and count those above 0; else every
        selected joint of a labelled frame counts with weight 1 (VIBE's keypoint_3d_loss).

    Returns:
      Scalar loss.
    """
    if joints is not None:
        pred, gt = pred[..., list(joints), :], gt[..., list(joints), :]
    frames = has_kp3d.astype(jnp.float32)[..., None]
    if use_confidence:
        weight = gt[..., 3] * frames
        count = weight > 0
    else:
        weight = jnp.broadcast_to(frames, gt.shape[:-1])
        count = weight
    diff = _centre(pred, pelvis) - _centre(gt[..., :3], pelvis)
    error = jnp.mean(_error(diff, norm), axis=-1)
    return _masked_mean(error, weight, count, axis_name)


def smpl_losses(
    rotmats: jnp.ndarray,
    betas: jnp.ndarray,
    gt_pose: jnp.ndarray,
    gt_shape: jnp.ndarray,
    has_smpl: jnp.ndarray,
    norm: str,
    axis_name: str | None = None,
) -> dict[str, jnp.ndarray]:
    """The SMPL parameter terms over the frames with SMPL labels (eq. 2).

    Args:
      rotmats: [..., 24, 3, 3] predicted rotations.
      betas: [..., 10] predicted shape.
      gt_pose: [..., 72] ground-truth axis-angle pose.
      gt_shape: [..., 10] ground-truth shape.
      has_smpl: [...] 1 where the frame has SMPL parameters.
      norm: 'l1' or 'mse' (element means of pose and of shape, two terms), or 'euclidean'
        (one term: the per-frame Euclidean norm of the whole parameter difference).
      axis_name: the pmap axis (see `_masked_mean`).

    Returns:
      {'pose', 'shape'} or, for 'euclidean', {'smpl'}: scalars.
    """
    valid = has_smpl.astype(jnp.float32)
    pose_diff = rotmats - geometry.pose72_to_rotmats(gt_pose)
    shape_diff = betas - gt_shape
    if norm == "euclidean":
        squares = jnp.sum(jnp.square(pose_diff), axis=(-3, -2, -1))
        squares = squares + jnp.sum(jnp.square(shape_diff), axis=-1)
        # The where keeps the gradient of sqrt finite at an exact match (d sqrt(0) = inf).
        norm_value = jnp.where(squares > 0, jnp.sqrt(jnp.where(squares > 0, squares, 1.0)), 0.0)
        return {"smpl": _masked_mean(norm_value, valid, valid, axis_name)}
    pose_error = jnp.mean(_error(pose_diff, norm), axis=(-3, -2, -1))
    shape_error = jnp.mean(_error(shape_diff, norm), axis=-1)
    return {
        "pose": _masked_mean(pose_error, valid, valid, axis_name),
        "shape": _masked_mean(shape_error, valid, valid, axis_name),
    }


def _joint_model(body_model, joint_layout: str):
    """The body model restricted to the vertices the layout needs (smpl.joint_model)."""
    try:
        with jax.ensure_compile_time_eval():  # concrete arrays closed over by a jitted loss
            return smpl_lib.joint_model(body_model, joint_layout)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return body_model  # the body model is itself a jit argument


def _predictions(outputs: dict, settings: LossSettings, body_model) -> list[dict]:
    """The predictions to supervise: the final one, or every iteration's (earliest first)."""
    final = {k: outputs[k] for k in ("rotmats", "betas", "joints3d", "kp2d")}
    if not settings.all_iterations:
        return [final]
    iterations = outputs["iterations"]
    rotmats, betas, cam = (iterations[k][:-1] for k in ("rotmats", "betas", "cam"))
    if rotmats.shape[0] == 0:
        return [final]
    joint_body = _joint_model(body_model, settings.joint_layout)
    vertices, joints = smpl_lib.forward(joint_body, betas, rotmats)  # the V - 1 earlier ones
    joints3d = smpl_lib.layout_joints(joint_body, vertices, joints, settings.joint_layout)
    kp2d = geometry.weak_perspective_project(joints3d, cam)
    earlier = [
        {"rotmats": rotmats[v], "betas": betas[v], "joints3d": joints3d[v], "kp2d": kp2d[v]}
        for v in range(rotmats.shape[0])
    ]
    return [*earlier, final]


def compute_losses(
    outputs: dict,
    batch: dict,
    loss_config,
    body_model,
    axis_name: str | None = None,
) -> tuple[jnp.ndarray, dict]:
    """The training objective (paper eq. 5) and its terms.

    Args:
      outputs: a model's output dict (rotmats, betas, joints3d, kp2d, iterations).
      batch: kp2d [B, T, J, 3], kp3d [B, T, J, 4], pose [B, T, 72], shape [B, T, 10],
        has_smpl [B, T], has_kp3d [B, T] (labels missing where the flags are 0), and
        optionally valid [B, T] (0 on the padding of a video shorter than T).
      loss_config: see `default_loss_config` (or its `resolve`d LossSettings).
      body_model: the SMPL model (used only with `all_iterations`).
      axis_name: the pmap axis, when called per device: masked means then use the global
        count of valid items (see `_masked_mean`); average the result with lax.pmean.

    Returns:
      (total, terms): the scalar float32 total and the unweighted terms ({'kp2d', 'kp3d',
      'pose', 'shape'}, or {'kp2d', 'kp3d', 'smpl'} with param_norm 'euclidean').
    """
    settings = resolve(loss_config)
    joints, pelvis = kp3d_selection(settings.joint_layout, settings.kp3d_joints)
    norm = settings.keypoint_norm
    frames = batch.get("valid")
    terms = dict.fromkeys(settings.weights, 0.0)
    for pred in _predictions(outputs, settings, body_model):
        terms["kp2d"] += keypoint_2d_loss(pred["kp2d"], batch["kp2d"], norm, frames, axis_name)
        terms["kp3d"] += keypoint_3d_loss(
            pred["joints3d"], batch["kp3d"], batch["has_kp3d"], norm, joints, pelvis, axis_name,
            use_confidence=settings.kp3d_confidence,
        )  # fmt: skip
        smpl_terms = smpl_losses(
            pred["rotmats"], pred["betas"], batch["pose"], batch["shape"], batch["has_smpl"],
            settings.param_norm, axis_name,
        )  # fmt: skip
        for k, v in smpl_terms.items():
            terms[k] += v
    total = sum(w * terms[k] for k, w in settings.weights.items())
    return jnp.asarray(total, jnp.float32), terms

"""Mean SMPL parameters (the starting point of every regressor) and the common model outputs.

Every model here predicts 6D joint rotations, shape coefficients and a weak-perspective camera as
residual updates that start from `MeanParams`: VIBE's `smpl_mean_params.npz` when one is given
(its 144-number mean pose is already in the SPIN/VIBE 6D layout, see geometry.rot6d_to_matrix),
else identity joint rotations with the root turned 180 degrees about x, zero shape and the
camera [0.9, 0, 0]. The root turn stands SMPL's y-up body upright in the camera frame (y down),
as in VIBE's mean pose. An identity root starts every prediction upside down, and training then
finds it cheaper to flip the body through the stature shape direction than to turn the root by
180 degrees: on synthetic_motion the predicted betas reached -56 and the meshes were mirrored
and misshapen (the joints still fitted). `smpl_outputs` turns the
parameters of every iteration into the output dict shared by all models.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry
from lmr_jax import smpl as smpl_lib

NUM_JOINTS = 24
NUM_BETAS = 10
IDENTITY_ROT6D = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # matrix_to_rot6d(eye(3)), row-major (3, 2)
UPRIGHT_ROOT_ROT6D = (1.0, 0.0, 0.0, -1.0, 0.0, 0.0)  # matrix_to_rot6d(diag(1, -1, -1))
DEFAULT_CAM = (0.9, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class MeanParams:
    """Initial SMPL parameters, stored as tuples so that modules holding them stay hashable.

    Attributes:
      pose6d: 144 numbers, 24 joints x 6D (SPIN/VIBE layout).
      shape: 10 shape coefficients.
      cam: 3 numbers [s, tx, ty].
    """

    pose6d: tuple[float, ...] = UPRIGHT_ROOT_ROT6D + IDENTITY_ROT6D * (NUM_JOINTS - 1)
    shape: tuple[float, ...] = (0.0,) * NUM_BETAS
    cam: tuple[float, ...] = DEFAULT_CAM

    def __post_init__(self):
        for name, size in (("pose6d", 6 * NUM_JOINTS), ("shape", NUM_BETAS), ("cam", 3)):
            if len(getattr(self, name)) != size:
                raise ValueError(f"mean '{name}' has {len(getattr(self, name))} numbers, "
                                 f"expected {size}.")  # fmt: skip

    def initial(self, batch_shape: tuple[int, ...]):
        """The mean parameters broadcast to `batch_shape`.

        Returns:
          ([*batch, 24, 6] 6D pose, [*batch, 10] shape, [*batch, 3] camera), float32.
        """
        pose = jnp.asarray(self.pose6d, jnp.float32).reshape(NUM_JOINTS, 6)
        shape = jnp.asarray(self.shape, jnp.float32)
        cam = jnp.asarray(self.cam, jnp.float32)
        return (
            jnp.broadcast_to(pose, (*batch_shape, NUM_JOINTS, 6)),
            jnp.broadcast_to(shape, (*batch_shape, NUM_BETAS)),
            jnp.broadcast_to(cam, (*batch_shape, 3)),
        )


def load_mean_params(path: str) -> MeanParams:
    """Reads VIBE's/SPIN's `smpl_mean_params.npz` (keys 'pose' [144], 'shape' [10], 'cam' [3]).

    Args:
      path: the .npz file; an empty string gives the default (upright root, identity joints,
        zero shape).

    Returns:
      MeanParams.

    Raises:
      ValueError: naming the file and the missing key or bad shape.
    """
    if not path:
        return MeanParams()
    if not os.path.isfile(path):
        raise ValueError(f"mean parameters file '{path}' does not exist (expected VIBE's "
                         "smpl_mean_params.npz with keys 'pose', 'shape', 'cam').")  # fmt: skip
    try:
        data = np.load(path)
        arrays = {key: np.asarray(data[key], np.float64) for key in data.files}
    except Exception as error:  # a truncated or non-npz file
        raise ValueError(f"could not read mean parameters from '{path}' ({error}); "
                         "expected an .npz file.") from None  # fmt: skip
    expected = {"pose": (6 * NUM_JOINTS,), "shape": (NUM_BETAS,), "cam": (3,)}
    values = {}
    for key, shape in expected.items():
        if key not in arrays:
            raise ValueError(f"'{path}' has no '{key}' array (keys: {sorted(arrays)}).")
        array = arrays[key].reshape(-1) if arrays[key].size == shape[0] else arrays[key]
        if array.shape != shape:
            raise ValueError(f"'{path}': '{key}' has shape {arrays[key].shape}, expected {shape}.")
        values[key] = tuple(float(v) for v in array)
    return MeanParams(pose6d=values["pose"], shape=values["shape"], cam=values["cam"])


def smpl_outputs(
    body_model: smpl_lib.SMPLModel,
    pose6d: jnp.ndarray,
    betas: jnp.ndarray,
    cam: jnp.ndarray,
    joint_layout: str,
    joint_body_model: smpl_lib.SMPLModel | None = None,
) -> dict:
    """The output dict of every model, from the parameters of all V iterations.

    The body model runs once, on the final iteration only (in float32). Joints come from the
    body model restricted to the vertices the layout needs (`joint_body_model`), so a training
    step, which uses joints only, never skins the whole mesh: XLA drops the unused vertices.

    Args:
      body_model: the SMPL model.
      pose6d: [V, B, T, 24, 6] 6D rotations of every iteration.
      betas: [V, B, T, 10].
      cam: [V, B, T, 3].
      joint_layout: name of the joint layout of `joints3d` and `kp2d`.
      joint_body_model: the body model restricted to that layout's vertices (`smpl.joint_model`;
        None: the full model).

    Returns:
      dict with rotmats [B, T, 24, 3, 3], pose [B, T, 72] (axis-angle), betas [B, T, 10],
      cam [B, T, 3], vertices [B, T, 6890, 3], joints3d [B, T, J, 3], kp2d [B, T, J, 2] and
      iterations {rotmats [V, B, T, 24, 3, 3], betas [V, B, T, 10], cam [V, B, T, 3]}.
    """
    pose6d, betas, cam = (x.astype(jnp.float32) for x in (pose6d, betas, cam))
    rotmats = geometry.rot6d_to_matrix(pose6d)
    vertices, _ = smpl_lib.forward(body_model, betas[-1], rotmats[-1])
    joint_body = body_model if joint_body_model is None else joint_body_model
    joint_vertices, joints = smpl_lib.forward(joint_body, betas[-1], rotmats[-1])
    joints3d = smpl_lib.layout_joints(joint_body, joint_vertices, joints, joint_layout)
    return {
        "rotmats": rotmats[-1],
        "pose": geometry.rotmats_to_pose72(rotmats[-1]),
        "betas": betas[-1],
        "cam": cam[-1],
        "vertices": vertices,
        "joints3d": joints3d,
        "kp2d": geometry.weak_perspective_project(joints3d, cam[-1]),
        "iterations": {"rotmats": rotmats, "betas": betas, "cam": cam},
    }

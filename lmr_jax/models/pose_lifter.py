"""PC-HMR's 2D-to-3D pose lifter, the model: Martinez et al.'s residual MLP (`PoseLifter`), its
input (`normalize_keypoints`, `serial_keypoints`), its targets (`lifter_targets`), and its
checkpoint (`save_lifter`, `load_lifter`: WORKDIR/lifter). The choices are in
lmr_jax/models/lifter.py's docstring, which trains it (and re-exports these names); this file
holds only what a model needs, so that models/pchmr.py builds on it without reaching the data
pipeline (DESIGN.md: models do not depend on data).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lmr_jax import geometry
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import saved

INPUT_SLOTS = tuple(smpl_lib.VIBE49_TO_COMMON14)  # vibe49 entries of the 14 input joints
INPUT_HIPS = tuple(smpl_lib.COMMON14_PELVIS)  # the hips within the 14
OUTPUT_LAYOUT = "h36m17"
NUM_OUTPUT = 17
INPUT_DIM = 3 * len(INPUT_SLOTS)
_MIN_SCALE = 1e-3


def normalize_keypoints(kp2d: jnp.ndarray) -> jnp.ndarray:
    """The lifter's input from 2D keypoints (module docstring).

    Args:
      kp2d: [..., 49, 3] `vibe49` keypoints (x, y, confidence; 0 = missing).

    Returns:
      [..., 42]: 14 centred and scaled (x, y), zero where missing, then the 14 confidences.
    """
    points = jnp.take(kp2d, jnp.asarray(INPUT_SLOTS), axis=-2)
    xy, conf = points[..., :2], (points[..., 2:] > 0).astype(points.dtype)
    hips = jnp.take(conf, jnp.asarray(INPUT_HIPS), axis=-2)
    both_hips = jnp.all(hips > 0, axis=(-2, -1), keepdims=True)
    hip_centre = jnp.mean(jnp.take(xy, jnp.asarray(INPUT_HIPS), axis=-2), -2, keepdims=True)
    count = jnp.maximum(jnp.sum(conf, axis=-2, keepdims=True), 1.0)
    mean_centre = jnp.sum(xy * conf, axis=-2, keepdims=True) / count
    centred = (xy - jnp.where(both_hips, hip_centre, mean_centre)) * conf
    rms = jnp.sqrt(jnp.sum(centred * centred, axis=(-2, -1), keepdims=True) / count)
    normalised = centred / jnp.maximum(rms, _MIN_SCALE)
    flat = normalised.reshape(*normalised.shape[:-2], -1)
    return jnp.concatenate([flat, conf[..., 0]], axis=-1)


def serial_keypoints(joints3d: jnp.ndarray, cam: jnp.ndarray) -> jnp.ndarray:
    """[..., J, 3] (x, y, confidence 1) of joints [..., J, 3] projected with cams [..., 3]: the
    serial lifter's input (the 3D-to-2D pose encoder, every joint visible)."""
    xy = geometry.weak_perspective_project(joints3d, cam)
    return jnp.concatenate([xy, jnp.ones_like(xy[..., :1])], axis=-1)


def lifter_targets(body_model: smpl_lib.SMPLModel, pose: jnp.ndarray, shape: jnp.ndarray):
    """[..., 17, 3] pelvis-relative `h36m17` joints of the SMPL meshes of `pose` [..., 72] and
    `shape` [..., 10] (the training targets; `body_model` may be `smpl.joint_model(...)`)."""
    vertices, joints = smpl_lib.forward(body_model, shape, geometry.pose72_to_rotmats(pose))
    h36m = smpl_lib.layout_joints(body_model, vertices, joints, OUTPUT_LAYOUT)
    return h36m - h36m[..., :1, :]


class PoseLifter(nn.Module):
    """Martinez et al.'s residual MLP: [..., 42] normalised 2D -> [..., 17, 3] root-relative 3D."""

    hidden_size: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        def layer(x, name):
            x = nn.Dense(self.hidden_size, name=f"{name}_dense")(x)
            x = nn.relu(nn.LayerNorm(name=f"{name}_norm")(x))
            return nn.Dropout(self.dropout, deterministic=not train)(x)

        x = layer(inputs, "input")
        for block in range(self.num_blocks):
            x = x + layer(layer(x, f"block{block}_a"), f"block{block}_b")
        joints = nn.Dense(3 * (NUM_OUTPUT - 1), name="joints")(x)
        joints = joints.reshape(*joints.shape[:-1], NUM_OUTPUT - 1, 3)
        root = jnp.zeros((*joints.shape[:-2], 1, 3), joints.dtype)
        return jnp.concatenate([root, joints], axis=-2)


@dataclasses.dataclass(frozen=True)
class Lifter:
    """A trained lifter: its parameters and model fields; `lift` maps keypoints to 3D."""

    params: Any
    model: ml_collections.ConfigDict

    def module(self) -> PoseLifter:
        return PoseLifter(**self.model.to_dict())

    def lift(self, kp2d: jnp.ndarray) -> jnp.ndarray:
        """[..., 49, 3] `vibe49` keypoints -> [..., 17, 3] pelvis-relative h36m17 joints (m)."""
        return self.module().apply({"params": self.params}, normalize_keypoints(kp2d))


def lifter_loss(module: PoseLifter, params, inputs, targets, rng, train: bool = True):
    """(mean squared joint error in m^2, {'loss', 'mpjpe_mm'})."""
    pred = module.apply({"params": params}, inputs, train=train, rngs={"dropout": rng})
    loss = jnp.mean(jnp.sum(jnp.square(pred - targets), -1))
    mpjpe = 1000.0 * jnp.mean(jnp.linalg.norm(pred - targets, axis=-1)[..., 1:])
    return loss, {"loss": loss, "mpjpe_mm": mpjpe}


def lifter_dir(workdir: str) -> str:
    """WORKDIR/lifter, where `train_lifter` saves the lifter."""
    return os.path.join(os.path.abspath(workdir), "lifter")


def save_lifter(lifter: Lifter, workdir: str) -> None:
    """Writes WORKDIR/lifter/{params (Orbax), config.json}, replacing an earlier one."""
    saved.save(lifter_dir(workdir), lifter.params, lifter.model)


def load_lifter(workdir: str) -> Lifter:
    """Reads the lifter `train_lifter` saved in `workdir`.

    Raises:
      ValueError: naming the folder when it holds no lifter.
    """
    params, model = saved.load(lifter_dir(workdir), workdir, "pose lifter",
                               "lmr_jax.models.lifter")  # fmt: skip
    return Lifter(params=params, model=model)

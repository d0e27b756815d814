"""HMR's iterative regressor (as in SPIN/VIBE), and the per-frame HMR baseline built on it.

The regressor maps a frame feature and the current estimate [pose (6D), shape, camera] through two
dense layers of 1024 with dropout (no activation between them, exactly as SPIN's and VIBE's
`Regressor`), then three linear heads give residual updates; this repeats `num_iterations` times
(iterative error feedback) with shared weights, starting from the mean parameters. The feature
part of the first layer is projected once for all iterations (hoisted, layers.FeedForward).

Config (`default_config`, the registry's 'hmr'): the shared fields (models.common) and the
regressor's, regressor_hidden (1024) and regressor_dropout (0.5), which VIBE's config has too
(`add_regressor_fields`). HMR has no recurrence, so no hidden_size, GRU or scan fields.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common
from lmr_jax.models.layers import FeedForward, StackedDense, head_init, linear_init
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams, smpl_outputs


class HMRRegressor(nn.Module):
    """Iterative per-frame SMPL regressor.

    Attributes:
      mean_params: starting point of the iterations.
      hidden_size: width of the two dense layers (1024 in HMR/SPIN/VIBE).
      num_iterations: refinement iterations (3), weights shared.
      dropout: dropout after each dense layer (0.5 in SPIN/VIBE), training only.
      head_init: 'small' or 'zeros', see layers.head_init.
      dtype: compute dtype of the matmuls.
    """

    mean_params: MeanParams = MeanParams()
    hidden_size: int = 1024
    num_iterations: int = 3
    dropout: float = 0.5
    head_init: str = "small"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False):
        """Regresses SMPL parameters per frame.

        Args:
          features: [..., D] one feature vector per frame.
          train: enables dropout (needs a 'dropout' RNG).

        Returns:
          (pose6d [V, ..., 24, 6], betas [V, ..., 10], cam [V, ..., 3]), every iteration.
        """
        num_params = 6 * NUM_JOINTS + NUM_BETAS + 3
        fc1 = FeedForward(
            self.hidden_size,
            fan_in=features.shape[-1] + num_params,
            activation=None,
            dropout=self.dropout,
            dtype=self.dtype,
            name="fc1",
        )
        init = linear_init(self.hidden_size)
        fc2 = StackedDense(
            self.hidden_size, kernel_init=init, bias_init=init, dtype=self.dtype, name="fc2"
        )
        drop2 = nn.Dropout(self.dropout)
        heads = {
            name: StackedDense(
                width, kernel_init=head_init(self.head_init), dtype=self.dtype, name=name
            )
            for name, width in (("decpose", 6 * NUM_JOINTS), ("decshape", NUM_BETAS), ("deccam", 3))
        }
        pose, shape, cam = self.mean_params.initial(features.shape[:-1])
        pose = pose.reshape(*pose.shape[:-2], 6 * NUM_JOINTS)
        static = fc1.project_static(features)  # once for all iterations
        history = []
        for _ in range(self.num_iterations):
            hidden = fc1(static, jnp.concatenate([pose, shape, cam], axis=-1), train=train)
            hidden = drop2(fc2(hidden), deterministic=not train)
            pose = pose + heads["decpose"](hidden)
            shape = shape + heads["decshape"](hidden)
            cam = cam + heads["deccam"](hidden)
            history.append((pose.reshape(*pose.shape[:-1], NUM_JOINTS, 6), shape, cam))
        return tuple(jnp.stack(values) for values in zip(*history, strict=True))


class HMR(nn.Module):
    """Per-frame HMR baseline: the regressor on every frame's feature, no temporal model.

    Attributes:
      body_model: the SMPL model (constants, not parameters).
      joint_body_model: `smpl.joint_model(body_model, joint_layout)`, which gives the joints
        without skinning the whole mesh (None: joints from the full body model).
      mean_params: starting point of the regressor.
      regressor_hidden, num_iterations, regressor_dropout, head_init: see HMRRegressor.
      joint_layout: layout of the `joints3d` / `kp2d` outputs.
      dtype: compute dtype of the matmuls.
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    regressor_hidden: int = 1024
    num_iterations: int = 3
    regressor_dropout: float = 0.5
    head_init: str = "small"
    joint_layout: str = "vibe49"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, features: jnp.ndarray, *, train: bool = False, state=None, return_state=False
    ):
        """[B, T, D] features -> the output dict of params.smpl_outputs; per frame, so its
        streaming state (`return_state`, see LMR) is empty."""
        del state  # nothing to carry from frame to frame
        outputs = regress_body(self, features, train=train)
        return (outputs, ()) if return_state else outputs


def regress_body(module: nn.Module, features: jnp.ndarray, *, train: bool) -> dict:
    """HMR's regressor (a submodule 'regressor' of `module`, configured from its attributes)
    on every frame of `features` [B, T, D], then the body model: the models' output dict.
    Call it from inside `module`'s compact __call__ (HMR, and VIBE after its encoder)."""
    pose6d, betas, cam = HMRRegressor(
        mean_params=module.mean_params,
        hidden_size=module.regressor_hidden,
        num_iterations=module.num_iterations,
        dropout=module.regressor_dropout,
        head_init=module.head_init,
        dtype=module.dtype,
        name="regressor",
    )(features, train=train)
    return smpl_outputs(
        module.body_model, pose6d, betas, cam, module.joint_layout, module.joint_body_model
    )


# ---------------------------------------------------------------------------------------------
# Config and registry entry
# ---------------------------------------------------------------------------------------------


def add_regressor_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the regressor's fields: regressor_hidden (1024), regressor_dropout (0.5)."""
    config.regressor_hidden = 1024
    config.regressor_dropout = 0.5
    return config


def check_regressor(config: ml_collections.ConfigDict) -> None:
    common.check_positive(config, ["regressor_hidden"])
    common.check_rate(config, ["regressor_dropout"])


def regressor_kwargs(config: ml_collections.ConfigDict) -> dict:
    return dict(
        regressor_hidden=int(config.regressor_hidden),
        regressor_dropout=float(config.regressor_dropout),
    )


def default_config() -> ml_collections.ConfigDict:
    """HMR's model fields with their defaults (the module docstring lists them)."""
    return add_regressor_fields(common.shared_config("hmr"))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad HMR config."""
    common.check_shared(config, default_config())
    check_regressor(config)


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> HMR:
    """The HMR module of a checked config (models.build_model checks and completes it)."""
    return HMR(**regressor_kwargs(config), **common.shared_kwargs(config, body_model))

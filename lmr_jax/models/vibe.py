"""The VIBE-style baseline: one temporal GRU encoder, then HMR's iterative regressor per frame.

Follows VIBE's `TemporalEncoder` + `Regressor` (Kocabas et al. 2020), without the motion
discriminator: a 2-layer unidirectional GRU (hidden 1024) over the frame features, ReLU, a linear
layer back to the feature width, a residual connection to the input features, then the HMR
regressor (hmr.HMRRegressor, 3 iterations from the mean parameters) on every frame. That is the
configuration of VIBE's released models (configs/config.yaml: MODEL.TGRU NUM_LAYERS 2,
ADD_LINEAR true, RESIDUAL true, BIDIRECTIONAL false, HIDDEN_SIZE 1024).

VIBE's other encoder options are here too, with VIBE's rules (lib/models/vibe.py,
TemporalEncoder): the linear layer exists when `add_linear` is set or the GRU is bidirectional
(its 2H outputs are always mapped back), ReLU comes before it, and the residual is added only
when `use_residual` is set and the output is as wide as the input features (VIBE: 2048). Without
the linear layer the GRU states themselves (ReLU-free) go to the regressor.
`torch_weights.load_vibe` loads VIBE's released generators into this model.

Config (`default_config`, the registry's 'vibe'): the shared fields (models.common), the
recurrent ones (hidden_size 1024, gru_layers 2, bidirectional, dropout between GRU layers,
scan_unroll), the regressor's (regressor_hidden 1024, regressor_dropout 0.5, see hmr.py), and
the encoder's add_linear and use_residual (both True, as VIBE's released models).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common, hmr
from lmr_jax.models.hmr import regress_body
from lmr_jax.models.layers import StackedDense, linear_init
from lmr_jax.models.params import MeanParams
from lmr_jax.models.recurrent import gru_like, run_gru


class TemporalEncoder(nn.Module):
    """GRU over time with a linear map back to the input width and a residual connection.

    Attributes:
      hidden_size: GRU width (1024 in VIBE).
      num_layers: GRU layers (2 in VIBE).
      bidirectional: bidirectional GRU (VIBE's default is unidirectional).
      dropout: dropout between GRU layers.
      add_linear: ReLU then a linear layer from the GRU width back to the feature width (VIBE's
        `add_linear`; a bidirectional encoder has that layer whatever this says, as VIBE's).
      use_residual: add the input features to the output when the widths agree (VIBE's
        `use_residual`).
      dtype: compute dtype of the matmuls.
      unroll: time steps per scan loop iteration (recurrent.GRU).
    """

    hidden_size: int = 1024
    num_layers: int = 2
    bidirectional: bool = False
    dropout: float = 0.0
    add_linear: bool = True
    use_residual: bool = True
    dtype: Any = jnp.float32
    unroll: int | bool = 1

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False, state=None, carry=False):
        """[B, T, D] -> [B, T, D] temporally encoded features ([B, T, dirs * H] without the
        linear layer).

        `state`: the state of an earlier call with `carry` (None: zeros); `carry`: return
        (features, the GRU state after the last frame) for streaming.
        """
        gru = gru_like(self, name="gru")
        states, state = run_gru(
            gru, gru.project_static(features), train=train, state=state, carry=carry
        )
        encoded = states
        if self.add_linear or self.bidirectional:
            init = linear_init(states.shape[-1])
            linear = StackedDense(
                features.shape[-1],
                kernel_init=init,
                bias_init=init,
                dtype=self.dtype,
                name="linear",
            )
            encoded = linear(nn.relu(states))
        if self.use_residual and encoded.shape[-1] == features.shape[-1]:
            encoded = encoded + features
        return (encoded, state) if carry else encoded


class VIBE(nn.Module):
    """VIBE-style video baseline (temporal encoder + per-frame iterative regressor).

    Attributes:
      body_model: the SMPL model (constants, not parameters).
      joint_body_model: `smpl.joint_model(body_model, joint_layout)`, which gives the joints
        without skinning the whole mesh (None: joints from the full body model).
      mean_params: starting point of the regressor.
      hidden_size, gru_layers, bidirectional, dropout, add_linear, use_residual: the temporal
        encoder (TemporalEncoder).
      regressor_hidden, num_iterations, regressor_dropout, head_init: the HMR regressor.
      joint_layout: layout of the `joints3d` / `kp2d` outputs.
      dtype: compute dtype of the matmuls.
      scan_unroll: time steps per scan loop iteration of the GRU.
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    hidden_size: int = 1024
    gru_layers: int = 2
    bidirectional: bool = False
    dropout: float = 0.0
    add_linear: bool = True
    use_residual: bool = True
    regressor_hidden: int = 1024
    num_iterations: int = 3
    regressor_dropout: float = 0.5
    head_init: str = "small"
    joint_layout: str = "vibe49"
    dtype: Any = jnp.float32
    scan_unroll: int | bool = 1

    @nn.compact
    def __call__(
        self, features: jnp.ndarray, *, train: bool = False, state=None, return_state=False
    ):
        """[B, T, D] features -> the output dict of params.smpl_outputs (V = 3 iterations);
        with `return_state`, (outputs, the encoder's state after the last frame), see LMR."""
        encoder = TemporalEncoder(
            self.hidden_size,
            num_layers=self.gru_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            add_linear=self.add_linear,
            use_residual=self.use_residual,
            dtype=self.dtype,
            unroll=self.scan_unroll,
            name="encoder",
        )
        if return_state:
            encoded, state = encoder(features, train=train, state=state, carry=True)
        else:
            encoded = encoder(features, train=train)
        outputs = regress_body(self, encoded, train=train)
        return (outputs, state) if return_state else outputs


# ---------------------------------------------------------------------------------------------
# Config and registry entry
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """VIBE's model fields with their defaults (the module docstring lists them)."""
    config = common.add_recurrent_fields(common.shared_config("vibe"), 1024, gru_layers=2)
    hmr.add_regressor_fields(config)
    config.add_linear = True
    config.use_residual = True
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad VIBE config."""
    common.check_shared(config, default_config())
    hmr.check_regressor(config)


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> VIBE:
    """The VIBE module of a checked config (models.build_model checks and completes it)."""
    return VIBE(
        add_linear=bool(config.add_linear),
        use_residual=bool(config.use_residual),
        **common.recurrent_kwargs(config),
        **hmr.regressor_kwargs(config),
        **common.shared_kwargs(config, body_model),
    )

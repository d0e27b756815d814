"""VIBE's released generator as parameters of our VIBE-style model (models.vibe.VIBE).

`torch_weights.load_vibe(path)` is the entry point; this module holds VIBE's key map, split from
torch_weights.py (the torchvision / SPIN maps; the file reader is torch_pickle.py) to keep both
files readable.

VIBE's trainer (lib/core/trainer.py, save_model) saves {'epoch', 'gen_state_dict',
'performance', 'gen_optimizer', 'disc_motion_state_dict', 'disc_motion_optimizer'}; its demo
loads 'gen_state_dict' alone, into VIBE_Demo with strict=False. The generator (lib/models/vibe.py)
is `encoder` (TemporalEncoder) + `regressor` (lib/models/spin.py, Regressor):

- `encoder.gru.{weight_ih, weight_hh, bias_ih, bias_hh}_l{k}[_reverse]`: torch's nn.GRU over
  time-major [T, N, F] frames (the encoder permutes N, T), gates stacked (r, z, n) in rows of
  [3H, in]; its cell equations are recurrent.GRU's. The layer-0 input projections of both
  directions become `static_projection` (kernel [D, dirs * 3H], forward direction first),
  those of layer k > 0 `layer_projections_{k-1}` (their input: both directions' outputs,
  forward first, as torch concatenates them), each layer's `weight_hh` / `bias_hh`
  `recurrent_kernel_k` [dirs, H, 3H] / `recurrent_bias_k` [dirs, 3H].
- `encoder.linear.{weight, bias}`: present when VIBE ran with add_linear or bidirectional; it
  maps the ReLU'd GRU states back to the feature width.
- `regressor.{fc1, fc2, decpose, decshape, deccam}`: SPIN's regressor, mapped by
  torch_weights.spin_regressor_params; `regressor.init_pose / init_shape / init_cam`: the mean
  parameters the model starts its 3 iterations from.

Skipped, on purpose: `regressor.smpl.*` (VIBE's SMPL layer carries the body model's arrays;
the body model here is the one the caller passes, never a second copy from the checkpoint), and
everything outside 'gen_state_dict' (optimizer states, the motion discriminator, which only
training uses, epoch and performance). Any other key is refused, naming it. What a state dict
cannot tell, VIBE's `use_residual`, is an argument; VIBE's released models set it
(configs/config.yaml: MODEL.TGRU.RESIDUAL true; demo.py: use_residual=True).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax.models import vibe
from lmr_jax.models.params import MeanParams
from lmr_jax.models.vibe import TemporalEncoder
from lmr_jax.torch_weights import (
    _NUM_PARAMS,
    CheckpointError,
    _array,
    _strip_module,
    find_state_dict,
    spin_regressor_params,
)

GENERATOR_KEY = "gen_state_dict"
_GRU_KEY = re.compile(r"encoder\.gru\.(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")
_REGRESSOR_KEY = re.compile(
    r"regressor\.((fc1|fc2|decpose|decshape|deccam)\.(weight|bias)|init_(pose|shape|cam))"
)
_LINEAR_KEYS = ("encoder.linear.weight", "encoder.linear.bias")
_SKIPPED_PREFIX = "regressor.smpl."
_WHAT = "VIBE's generator"


def vibe_generator_state(checkpoint: Any, source: str = "") -> dict[str, Any]:
    """The generator's state dict: checkpoint['gen_state_dict'] (VIBE's trainer and released
    files), else a bare generator state dict (top level, 'model' or 'state_dict').

    Args:
      checkpoint: what torch_weights.read_checkpoint returned.
      source: the file's name, for error messages.

    Returns:
      {key: value}, DataParallel's 'module.' prefix removed.

    Raises:
      CheckpointError: no generator state dict is found.
    """
    generator = checkpoint.get(GENERATOR_KEY) if isinstance(checkpoint, Mapping) else None
    if isinstance(generator, Mapping):
        return {_strip_module(k): v for k, v in generator.items() if isinstance(k, str)}
    try:
        return find_state_dict(checkpoint, _GRU_KEY.fullmatch, _WHAT, source)
    except CheckpointError:
        keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else []
        found = ", ".join(keys[:8]) or type(checkpoint).__name__
        message = (f"'{source}' holds no {_WHAT}: no '{GENERATOR_KEY}' and no 'encoder.gru.*' "
                   f"keys (top-level keys: {found}).")  # fmt: skip
        raise CheckpointError(message) from None


def _check_keys(state: Mapping[str, Any], source: str) -> tuple[int, int]:
    """Refuses keys outside VIBE's generator; returns (GRU layers, directions) from the keys."""
    layers, directions = 0, 1
    for key in state:
        gru = _GRU_KEY.fullmatch(key)
        if gru:
            layers = max(layers, int(gru.group(2)) + 1)
            directions = 2 if gru.group(3) else directions
        elif not (_REGRESSOR_KEY.fullmatch(key) or key in _LINEAR_KEYS
                  or key.startswith(_SKIPPED_PREFIX)):  # fmt: skip
            raise CheckpointError(f"'{source}' has '{key}', which is not a parameter of "
                                  f"{_WHAT} (encoder.gru, encoder.linear, regressor; "
                                  f"{_SKIPPED_PREFIX}* is skipped).")  # fmt: skip
    if layers == 0:
        raise CheckpointError(f"'{source}' has no 'encoder.gru.weight_ih_l0', which {_WHAT} "
                              "needs.")  # fmt: skip
    return layers, directions


def _gru_params(state: Mapping[str, Any], source: str, layers: int, dirs: int):
    """(recurrent.GRU parameters, H, D) from torch's nn.GRU keys under 'encoder.gru.'."""
    if "encoder.gru.weight_hh_l0" not in state:
        raise CheckpointError(f"'{source}' has no 'encoder.gru.weight_hh_l0', which {_WHAT} "
                              "needs.")  # fmt: skip
    shape = np.shape(state["encoder.gru.weight_hh_l0"])
    if not (len(shape) == 2 and shape[0] == 3 * shape[1] > 0):
        raise CheckpointError(f"'{source}': 'encoder.gru.weight_hh_l0' has shape "
                              f"{shape}, expected [3H, H] for {_WHAT}.")  # fmt: skip
    hidden = shape[1]
    first = np.shape(state.get("encoder.gru.weight_ih_l0"))
    dim = first[1] if len(first) == 2 else 0  # else _array names the key below
    params = {}
    for layer in range(layers):
        fan_in = dim if layer == 0 else dirs * hidden
        shapes = {"weight_ih": (3 * hidden, fan_in), "weight_hh": (3 * hidden, hidden),
                  "bias_ih": (3 * hidden,), "bias_hh": (3 * hidden,)}  # fmt: skip
        per_direction = [
            {
                name: _array(state, f"encoder.gru.{name}_l{layer}{suffix}", source, shape, _WHAT)
                for name, shape in shapes.items()
            }
            for suffix in ("", "_reverse")[:dirs]
        ]
        projection = {  # both directions side by side, forward first: [in, dirs * 3H]
            "kernel": np.concatenate([d["weight_ih"].T for d in per_direction], axis=1),
            "bias": np.concatenate([d["bias_ih"] for d in per_direction]),
        }
        params["static_projection" if layer == 0 else f"layer_projections_{layer - 1}"] = projection
        params[f"recurrent_kernel_{layer}"] = np.stack([d["weight_hh"].T for d in per_direction])
        params[f"recurrent_bias_{layer}"] = np.stack([d["bias_hh"] for d in per_direction])
    return params, hidden, dim


def vibe_params(
    state: Mapping[str, Any], source: str = "", use_residual: bool = True
) -> tuple[ml_collections.ConfigDict, dict, MeanParams]:
    """The VIBE-style model's config, parameters and mean parameters from VIBE's generator.

    Args:
      state: the generator's state dict (vibe_generator_state).
      source: the file's name, for error messages.
      use_residual: VIBE's `use_residual` (True in its released models), which the state dict
        cannot tell.

    Returns:
      (a model config of models.vibe.default_config() with the checkpoint's hidden_size,
      gru_layers, bidirectional, add_linear, use_residual, regressor_hidden and VIBE's 3
      iterations, the parameters {'encoder': ..., 'regressor': ...} as float32 numpy arrays,
      the mean parameters of the `regressor.init_*` buffers).

    Raises:
      CheckpointError: naming a missing key, a key of unexpected shape or an unknown key.
    """
    layers, dirs = _check_keys(state, source)
    gru, hidden, dim = _gru_params(state, source, layers, dirs)
    encoder = {"gru": gru}
    add_linear = dirs == 2 or any(key in state for key in _LINEAR_KEYS)
    width = dirs * hidden
    if add_linear:  # VIBE: nn.Linear(H * dirs, 2048), back to the feature width
        weight = _array(state, _LINEAR_KEYS[0], source, (dim, width), _WHAT)
        bias = _array(state, _LINEAR_KEYS[1], source, (dim,), _WHAT)
        encoder["linear"] = {"kernel": weight.T, "bias": bias}
        width = dim
    regressor, mean_params = spin_regressor_params(state, source, prefix="regressor.")
    if regressor["fc1"]["static_projection"]["kernel"].shape[0] != width:
        fc1 = np.shape(state["regressor.fc1.weight"])
        raise CheckpointError(f"'{source}': 'regressor.fc1.weight' has shape {fc1}, expected "
                              f"({fc1[0]}, {width + _NUM_PARAMS}) for the encoder's "
                              f"{width}-wide output.")  # fmt: skip
    if mean_params is None:
        raise CheckpointError(f"'{source}' has no 'regressor.init_pose', which {_WHAT} "
                              "starts from.")  # fmt: skip
    config = vibe.default_config()
    config.update(
        hidden_size=hidden,
        gru_layers=layers,
        bidirectional=dirs == 2,
        dropout=0.0,  # VIBE's nn.GRU has none
        add_linear=add_linear,
        use_residual=bool(use_residual),
        regressor_hidden=regressor["fc2"]["kernel"].shape[0],
        num_iterations=3,  # Regressor.forward(n_iter=3), as VIBE.forward calls it
        regressor_dropout=0.5,  # nn.Dropout()
    )
    _check_encoder_tree(encoder, config, dim)
    return config, {"encoder": encoder, "regressor": regressor}, mean_params


def _check_encoder_tree(encoder: dict, config: ml_collections.ConfigDict, dim: int) -> None:
    """The mapped tree must be TemporalEncoder's own (names and shapes), or vibe.py changed."""
    module = TemporalEncoder(
        config.hidden_size,
        num_layers=config.gru_layers,
        bidirectional=config.bidirectional,
        add_linear=config.add_linear,
        use_residual=config.use_residual,
    )
    features = jax.ShapeDtypeStruct((1, 1, dim), jnp.float32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), features)["params"]
    if jax.tree.map(np.shape, encoder) != jax.tree.map(lambda leaf: leaf.shape, abstract):
        raise AssertionError("VIBE's encoder map no longer matches TemporalEncoder's parameters.")

"""Models and their registry: LMR (and its ablations), the VIBE-style and per-frame HMR baselines.

`build_model(config, body_model)` returns a Flax module for a config from
`default_model_config(name)`. Every module is called as

    outputs = model.apply({'params': params}, features, train=False)   # features [B, T, D]
    outputs = model.apply({'params': params}, features, train=True, rngs={'dropout': key})

and returns the dict described in params.smpl_outputs. `count_params` and `model_param_count`
count parameters (the latter by abstract evaluation, cheap at any size);
`matched_single_rnn_width` gives the capacity-matched width of the single-RNN ablation.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import smpl as smpl_lib
from lmr_jax.models.hmr import HMR, HMRRegressor
from lmr_jax.models.layers import FeedForward, StackedDense
from lmr_jax.models.lmr import LMR, PartRecurrences, SingleRecurrence
from lmr_jax.models.params import MeanParams, load_mean_params, smpl_outputs
from lmr_jax.models.recurrent import GRU, gru_scan
from lmr_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50
from lmr_jax.models.vibe import VIBE, TemporalEncoder

MODEL_NAMES = ("lmr", "vibe", "hmr")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def default_model_config(name: str = "lmr") -> ml_collections.ConfigDict:
    """All model fields with their defaults for `name` ('lmr', 'vibe' or 'hmr').

    Fields: name; hidden_size (GRU width: 512 for each of LMR's seven GRUs, 1024 for VIBE's and
    HMR's, see below); num_iterations (V for LMR, the regressor's iterations
    for VIBE/HMR); gru_layers (1 for LMR, 2 for VIBE); bidirectional; dropout (between GRU layers
    and on LMR's hidden layers); camera ('rnn' | 'dense', LMR); single_rnn, no_root_dependency
    (LMR ablations); single_rnn_hidden_size (width of the `single_rnn` ablation's one pose GRU,
    0 = hidden_size; the shape and camera modules keep hidden_size; refused unless single_rnn;
    `matched_single_rnn_width` gives the width at which the ablation holds LMR's parameter
    count); dtype ('float32' | 'bfloat16' matmuls); mean_params (path of VIBE's
    smpl_mean_params.npz, '' for an upright root with identity joints / zero shape / cam
    [0.9, 0, 0], see models.params); joint_layout;
    parts (LMR's part table, root first, as (name, joints) pairs); head_init ('small' | 'zeros');
    regressor_hidden, regressor_dropout (HMR regressor of VIBE/HMR); add_linear, use_residual
    (VIBE's temporal encoder: ReLU + a linear layer back to the feature width, and the residual
    connection to the input features, see models.vibe; refused as False for the other models);
    scan_unroll (time steps per scan loop iteration, a speed knob).

    LMR's width: the paper gives no hidden size. Each of its seven GRUs (root, five parts, camera)
    models 2-5 joints or 3 camera numbers, where VIBE's one GRU of 1024 models the whole body;
    at 1024 each, LMR's recurrences alone cost 7 GRUs x 3 iterations x T steps of h @ W_hh,
    twice VIBE's whole forward (experiments/benchmarks/model_step.py, row 'lmr_1024'). At 512
    each the seven GRUs hold 3584 units in all and a training step costs under 2x VIBE's.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}', expected one of {MODEL_NAMES}.")
    config = ml_collections.ConfigDict()
    config.name = name
    config.hidden_size = 512 if name == "lmr" else 1024
    config.num_iterations = 3
    config.gru_layers = 2 if name == "vibe" else 1
    config.bidirectional = False
    config.dropout = 0.0
    config.camera = "rnn"
    config.single_rnn = False
    config.no_root_dependency = False
    config.single_rnn_hidden_size = 0
    config.dtype = "float32"
    config.mean_params = ""
    config.joint_layout = "vibe49"
    config.parts = tuple(smpl_lib.PARTS.items())
    config.head_init = "small"
    config.regressor_hidden = 1024
    config.regressor_dropout = 0.5
    config.add_linear = True
    config.use_residual = True
    config.scan_unroll = 1
    return config


def _check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad model config."""
    choices = {
        "name": MODEL_NAMES,
        "camera": ("rnn", "dense"),
        "dtype": tuple(_DTYPES),
        "head_init": ("small", "zeros"),
    }
    for field, allowed in choices.items():
        if config[field] not in allowed:
            raise ValueError(f"model.{field} is '{config[field]}', expected one of {allowed}.")
    for field in ("hidden_size", "num_iterations", "gru_layers", "regressor_hidden", "scan_unroll"):
        if int(config[field]) < 1:
            raise ValueError(f"model.{field} is {config[field]}, expected a positive integer.")
    for field in ("dropout", "regressor_dropout"):
        if not 0.0 <= float(config[field]) < 1.0:
            raise ValueError(f"model.{field} is {config[field]}, expected a rate in [0, 1).")
    single_width = int(config.get("single_rnn_hidden_size", 0))
    if single_width < 0:
        raise ValueError(f"model.single_rnn_hidden_size is {single_width}, expected 0 (= "
                         "hidden_size) or a positive width.")  # fmt: skip
    if single_width and not (config.name == "lmr" and config.single_rnn):
        raise ValueError(f"model.single_rnn_hidden_size is {single_width}, but only LMR's "
                         "single_rnn ablation has that GRU: set model.single_rnn=True or "
                         "leave it 0.")  # fmt: skip
    for field in ("add_linear", "use_residual"):
        if not config.get(field, True) and config.name != "vibe":
            raise ValueError(f"model.{field} is False, but only VIBE's temporal encoder has "
                             "that option: leave it True.")  # fmt: skip
    if config.single_rnn and config.no_root_dependency:
        raise ValueError("model.single_rnn and model.no_root_dependency exclude each other: "
                         "the single-RNN ablation has no root part.")  # fmt: skip
    smpl_lib.get_layout(config.joint_layout)


def build_model(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel):
    """Builds the model that `config` describes.

    Args:
      config: a config with the fields of `default_model_config`.
      body_model: the SMPL model, kept as constants of the module (not parameters).

    Returns:
      A flax.linen.Module (LMR, VIBE or HMR).

    Raises:
      ValueError: naming the bad field, the unreadable mean-parameter file or the bad part table.
    """
    _check(config)
    if config.get("backbone") is not None:  # images in: a ResNet per frame, then this model
        from lmr_jax.models import pixels

        return pixels.wrap(config, body_model, build_model)
    common = dict(
        body_model=body_model,
        joint_body_model=smpl_lib.joint_model(body_model, config.joint_layout),
        mean_params=load_mean_params(config.mean_params),
        num_iterations=int(config.num_iterations),
        head_init=config.head_init,
        joint_layout=config.joint_layout,
        dtype=_DTYPES[config.dtype],
    )
    rnn = dict(
        scan_unroll=int(config.scan_unroll),
        hidden_size=int(config.hidden_size),
        bidirectional=bool(config.bidirectional),
        dropout=float(config.dropout),
    )
    regressor = dict(
        regressor_hidden=int(config.regressor_hidden),
        regressor_dropout=float(config.regressor_dropout),
    )
    if config.name == "lmr":
        parts = tuple(smpl_lib.validate_parts(dict(config.parts)).items())
        return LMR(
            gru_layers=int(config.gru_layers),
            camera=config.camera,
            single_rnn=bool(config.single_rnn),
            # .get: model configs saved with checkpoints before the field existed lack it.
            single_rnn_hidden_size=int(config.get("single_rnn_hidden_size", 0)),
            no_root_dependency=bool(config.no_root_dependency),
            parts=parts,
            **rnn,
            **common,
        )
    if config.name == "vibe":
        return VIBE(
            gru_layers=int(config.gru_layers),
            # .get: model configs saved with checkpoints before the fields existed lack them.
            add_linear=bool(config.get("add_linear", True)),
            use_residual=bool(config.get("use_residual", True)),
            **rnn,
            **regressor,
            **common,
        )
    return HMR(**regressor, **common)


def count_params(params) -> int:
    """The number of parameters of a tree of arrays or of `jax.ShapeDtypeStruct`s.

    Args:
      params: a parameter tree, e.g. `model.init(...)['params']` or its `jax.eval_shape`.

    Returns:
      The sum of the leaves' sizes (a Python int: no int32 overflow at any size).
    """
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def model_param_count(config: ml_collections.ConfigDict, feature_dim: int) -> int:
    """The parameter count of the model `config` describes, for features [B, T, feature_dim].

    Counted on `jax.eval_shape` of `init`: no arrays are allocated and nothing is compiled, so
    a paper-size model costs a trace (about 0.2 s). Counts are cached per config.

    Args:
      config: a model config (fields of `default_model_config`).
      feature_dim: D of the input features (2048 for VIBE's SPIN features).

    Returns:
      The number of parameters.
    """
    return _model_param_count(ml_collections.FrozenConfigDict(config), int(feature_dim))


@functools.lru_cache(maxsize=64)
def _model_param_count(config: ml_collections.FrozenConfigDict, feature_dim: int) -> int:
    # The body model is constants, never parameters: the procedural one gives the same count.
    model = build_model(ml_collections.ConfigDict(config), _procedural_body())
    features = jax.ShapeDtypeStruct((1, 1, feature_dim), jnp.float32)
    return count_params(jax.eval_shape(model.init, jax.random.key(0), features)["params"])


@functools.lru_cache(maxsize=1)
def _procedural_body() -> smpl_lib.SMPLModel:
    return smpl_lib.procedural(0)


def matched_single_rnn_width(config: ml_collections.ConfigDict, feature_dim: int) -> int:
    """The `single_rnn_hidden_size` at which the single-RNN ablation has LMR's parameter count.

    LMR's six part GRUs each project the features, so at equal width they hold nearly 6x the
    parameters of the ablation's one pose GRU (at paper size 29.6M vs 9.6M for the whole
    model). Only the pose GRU widens; the shape and camera modules keep `hidden_size`, as in
    LMR. Every parameter's size is a product of at most two widths (GRU kernels [D, 3w] and
    [w, 3w], biases, the head), so the count is a quadratic in the width: three counts give a
    guess, and steps from it, which rely only on the count growing with the width, end at the
    closest width (five traces in all when the guess is exact).

    Args:
      config: an LMR model config; its single_rnn, no_root_dependency and
        single_rnn_hidden_size are ignored (the target is LMR with everything else equal).
      feature_dim: D of the input features.

    Returns:
      The width whose single-RNN model's parameter count is closest to LMR's.
    """
    lmr = ml_collections.ConfigDict(config.to_dict())
    lmr.update(single_rnn=False, no_root_dependency=False, single_rnn_hidden_size=0)
    target = model_param_count(lmr, feature_dim)

    def count(width: int) -> int:
        single = ml_collections.ConfigDict(lmr.to_dict())
        single.update(single_rnn=True, single_rnn_hidden_size=width)
        return model_param_count(single, feature_dim)

    widths = [int(config.hidden_size) * k for k in (1, 2, 3)]
    counts = [count(w) for w in widths]
    if not counts[0] < counts[1] < counts[2]:  # the steps below would never end
        raise ValueError("the single-RNN model's parameter count does not grow with "
                         f"model.single_rnn_hidden_size (widths {widths}: {counts}).")  # fmt: skip
    a, b, c = np.polyfit(widths, counts, 2)
    roots = np.roots([a, b, c - target])
    width = max(1, round(max((r.real for r in roots if abs(r.imag) < 1e-9), default=1.0)))
    while width > 1 and count(width) > target:
        width -= 1
    while count(width + 1) <= target:
        width += 1
    # Now count(width) <= target < count(width + 1), or width is 1.
    return width if target - count(width) <= count(width + 1) - target else width + 1


__all__ = [
    "GRU",
    "HMR",
    "HMRRegressor",
    "LMR",
    "MODEL_NAMES",
    "VIBE",
    "FeedForward",
    "MeanParams",
    "PartRecurrences",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "SingleRecurrence",
    "StackedDense",
    "TemporalEncoder",
    "build_model",
    "count_params",
    "default_model_config",
    "gru_scan",
    "load_mean_params",
    "matched_single_rnn_width",
    "model_param_count",
    "smpl_outputs",
]

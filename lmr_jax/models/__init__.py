"""Models and their registry: LMR (and its ablations), the VIBE-style and per-frame HMR baselines,
HKMR (models/hkmr.py), DSD and SATN (models/dsd.py, models/satn.py), PC-HMR's stage 2 on a
trained regressor run (models/pchmr.py).

Each system lives in its own file, `lmr_jax/models/<system>.py`, with its Flax module(s) AND its
config: `default_config()` (its fields with their defaults; the fields every system shares come
from models.common), `check_config(config)` (ValueError, one sentence) and
`build(config, body_model)` (the Flax module), and optionally `RENAMED_FIELDS` (old field name
-> new one, so that configs and checkpoints of before a rename keep loading),
`VARIANT_WIDTH_FIELD` (the field the shared variants' width sets, see `variant_width_field`),
`extra_losses(config, outputs, batch, axis_name)` (loss terms of the system beside the
shared ones, see `extra_losses` below), `initial_params(config, params, read_run)` (the
parts of a new run's parameters that come from another run, see `initial_params` below) and
`learning_rate_scales(config)` (per top-level parameter group, a factor of optim.lr, see
`learning_rate_scales` below). A system built on another run's model (PC-HMR) sets
`BUILDS_BASE_MODEL = True`: its `build(config, body_model, build_saved)` also gets the
registry's builder of a model config saved with a checkpoint (`build_saved_model`).
A module may declare `training_inputs` (a tuple of batch fields, e.g. ('kp2d',)): the training
step passes those fields of the batch to it as keyword arguments (rngs.apply_for_training).
`SYSTEMS` below maps a name to that module; a new system is one new line there.

`build_model(config, body_model)` returns a Flax module for a config from
`default_model_config(name)`. Every module is called as

    outputs = model.apply({'params': params}, features, train=False)   # features [B, T, D]
    outputs = model.apply({'params': params}, features, train=True, rngs={'dropout': key})

and returns the dict described in params.smpl_outputs. `count_params` and `model_param_count`
count parameters (the latter by abstract evaluation, cheap at any size);
`matched_single_rnn_width` gives the capacity-matched width of the single-RNN ablation.

Compatibility: a config holds exactly its system's fields. A field of another system (or none)
is refused naming the field, the system and its fields; a field missing from a config (a
config saved before the field existed) takes its default; `saved_model_config` turns a model
config saved with a checkpoint (before this registry, every system's fields in one flat config)
into its system's fields.
"""

from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common, dsd, hkmr, hmr, lmr, pchmr, satn, vibe
from lmr_jax.models.hmr import HMR, HMRRegressor
from lmr_jax.models.layers import FeedForward, StackedDense
from lmr_jax.models.lmr import LMR, PartRecurrences, SingleRecurrence
from lmr_jax.models.params import MeanParams, load_mean_params, smpl_outputs
from lmr_jax.models.recurrent import GRU, gru_scan
from lmr_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50
from lmr_jax.models.vibe import VIBE, TemporalEncoder

SYSTEMS: dict[str, types.ModuleType] = {
    "lmr": lmr,
    "vibe": vibe,
    "hmr": hmr,
    "hkmr": hkmr,
    "dsd": dsd,
    "satn": satn,
    "pchmr": pchmr,
}
MODEL_NAMES = tuple(SYSTEMS)  # the names as registered at import
# A field every system may have: a ResNet that turns frames into the system's features
# (models/pixels.py, experiments/lmr_frames.py).
BACKBONE = "backbone"


def _system(name: str) -> types.ModuleType:
    if name not in SYSTEMS:
        raise ValueError(f"model.name is '{name}', expected one of {tuple(SYSTEMS)}.")
    return SYSTEMS[name]


def variant_width_field(name: str) -> str | None:
    """The model field that the shared variants' width (config.set_hidden_size: 32 in smoke,
    256 in cpu, 128 in bench) sets for the system `name`: its module's VARIANT_WIDTH_FIELD
    (None: the variants leave its widths alone, as HKMR's psi width d and HMR's regressor),
    else 'hidden_size' where the system has that field (the GRU width), else None."""
    system = _system(name)
    if hasattr(system, "VARIANT_WIDTH_FIELD"):
        return system.VARIANT_WIDTH_FIELD
    return "hidden_size" if "hidden_size" in system.default_config() else None


def extra_losses(
    config: ml_collections.ConfigDict, outputs: dict, batch: dict, axis_name: str | None = None
) -> dict[str, jnp.ndarray]:
    """The system's own loss terms, beside losses.compute_losses' shared ones.

    A system module MAY define `extra_losses(config, outputs, batch, axis_name)` with this
    signature (HKMR's L_KL to its pose prior; DSD-SATN's extra losses). Its terms are already
    weighted (the system reads its weights from its own model fields): the training objective
    adds them to the total as they are, and training logs each as `loss_<name>`. Masked means
    under pmap take the global count (losses.masked_mean with `axis_name`), as the shared
    terms do.

    Args:
      config: the whole run config (config.model names the system).
      outputs: the model's output dict (params.smpl_outputs).
      batch: this device's batch (labels, optionally `valid` [B, T]).
      axis_name: the pmap axis when called per device, else None.

    Returns:
      {name: weighted float32 scalar}; {} for a system without extra terms.
    """
    terms_fn = getattr(_system(config.model.get("name", "")), "extra_losses", None)
    if terms_fn is None:
        return {}
    terms = terms_fn(config, outputs, batch, axis_name)
    return {name: jnp.asarray(value, jnp.float32) for name, value in terms.items()}


def initial_params(config: ml_collections.ConfigDict, params, read_run):
    """The parameters a new run starts from: `params` (from the seed), with the parts that the
    system takes from other runs (SATN's params['dsd'] from a trained DSD, model.dsd_run).

    A system module MAY define `initial_params(config, params, read_run) -> params` with this
    signature; train.init_state calls it for a run that starts from step 0, never for a resumed
    one (which restores its own checkpoint). `read_run(workdir)` -> (the model config saved
    with that run's latest checkpoint, its params) is checkpoints.read_run, passed in so that
    models do not import the checkpoint code (which imports them).

    Args:
      config: the whole run config (config.model names the system).
      params: the parameters initialised from the seed.
      read_run: workdir -> (saved model config, params); raises TrainingError for a workdir
        without a readable checkpoint.

    Returns:
      The parameters, of the same tree and shapes as `params` (the system checks it).

    Raises:
      ValueError: one sentence naming the field whose run cannot be used.
    """
    params_fn = getattr(_system(config.model.get("name", "")), "initial_params", None)
    return params if params_fn is None else params_fn(config, params, read_run)


def learning_rate_scales(config: ml_collections.ConfigDict) -> dict[str, float]:
    """{top-level parameter name: factor of optim.lr} of the system (PC-HMR: the base and the
    lifter at 1/100 of the calibration's rate); {} (every group at optim.lr) for a system
    without the hook. optim.make_optimizer applies them to the updates.

    A system module MAY define `learning_rate_scales(config) -> dict[str, float]`.
    """
    scales_fn = getattr(_system(config.model.get("name", "")), "learning_rate_scales", None)
    return {} if scales_fn is None else dict(scales_fn(config))


def renamed_fields(name: str) -> dict[str, str]:
    """Old field name -> new one of the system `name` (its module's RENAMED_FIELDS)."""
    return dict(getattr(_system(name), "RENAMED_FIELDS", {}))


def unknown_field_message(name: str, field: str) -> str:
    """The sentence for a field `field` that the system `name` does not have (its fields, or
    the field's new name when it was renamed)."""
    return common.unknown_field_message(
        name, field, default_model_config(name), renamed_fields(name)
    )


def default_model_config(name: str = "lmr") -> ml_collections.ConfigDict:
    """The model fields of the system `name` ('lmr', 'vibe', 'hmr', ...) with their defaults.

    The fields are the system's (see its module's docstring, e.g. models.lmr), starting with
    the ones every system shares (models.common).

    Raises:
      ValueError: an unknown name.
    """
    if name not in SYSTEMS:
        raise ValueError(f"unknown model '{name}', expected one of {tuple(SYSTEMS)}.")
    return SYSTEMS[name].default_config()


def complete_model_config(config) -> ml_collections.ConfigDict:
    """`config` (a ConfigDict or dict) with the fields it lacks at their system's defaults
    (a model config saved before a field existed); the name must be a system's."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    defaults = _system(values.get("name", "")).default_config()
    return ml_collections.ConfigDict({**defaults.to_dict(), **values})


def check_model_config(config) -> None:
    """Raises ValueError with one clear sentence for a bad model config: an unknown name, a
    field the system does not have (another system's, a renamed one), or a bad value."""
    system = _system(config.get("name", ""))
    if config.get(BACKBONE) is not None:
        from lmr_jax.models import pixels

        pixels.check_backbone(config[BACKBONE])
        config = ml_collections.ConfigDict({k: v for k, v in config.items() if k != BACKBONE})
    common.check_fields(config, system.default_config(), renamed_fields(config["name"]))
    system.check_config(complete_model_config(config))


def saved_model_config(saved: dict) -> dict:
    """A model config as saved with a checkpoint, in its system's fields.

    Configs saved before the registry hold the fields of every system in one flat dict; the
    fields of other systems were never used by this system's module (whatever their values),
    so they are dropped. Renamed fields (the system's RENAMED_FIELDS) take their new names.
    Fields the saved config lacks are not filled here (see `complete_model_config`). A config
    of an unknown system is returned as it is (building it fails, naming the model).
    """
    name = saved.get("name") if isinstance(saved, dict) else None
    if name not in SYSTEMS:
        return saved
    renamed = renamed_fields(name)
    fields = SYSTEMS[name].default_config()
    out = {}
    for field, value in saved.items():
        field = renamed.get(field, field)
        if field in fields or field == BACKBONE:
            out[field] = value
    return out


def build_model(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel):
    """Builds the model that `config` describes.

    Args:
      config: a model config (the fields of `default_model_config(config.name)`; missing
        fields take their defaults).
      body_model: the SMPL model, kept as constants of the module (not parameters).

    Returns:
      A flax.linen.Module (LMR, VIBE, HMR, ...: the system's `build`).

    Raises:
      ValueError: naming the bad field, the unreadable mean-parameter file or the bad part table.
    """
    if config.get("backbone") is not None:  # images in: a ResNet per frame, then this model
        from lmr_jax.models import pixels

        return pixels.wrap(config, body_model, build_model)
    check_model_config(config)
    system = _system(config["name"])
    if getattr(system, "BUILDS_BASE_MODEL", False):
        return system.build(complete_model_config(config), body_model, build_saved_model)
    return system.build(complete_model_config(config), body_model)


def build_saved_model(saved: dict, body_model: smpl_lib.SMPLModel):
    """The model of a model config as saved with a checkpoint (`saved_model_config`: old flat
    configs too; missing fields at their defaults)."""
    return build_model(ml_collections.ConfigDict(saved_model_config(dict(saved))), body_model)


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
    full = ml_collections.ConfigDict(config.to_dict())
    full.update(single_rnn=False, no_root_dependency=False, single_rnn_hidden_size=0)
    target = model_param_count(full, feature_dim)

    def count(width: int) -> int:
        single = ml_collections.ConfigDict(full.to_dict())
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
    "SYSTEMS",
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
    "check_model_config",
    "complete_model_config",
    "count_params",
    "default_model_config",
    "extra_losses",
    "gru_scan",
    "initial_params",
    "load_mean_params",
    "matched_single_rnn_width",
    "model_param_count",
    "renamed_fields",
    "saved_model_config",
    "unknown_field_message",
    "variant_width_field",
    "smpl_outputs",
]

"""What every system's config shares: the shared fields, the recurrent fields, the checks.

A system (lmr_jax/models/<system>.py) owns its config: its `default_config()` starts from
`shared_config(name)` and adds its own fields (`add_recurrent_fields` for a system with GRUs
over time), its `check_config(config)` starts with `check_shared(config, default_config())`,
and its `build(config, body_model)` passes `shared_kwargs` (and `recurrent_kwargs`) to its
module. The split:

- shared (every system): name, num_iterations (refinement iterations), dtype ('float32' |
  'bfloat16' matmuls), mean_params (path of VIBE's smpl_mean_params.npz, '' for the built-in
  start, see models.params), joint_layout (of the joints3d / kp2d outputs), head_init
  ('small' | 'zeros', see layers.head_init);
- recurrent (systems with GRUs over time: LMR, VIBE): hidden_size, gru_layers, bidirectional,
  dropout, scan_unroll (time steps per scan loop iteration, a speed knob).

A field that is not one of the system's (another system's field, a typo, a renamed field) is
refused with one sentence naming the field, the system and its fields (`check_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax.numpy as jnp
import ml_collections

from lmr_jax import smpl as smpl_lib
from lmr_jax.models.params import load_mean_params

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
HEAD_INITS = ("small", "zeros")
SHARED_FIELDS = ("name", "num_iterations", "dtype", "mean_params", "joint_layout", "head_init")
RECURRENT_FIELDS = ("hidden_size", "gru_layers", "bidirectional", "dropout", "scan_unroll")


def shared_config(name: str) -> ml_collections.ConfigDict:
    """The fields every system has, with their defaults (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = name
    config.num_iterations = 3
    config.dtype = "float32"
    config.mean_params = ""
    config.joint_layout = "vibe49"
    config.head_init = "small"
    return config


def add_recurrent_fields(
    config: ml_collections.ConfigDict, hidden_size: int, gru_layers: int
) -> ml_collections.ConfigDict:
    """Adds the GRU fields (hidden_size, gru_layers, bidirectional, dropout, scan_unroll)."""
    config.hidden_size = hidden_size
    config.gru_layers = gru_layers
    config.bidirectional = False
    config.dropout = 0.0
    config.scan_unroll = 1
    return config


def check_fields(
    config: Mapping, defaults: Mapping, renamed: Mapping[str, str] | None = None
) -> None:
    """Raises ValueError naming the first field of `config` the system (`defaults`) lacks.

    Args:
      config: a model config.
      defaults: the system's default_config() (its fields).
      renamed: old field name -> new one, for fields the system has renamed.
    """
    for field in config:
        if field in defaults:
            continue
        raise ValueError(unknown_field_message(defaults["name"], field, list(defaults), renamed))


def unknown_field_message(
    system: str, field: str, fields: Iterable[str], renamed: Mapping[str, str] | None = None
) -> str:
    """The sentence for a field `field` that the `system` model does not have."""
    new = (renamed or {}).get(field)
    if new:
        return (f"model.{field} of the '{system}' model was renamed to model.{new}; set "
                f"model.{new} instead.")  # fmt: skip
    return (f"model.{field} is not a field of the '{system}' model; its fields: "
            f"{', '.join(sorted(fields))}.")  # fmt: skip


def check_choice(config: Mapping, field: str, allowed: tuple) -> None:
    if config[field] not in allowed:
        raise ValueError(f"model.{field} is '{config[field]}', expected one of {allowed}.")


def check_positive(config: Mapping, fields: Iterable[str]) -> None:
    for field in fields:
        if int(config[field]) < 1:
            raise ValueError(f"model.{field} is {config[field]}, expected a positive integer.")


def check_rate(config: Mapping, fields: Iterable[str]) -> None:
    for field in fields:
        if not 0.0 <= float(config[field]) < 1.0:
            raise ValueError(f"model.{field} is {config[field]}, expected a rate in [0, 1).")


def check_shared(
    config: Mapping, defaults: Mapping, renamed: Mapping[str, str] | None = None
) -> None:
    """The checks every system's check_config starts with: no field the system lacks, the
    shared fields' values, and the recurrent fields' where the system has them."""
    check_fields(config, defaults, renamed)
    check_choice(config, "dtype", tuple(DTYPES))
    check_choice(config, "head_init", HEAD_INITS)
    check_positive(config, ["num_iterations"])
    check_positive(
        config, [f for f in ("hidden_size", "gru_layers", "scan_unroll") if f in defaults]
    )
    if "dropout" in defaults:
        check_rate(config, ["dropout"])
    smpl_lib.get_layout(config["joint_layout"])


def shared_kwargs(config: Mapping, body_model: smpl_lib.SMPLModel) -> dict:
    """The module attributes of the shared fields (and the body models and mean parameters).

    Raises:
      ValueError: the mean-parameter file does not read.
    """
    return dict(
        body_model=body_model,
        joint_body_model=smpl_lib.joint_model(body_model, config["joint_layout"]),
        mean_params=load_mean_params(config["mean_params"]),
        num_iterations=int(config["num_iterations"]),
        head_init=config["head_init"],
        joint_layout=config["joint_layout"],
        dtype=DTYPES[config["dtype"]],
    )


def recurrent_kwargs(config: Mapping) -> dict:
    """The module attributes of the recurrent fields."""
    return dict(
        hidden_size=int(config["hidden_size"]),
        gru_layers=int(config["gru_layers"]),
        bidirectional=bool(config["bidirectional"]),
        dropout=float(config["dropout"]),
        scan_unroll=int(config["scan_unroll"]),
    )

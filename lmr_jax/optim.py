"""The optimizer: Adam/AdamW (or plain SGD) with gradient clipping, warmup + constant / cosine
learning rate, the 'plateau' schedule, and per-group learning rates.

Per-group learning rates (`group_scaling`): a system may give a factor of optim.lr to each
top-level parameter group (models.learning_rate_scales: PC-HMR's base and lifter at 1/100 of
its calibration's rate). The factors multiply the optimizer's updates, after Adam's
normalisation (so a group's effective Adam step is factor x lr) and before the plateau scale;
they are constants, so the optimizer state gains one stateless entry and nothing is saved.

The 'plateau' schedule (VIBE's torch ReduceLROnPlateau) keeps its state, the learning-rate
scale, the best validation value and the count of validations without improvement, as the last
element of the optimizer state (`PlateauState`): the train step only multiplies the updates by
the scale, the host updates the state after each validation (`plateau_update`), and the state
is saved and restored with the rest of the train state, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup, then constant or cosine decay to zero at `num_steps`.

    For the 'plateau' schedule this is the constant part; the drops are `PlateauState.scale`.
    """
    if optim.schedule == "cosine":
        decay = optax.cosine_decay_schedule(optim.lr, max(num_steps - optim.warmup_steps, 1))
    else:
        decay = optax.constant_schedule(optim.lr)
    if optim.warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, optim.lr, optim.warmup_steps)
    return optax.join_schedules([warmup, decay], [optim.warmup_steps])


class PlateauState(NamedTuple):
    """The state of the 'plateau' schedule (the last element of the optimizer state).

    Attributes:
      scale: [] float32, the learning rate's factor (1, then times `plateau_factor` per drop).
      best: [] float32, the best validation value so far (inf before the first).
      num_bad: [] int32, validations since the last improvement (or since the last drop).
    """

    scale: jnp.ndarray
    best: jnp.ndarray
    num_bad: jnp.ndarray


def plateau_scaling() -> optax.GradientTransformation:
    """Multiplies the updates by `PlateauState.scale`; the state changes on the host only."""

    def init(params) -> PlateauState:
        del params
        one, inf = jnp.ones([], jnp.float32), jnp.full([], jnp.inf, jnp.float32)
        return PlateauState(scale=one, best=inf, num_bad=jnp.zeros([], jnp.int32))

    def update(updates, state: PlateauState, params=None):
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


# torch's ReduceLROnPlateau ignores a drop that changes the learning rate by less than this.
_PLATEAU_EPS = 1e-8


def plateau_update(
    state: PlateauState, value: float, optim: ml_collections.ConfigDict
) -> PlateauState:
    """The plateau state after a validation that measured `value` (lower is better).

    torch.optim.lr_scheduler.ReduceLROnPlateau(mode='min', threshold_mode='rel', cooldown=0):
    `value` improves when it is below best x (1 - threshold) (a NaN never does); after more than
    `plateau_patience` validations in a row without improvement the scale is multiplied by
    `plateau_factor` and the count restarts.

    Args:
      state: the current state (arrays or numbers).
      value: the validation metric.
      optim: the optim config (plateau_factor, plateau_patience, plateau_threshold, lr).

    Returns:
      The new state as numpy scalars (float32, float32, int32).
    """
    scale, best, num_bad = float(state.scale), float(state.best), int(state.num_bad)
    if value < best * (1.0 - optim.plateau_threshold):
        best, num_bad = float(np.float32(value)), 0
    else:
        num_bad += 1
    if num_bad > optim.plateau_patience:
        dropped = scale * optim.plateau_factor
        if optim.lr * (scale - dropped) > _PLATEAU_EPS:
            scale = dropped
        num_bad = 0
    return PlateauState(np.float32(scale), np.float32(best), np.int32(num_bad))


def plateau_state(opt_state: Any) -> PlateauState | None:
    """The PlateauState of an optimizer state from `make_optimizer` (None without 'plateau')."""
    if isinstance(opt_state, tuple) and opt_state and isinstance(opt_state[-1], PlateauState):
        return opt_state[-1]
    return None


def _scaled(tree, factor: float):
    return jax.tree.map(lambda u: u * jnp.asarray(factor, u.dtype), tree)


def group_scaling(scales: dict[str, float]) -> optax.GradientTransformation:
    """Multiplies the updates of each top-level parameter group `k` by `scales[k]` (1 for a
    group not named); the updates must be a dict (a model's params)."""

    def scale(updates, params=None):
        del params
        unknown = sorted(set(scales) - set(updates))
        if unknown:
            groups = sorted(updates)
            raise ValueError(f"learning-rate scale for parameter group '{unknown[0]}', which "
                             f"the model does not have; expected groups of {groups}.")  # fmt: skip
        return {k: _scaled(v, scales.get(k, 1.0)) for k, v in updates.items()}

    return optax.stateless(scale)


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(
    optim: ml_collections.ConfigDict, num_steps: int, lr_scales: dict[str, float] | None = None
) -> optax.GradientTransformation:
    """Adam (AdamW when weight decay is set) or SGD (`optim.optimizer`), with gradient clipping
    by global norm, the per-group factors `lr_scales` ({top-level parameter name: factor},
    `group_scaling`; None or {}: none), and the plateau scaling last when `optim.schedule` is
    'plateau'.

    Plain SGD's update is -lr x gradient: the tests compare gradients through it (Adam's scale
    invariance would hide a gradient-scale bug).

    Raises:
      ValueError: `optim.optimizer` is none of OPTIMIZERS.
    """
    name = optim.get("optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"config field optim.optimizer is {name!r}, expected one of {OPTIMIZERS}.")
    schedule = learning_rate_schedule(optim, num_steps)
    parts = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
    if name == "sgd":
        if optim.weight_decay > 0:
            parts.append(optax.add_decayed_weights(optim.weight_decay))
        parts.append(optax.sgd(schedule))
    elif optim.weight_decay > 0:
        parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay))
    else:
        parts.append(optax.adam(schedule))
    if lr_scales:
        parts.append(group_scaling(dict(lr_scales)))
    if optim.schedule == "plateau":
        parts.append(plateau_scaling())
    return optax.chain(*parts)

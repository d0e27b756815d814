"""The train state: what changes during training, below both train.py (the step and the loop)
and checkpoints.py (saving and restoring it), so that neither imports the other for it."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; no RNG (it is derived from the step)."""

    step: jnp.ndarray
    params: Any
    opt_state: Any

"""Running a model for inference: the jitted apply and the window runner, below train.py,
evaluate.py and predict.py, which all use them (train and evaluate re-export them under their
old names, `train.make_apply_fn` and `evaluate.run_windows`)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import jit_cache

EVAL_OUTPUTS = ("joints3d", "vertices", "pose", "betas", "cam", "kp2d")


def make_apply_fn(model, keys: tuple[str, ...] = EVAL_OUTPUTS) -> Callable:
    """Jitted inference: (params, features [W, T, D]) -> the model outputs named by `keys`
    (by default those evaluation needs; prediction asks for the parameters only).

    The same model object gets the same function (jit_cache), so validations after the first
    reuse its compiled programs.
    """

    def make():
        @jax.jit
        def apply(params, features):
            out = model.apply({"params": params}, features, train=False)
            return {k: out[k] for k in keys}

        return apply

    return jit_cache.per_object("apply:" + ",".join(keys), model, make)


def run_windows(apply_fn: Callable, windows: np.ndarray, batch_size: int = 64) -> dict:
    """`apply_fn` over windows [W, T, D], `batch_size` windows per call; returns [W, T, ...].

    Each call's batch is padded to a power of two (at most `batch_size`), so a few compiled
    shapes serve videos of every length.
    """
    chunks = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        count = len(chunk)
        size = min(batch_size, 1 << max(count - 1, 0).bit_length())
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, 0)])
        out = jax.device_get(apply_fn(jnp.asarray(chunk)))
        chunks.append({k: v[:count] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

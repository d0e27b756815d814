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
    """Jitted inference: (params, features [W, T, D], **inputs) -> the model outputs named by
    `keys` (by default those evaluation needs; prediction asks for the parameters only).
    `inputs`: the video fields [W, T, ...] a model reads besides its features (its
    `evaluation_inputs`, e.g. PC-HMR's kp2d with the parallel target), as keyword arguments.

    The same model object gets the same function (jit_cache), so validations after the first
    reuse its compiled programs.
    """

    def make():
        @jax.jit
        def apply(params, features, **inputs):
            out = model.apply({"params": params}, features, train=False, **inputs)
            return {k: out[k] for k in keys}

        return apply

    return jit_cache.per_object("apply:" + ",".join(keys), model, make)


def run_windows(apply_fn: Callable, windows: np.ndarray, batch_size: int = 64,
                inputs: dict[str, np.ndarray] | None = None) -> dict:  # fmt: skip
    """`apply_fn` over windows [W, T, D], `batch_size` windows per call; returns [W, T, ...].
    `inputs`: {name: [W, T, ...]} more fields, cut like the windows and passed to `apply_fn`
    as keyword arguments (make_apply_fn).

    Each call's batch is padded to a power of two (at most `batch_size`), so a few compiled
    shapes serve videos of every length.
    """
    chunks = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        count = len(chunk)
        size = min(batch_size, 1 << max(count - 1, 0).bit_length())
        pad = lambda x, c=count, n=size: np.concatenate([x, np.repeat(x[-1:], n - c, 0)])
        extra = {k: jnp.asarray(pad(np.asarray(v)[i : i + batch_size]))
                 for k, v in (inputs or {}).items()}  # fmt: skip
        out = jax.device_get(apply_fn(jnp.asarray(pad(chunk)), **extra))
        chunks.append({k: v[:count] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

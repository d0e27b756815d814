"""Small model configs, inputs and fast PRNG keys shared by the model and loss tests."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import smpl
from lmr_jax.models import build_model, default_model_config

B, T, D, H = 2, 8, 16, 32
# The per-frame outputs every model returns, with their shapes at test size.
OUTPUT_SHAPES = {
    "rotmats": (B, T, 24, 3, 3),
    "pose": (B, T, 72),
    "betas": (B, T, 10),
    "cam": (B, T, 3),
    "vertices": (B, T, 6890, 3),
    "joints3d": (B, T, 49, 3),
    "kp2d": (B, T, 49, 2),
}
_NAMES = []


def key(seed: int = 0):
    """A PRNG key; 'rbg' compiles much faster than threefry on CPU, which keeps tests quick."""
    return jax.random.key(seed, impl="rbg")


def normal(seed: int, shape, scale: float = 1.0) -> jnp.ndarray:
    """Deterministic float32 normal samples from numpy (no PRNG compilation)."""
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


@functools.lru_cache(maxsize=1)
def body_model():
    return smpl.procedural(0)


def small_config(name: str = "lmr", **overrides):
    """A model config at test size (hidden 32: the GRUs' and the regressor's, where the
    model has them)."""
    config = default_model_config(name)
    for field in ("hidden_size", "regressor_hidden"):
        if field in config:
            config[field] = H
    config.update(overrides)
    return config


@functools.lru_cache(maxsize=16)
def built(name: str, overrides: tuple = ()):
    """A small model, built once per session: (model, params, eval outputs, apply).

    `apply(params, features)` is the jitted eval forward; it may trace only once
    (chex.assert_max_traces), so every call must use the test shapes. `init` is jitted on its
    own: the body model is dead code there and XLA drops it, which keeps compilation short.
    """
    model = build_model(small_config(name, **dict(overrides)), body_model())
    params = jax.jit(model.init)(key(0), features())["params"]

    def forward(p, x):
        return model.apply({"params": p}, x)

    # chex identifies a function by its source and name: one name per model.
    forward.__name__ = f"forward_{name}_{len(_NAMES)}"
    _NAMES.append(forward.__name__)
    apply = jax.jit(chex.assert_max_traces(forward, n=1))
    return model, params, apply(params, features()), apply


def features(seed: int = 0) -> jnp.ndarray:
    return normal(seed, (B, T, D))


def output_shapes(name: str, overrides: tuple = ()):
    """(param shapes, output shapes) of a small model by abstract evaluation: no compilation."""
    model = build_model(small_config(name, **dict(overrides)), body_model())
    variables = jax.eval_shape(model.init, key(0), features())
    return variables["params"], jax.eval_shape(model.apply, variables, features())

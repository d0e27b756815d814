"""RNG streams of a training run and per-example dropout.

Every stream is a child of the run's base key (PRNGKey(seed)) by its own number, so the key of
one stream never derives from another's: no init key is an ancestor of a step's dropout key.
Dropout keys are per example, from the step and the example's index in the GLOBAL batch, so a
run drops the same activations whatever the number of processes and devices it is split over.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

INIT_STREAM = 0
DROPOUT_STREAM = 1


def init_rng(base_rng: jax.Array) -> jax.Array:
    """The key that initialises the parameters."""
    return jax.random.fold_in(base_rng, INIT_STREAM)


def dropout_rngs(base_rng: jax.Array, step: jax.Array, example_index: jax.Array) -> jax.Array:
    """The dropout keys [B] of the examples at `example_index` [B] of the global batch of `step`.

    An example's key depends on the step and its place in the global batch only, not on the
    process or device that holds it, so dropout is the same whatever the device count.
    """
    step_rng = jax.random.fold_in(jax.random.fold_in(base_rng, DROPOUT_STREAM), step)
    return jax.vmap(lambda i: jax.random.fold_in(step_rng, i))(example_index)


@functools.lru_cache
def example_index(
    num_devices: int, per_device: int, process_index: int = 0, process_count: int = 1
) -> np.ndarray:
    """[num_devices, per_device] int32: each local example's index in the global batch.

    The pipeline's layout (lmr_jax/data/pipeline.py): process p of P takes global elements
    p, p + P, ... and device d holds the contiguous slice d of the process's batch.
    """
    local = np.arange(num_devices * per_device).reshape(num_devices, per_device)
    return (process_index + process_count * local).astype(np.int32)


def uses_dropout(model) -> bool:
    """Whether the model drops activations in training (LMR's `dropout`, the HMR regressor's)."""
    return any(getattr(model, field, 0.0) > 0 for field in ("dropout", "regressor_dropout"))


def apply_for_training(
    model, params, features: jnp.ndarray, dropout_keys: jnp.ndarray | None, inputs=None
):
    """The model's training outputs for features [B, T, D].

    With `dropout_keys` [B] each example runs alone (vmapped) with its own key, so its dropout
    masks do not depend on the examples it is batched with; without, one batched apply.
    `inputs`: batch fields [B, ...] passed to the model as keyword arguments (the module's
    `training_inputs`, e.g. DSD's kp2d labels), split per example like the features.
    """
    variables = {"params": params}
    inputs = {} if inputs is None else dict(inputs)
    if dropout_keys is None:
        return model.apply(variables, features, train=True, **inputs)

    def one(x, key, extra):
        extra = jax.tree.map(lambda v: v[None], extra)
        return model.apply(variables, x[None], train=True, rngs={"dropout": key}, **extra)

    batched = jax.eval_shape(
        lambda x, extra: model.apply(variables, x, train=True, rngs={"dropout": dropout_keys[0]},
                                     **extra),
        features, inputs,
    )  # fmt: skip
    return jax.tree.map(_merge_examples, jax.vmap(one)(features, dropout_keys, inputs), batched)


def _merge_examples(leaf: jnp.ndarray, batched: jax.ShapeDtypeStruct) -> jnp.ndarray:
    """Vmapped outputs [B, *shape with batch 1] as the batched apply returns them (the batch
    axis is not always the first: per-iteration outputs are [V, B, ...])."""
    inner = leaf.shape[1:]
    axes = [a for a, (n, m) in enumerate(zip(inner, batched.shape, strict=True)) if n != m]
    if not axes:  # per-device batch of 1
        return leaf.reshape(batched.shape)
    return jnp.moveaxis(leaf, 0, axes[0]).reshape(batched.shape)

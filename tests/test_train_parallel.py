"""Data parallelism in one process: the global batch split over 1 or 8 devices gives the same
step (loss, gradients and dropout), and each example's global index follows the pipeline."""

import functools
from types import SimpleNamespace

import chex
import jax
import numpy as np
import pytest

from lmr_jax import losses, train
from lmr_jax.data import pipeline
from tests.runs import sgd_gradient, step_parts, step_test_config

BASE_RNG = jax.random.PRNGKey(3)


def _windows(data_dir, name, count, window):
    spec = pipeline.DatasetSpec(name=name, data_dir=data_dir, stride=4)
    data = pipeline.train_dataset(
        [spec], window=window, global_batch_size=count, num_local_devices=1, seed=0
    )
    return jax.tree.map(lambda x: x[0], next(iter(data)))


def uneven_batch(data_dir, window):
    """8 windows, 5 without 3D or SMPL labels (synthetic_motion/tiny_2d), then 3 with them: on 8
    devices five devices hold no 3D label, on 2 devices one holds 2D windows only."""
    two_d = _windows(data_dir, "synthetic_motion/tiny_2d", 5, window)
    three_d = _windows(data_dir, "synthetic_motion/tiny", 3, window)
    assert not two_d["has_kp3d"].any() and not np.abs(two_d["kp3d"]).any()
    assert three_d["has_kp3d"].all() and three_d["has_smpl"].all()
    return {k: np.concatenate([two_d[k], three_d[k]]) for k in two_d}


def _scale_heads(path, leaf):
    return leaf * 100.0 if "head" in jax.tree_util.keystr(path) else leaf


@pytest.fixture(scope="module")
def split_steps(tiny_data_dir):
    """Two SGD steps with dropout on the uneven batch, split over 1 and over 8 devices: step 0
    (lr 0 in the warmup) and step 1 (lr 0.1), whose parameter change gives the gradient."""
    config = step_test_config(tiny_data_dir)
    model, body_model, optimizer, schedule, state = step_parts(config)
    assert train.uses_dropout(model)
    # Heads at gain 1, not HMR's 0.01: the outputs then depend on the hidden layers that dropout
    # acts on, so that other dropout masks give another loss.
    state = state.replace(params=jax.tree_util.tree_map_with_path(_scale_heads, state.params))
    batch = uneven_batch(tiny_data_dir, config.data.window)
    step = train.make_pmapped_step(config, model, body_model, optimizer, schedule, donate=False)
    results = {}
    for devices in (1, 8):
        split = jax.tree.map(lambda x, d=devices: x.reshape(d, 8 // d, *x.shape[1:]), batch)
        state_1, metrics_0 = step(state, split, BASE_RNG)
        params_1 = jax.device_get(state_1.params)
        state_2, metrics_1 = step(state_1, split, BASE_RNG)
        lr = float(schedule(1))
        np.testing.assert_allclose(np.asarray(metrics_1["lr"]), lr)
        results[devices] = SimpleNamespace(
            losses=[float(np.mean(m["loss"])) for m in (metrics_0, metrics_1)],
            params_1=params_1,
            grads=sgd_gradient(params_1, state_2.params, lr),
        )
    return config, model, body_model, batch, results


def test_1_and_8_devices_give_the_same_loss_and_gradients(split_steps):
    *_, results = split_steps
    one, eight = results[1], results[8]
    assert np.isfinite(one.losses).all()
    np.testing.assert_allclose(eight.losses, one.losses, rtol=1e-5)
    scale = max(np.abs(g).max() for g in jax.tree.leaves(one.grads))
    assert scale > 1e-3
    # A psum of the gradients would make the 8-device gradient 8x the 1-device one.
    chex.assert_trees_all_close(eight.grads, one.grads, rtol=1e-4, atol=1e-5 * scale)


def _per_example_outputs(model, params, features, keys):
    """The naive form: the model on each example alone with its key, stacked on the batch axis
    (axis 0, and axis 1 of the per-iteration outputs [V, B, ...])."""
    one = jax.jit(
        lambda x, key: model.apply({"params": params}, x[None], train=True, rngs={"dropout": key})
    )
    outs = [one(x, key) for x, key in zip(features, keys, strict=True)]

    def stack(path, *leaves):
        axis = 1 if any(getattr(p, "key", None) == "iterations" for p in path) else 0
        return np.concatenate(leaves, axis=axis)

    return jax.tree_util.tree_map_with_path(stack, *outs)


def test_dropout_keys_follow_the_global_index(split_steps):
    config, model, body_model, batch, results = split_steps
    loss_fn = jax.jit(
        functools.partial(losses.compute_losses, loss_config=config.loss, body_model=body_model)
    )
    params = results[1].params_1
    keys = train.dropout_rngs(BASE_RNG, 1, np.arange(8))
    loss, _ = loss_fn(_per_example_outputs(model, params, batch["features"], keys), batch)
    np.testing.assert_allclose(results[1].losses[1], float(loss), rtol=1e-5)
    # Dropout is really on: other keys give another loss.
    other, _ = loss_fn(_per_example_outputs(model, params, batch["features"], keys[::-1]), batch)
    assert abs(float(other) - float(loss)) > 1e-4 * abs(float(loss))


def test_example_index_follows_the_pipeline_layout(tiny_data_dir):
    spec = pipeline.DatasetSpec(name="synthetic_motion/tiny", data_dir=tiny_data_dir, stride=4)

    def features(devices, process_index, process_count):
        data = pipeline.train_dataset(
            [spec], window=8, global_batch_size=8, num_local_devices=devices, seed=0,
            process_index=process_index, process_count=process_count,
        )  # fmt: skip
        return next(iter(data))["features"]

    whole = features(1, 0, 1)[0]
    assert len({x.tobytes() for x in whole}) == 8  # distinct windows: the check below can fail
    for devices, processes in ((8, 1), (2, 2), (1, 2), (2, 4)):
        seen = []
        for p in range(processes):
            index = train.example_index(devices, 8 // (devices * processes), p, processes)
            np.testing.assert_array_equal(features(devices, p, processes), whole[index])
            seen.extend(index.ravel())
        assert sorted(seen) == list(range(8))

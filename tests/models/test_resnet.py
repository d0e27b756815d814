"""Tests of models.resnet: torchvision's parameter counts and feature sizes, and BatchNorm in
inference, in training with batch statistics (torch's momentum, averaged over pmap devices) and
frozen. The forward's values against a numpy ResNet-18 are in tests/test_torch_weights.py."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, resnet
from tests.models.small_models import key

TINY = dict(stage_sizes=(1, 1), block="basic")  # a stem and two basic blocks: quick to compile


@pytest.mark.parametrize(
    "model,features,count",
    # torchvision's resnet{18,34,50}() parameters minus fc's (513,000 / 513,000 / 2,049,000)
    [(ResNet50(), 2048, 23_508_032), (ResNet18(), 512, 11_176_512), (ResNet34(), 512, 21_284_672)],
)
def test_torchvision_parameter_counts_and_feature_sizes(model, features, count):
    images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    out, variables = jax.eval_shape(model.init_with_output, key(0), images)
    assert out.shape == (2, features) and out.dtype == jnp.float32
    assert model.num_features == features
    assert sorted(variables) == ["batch_stats", "params"]
    assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"])) == count
    assert type(resnet({2048: 50, 512: 18 if count < 2e7 else 34}[features])) is type(model)


def _images(seed=0, n=4):
    return np.random.default_rng(seed).normal(size=(n, 16, 16, 3)).astype(np.float32)


@functools.cache
def _variables():
    """Tiny-ResNet variables with non-trivial running statistics."""
    variables = jax.jit(ResNet(**TINY).init)(key(0), _images())
    rng = np.random.default_rng(1)
    stats = jax.tree.map(
        lambda leaf: rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32), variables["batch_stats"]
    )
    stats = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf - 1.0 if path[-1].key == "mean" else leaf, stats
    )
    return {"params": variables["params"], "batch_stats": stats}


@functools.cache
def _apply(bn_mode="batch", train=False):
    model = ResNet(**TINY, bn_mode=bn_mode)
    return jax.jit(functools.partial(model.apply, train=train, mutable=["batch_stats"]))


def test_inference_is_deterministic_and_keeps_running_statistics():
    variables, images = _variables(), _images()
    first, updates = _apply()(variables, images)
    second, _ = _apply()(variables, images)
    np.testing.assert_array_equal(first, second)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
    plain = ResNet(**TINY).apply(variables, images)  # no train=: inference
    np.testing.assert_allclose(plain, first, rtol=1e-6, atol=1e-6)
    # Per-image inference: a frame's features do not depend on the rest of the batch.
    np.testing.assert_allclose(_apply()(variables, images[:1])[0], first[:1], atol=1e-5)


def test_batch_mode_uses_batch_statistics_and_torch_momentum():
    variables, images = _variables(), _images()
    model = ResNet(**TINY, bn_mode="batch")
    stem = lambda module, _: isinstance(module, nn.Conv) and module.name == "conv1"
    out, updates = jax.jit(
        functools.partial(
            model.apply,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=stem,
        )  # fmt: skip
    )(variables, images)
    conv = np.asarray(updates["intermediates"]["conv1"]["__call__"][0], np.float64)
    old = variables["batch_stats"]["bn1"]
    new = updates["batch_stats"]["bn1"]
    # torch: running = (1 - 0.1) * running + 0.1 * batch statistic (biased variance, see module)
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * conv.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * conv.var((0, 1, 2)),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    inference, _ = _apply()(variables, images)
    assert np.abs(np.asarray(out) - np.asarray(inference)).max() > 1e-2
    for path, leaf in jax.tree_util.tree_leaves_with_path(updates["batch_stats"]):
        before = variables["batch_stats"]
        for entry in path:
            before = before[entry.key]
        assert not np.allclose(leaf, before), path


def test_frozen_mode_trains_with_running_statistics_and_never_updates_them():
    variables, images = _variables(), _images()
    out, updates = _apply("frozen", train=True)(variables, images)
    inference, _ = _apply()(variables, images)
    np.testing.assert_array_equal(out, inference)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])


def test_axis_name_averages_batch_statistics_across_devices():
    variables, images = _variables(), _images(n=4)
    single, single_updates = _apply("batch", train=True)(variables, images)
    model = ResNet(**TINY, bn_mode="batch", axis_name="batch")
    step = jax.pmap(
        functools.partial(model.apply, train=True, mutable=["batch_stats"]),
        axis_name="batch",
        in_axes=(None, 0),
    )
    out, updates = step(variables, images.reshape(2, 2, *images.shape[1:]))
    np.testing.assert_allclose(np.asarray(out).reshape(single.shape), single, rtol=1e-4, atol=1e-5)
    for device in range(2):
        jax.tree.map(
            lambda a, b, d=device: np.testing.assert_allclose(a[d], b, rtol=1e-5, atol=1e-6),
            updates["batch_stats"],
            single_updates["batch_stats"],
        )


def test_bfloat16_compute_returns_float32_close_to_float32():
    variables, images = _variables(), _images()
    low = ResNet(**TINY, dtype=jnp.bfloat16).apply(variables, images)
    assert low.dtype == jnp.float32
    high = ResNet(**TINY).apply(variables, images)
    assert np.abs(np.asarray(low) - np.asarray(high)).max() < 0.05 * np.abs(high).max()


def test_bad_configuration_and_inputs_are_one_sentence_errors():
    variables, images = _variables(), _images()
    with pytest.raises(ValueError, match="bn_mode is 'sync', expected one of"):
        ResNet(**TINY, bn_mode="sync").apply(variables, images, train=True)
    with pytest.raises(ValueError, match=r"shape \(4, 16, 16\), expected \[N, H, W, 3\]"):
        ResNet(**TINY).apply(variables, images[..., 0])
    with pytest.raises(ValueError, match="depth is 20"):
        resnet(20)

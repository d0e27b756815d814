"""Tests of parameter counting and the capacity-matched single-RNN ablation."""

import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmr_jax.models import (
    build_model,
    count_params,
    matched_single_rnn_width,
    model_param_count,
)
from tests.models.small_models import OUTPUT_SHAPES, D, H, body_model, built, small_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_DIM = 2048  # VIBE's SPIN features and synthetic_motion's small / standard


def _experiment(name: str, variant: str = ""):
    spec = importlib.util.spec_from_file_location(name, f"{REPO}/experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _single_count(config, width: int, feature_dim: int = D) -> int:
    single = ml_collections.ConfigDict(config.to_dict())
    single.update(single_rnn=True, single_rnn_hidden_size=width)
    return model_param_count(single, feature_dim)


def test_count_params_is_the_sum_of_leaf_sizes():
    tree = {
        "a": jnp.zeros((2, 3)),
        "b": [np.zeros(4), jnp.zeros(())],
        "c": {"d": np.ones((5, 1, 2))},
    }
    assert count_params(tree) == 6 + 4 + 1 + 10
    config = small_config("lmr")
    shapes = jax.eval_shape(
        build_model(config, body_model()).init, jax.random.key(0), jnp.zeros((1, 1, D))
    )["params"]
    naive = 0
    for leaf in jax.tree.leaves(shapes):
        size = 1
        for n in leaf.shape:
            size *= n
        naive += size
    assert count_params(shapes) == naive == model_param_count(config, D)


@pytest.mark.parametrize("overrides", [{}, {"gru_layers": 2, "bidirectional": True}])
def test_matched_width_is_the_closest_to_lmr_count(overrides):
    config = small_config("lmr", **overrides)
    target = model_param_count(config, D)
    width = matched_single_rnn_width(config, D)
    below, at, above = (_single_count(config, w) for w in (width - 1, width, width + 1))
    assert below < at < above  # monotone, so the closest of its neighbours is the closest
    assert abs(at - target) <= min(target - below, above - target)
    # At this size one width step is ~1.2-1.6% of the count: the closest is within half of it.
    assert abs(at - target) / target < 0.01
    assert width > H


def test_single_rnn_at_the_matched_width_runs_with_the_right_shapes():
    width = matched_single_rnn_width(small_config("lmr"), D)
    overrides = (("single_rnn", True), ("single_rnn_hidden_size", width))
    _, params, out, _ = built("lmr", overrides)
    chex.assert_shape(params["pose"]["rnn"]["recurrent_kernel_0"], (1, width, 3 * width))
    chex.assert_shape(params["camera"]["recurrent_kernel_0"], (1, H, 3 * H))  # keeps H
    for field, shape in OUTPUT_SHAPES.items():
        chex.assert_shape(out[field], shape)
    chex.assert_tree_all_finite(out)
    config = small_config("lmr", **dict(overrides))
    assert count_params(params) == model_param_count(config, D)


@pytest.mark.parametrize(
    "name,variant,equal_variant,lmr_name",
    [
        ("ablation_single_rnn", "matched", "", "lmr_synthetic"),
        # cpu sets hidden_size, so the width must be matched after it (to LMR at 256, not 512).
        ("ablation_single_rnn", "cpu_matched", "cpu", "lmr_synthetic"),
        ("ablation_single_rnn_vibe", "matched", "", "lmr_vibe"),
    ],
)
def test_matched_variants_hold_lmr_parameter_count(name, variant, equal_variant, lmr_name):
    config = _experiment(name, variant)
    equal = _experiment(name, equal_variant)
    width = config.model.single_rnn_hidden_size
    assert equal.model.single_rnn_hidden_size == 0  # the equal-width row stays the default
    assert width > config.model.hidden_size
    equal.model.single_rnn_hidden_size = width
    assert equal.to_dict() == config.to_dict()  # the width is the only change
    target = model_param_count(_experiment(lmr_name, equal_variant).model, PAPER_DIM)
    count = model_param_count(config.model, PAPER_DIM)
    step = _single_count(config.model, width + 1, PAPER_DIM) - count
    # The closest width is within half a step (steps grow with the width, so this step is the
    # larger of the two around it).
    assert 2 * abs(count - target) <= step


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"single_rnn_hidden_size": -1}, "expected 0"),
        ({"single_rnn_hidden_size": 64}, "single_rnn=True"),
        (
            {"name": "vibe", "single_rnn": True, "single_rnn_hidden_size": 64},
            "model.camera is not a field of the 'vibe' model",
        ),  # LMR's fields on a VIBE config
    ],
)
def test_bad_single_rnn_widths_are_refused(overrides, message):
    config = small_config("lmr")
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        build_model(config, body_model())


def test_model_config_saved_before_the_width_field_still_builds():
    """Checkpoints saved before single_rnn_hidden_size existed hold a model config without it
    (predict.load_run builds the model from that saved config)."""
    old = small_config("lmr", single_rnn=True).to_dict()
    del old["single_rnn_hidden_size"]
    model = build_model(ml_collections.ConfigDict(old), body_model())
    assert model.single_rnn_hidden_size == 0
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, D)))["params"]
    chex.assert_shape(shapes["pose"]["rnn"]["recurrent_kernel_0"], (1, H, 3 * H))

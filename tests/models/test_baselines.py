"""Tests of the baselines: the VIBE-style model, per-frame HMR and the HMR regressor."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax.models import (
    HMRRegressor,
    MeanParams,
    TemporalEncoder,
    build_model,
    count_params,
    default_model_config,
)
from tests.models.small_models import (
    OUTPUT_SHAPES,
    B,
    D,
    H,
    T,
    body_model,
    features,
    key,
    normal,
    output_shapes,
    small_config,
)


@pytest.mark.parametrize("name", ["vibe", "hmr"])
def test_output_shapes_and_dtypes(name):
    params, out = output_shapes(name)
    shapes = OUTPUT_SHAPES
    for field, shape in shapes.items():
        chex.assert_shape(out[field], shape)
    chex.assert_shape(out["iterations"]["rotmats"], (3, B, T, 24, 3, 3))
    chex.assert_shape(out["iterations"]["betas"], (3, B, T, 10))
    chex.assert_shape(out["iterations"]["cam"], (3, B, T, 3))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((out, params)))


def test_vibe_encoder_is_causal():
    """The body model and the regressor are per frame: causality is the encoder's."""
    x = features()
    changed = x.at[:, 5].add(normal(9, (B, D)))
    encoder = TemporalEncoder(H, num_layers=2)
    params = jax.jit(encoder.init)(key(0), x)
    apply = jax.jit(lambda x: encoder.apply(params, x))
    a, b = apply(x), apply(changed)
    chex.assert_shape(a, (B, T, D))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not np.allclose(a[:, 6:], b[:, 6:], atol=1e-6)  # memory of frame 5


def test_hmr_regressor_is_per_frame():
    x = features()
    changed = x.at[:, 5].add(normal(9, (B, D)))
    module = _regressor(dropout=0.0)
    params = jax.jit(module.init)(key(0), x)["params"]
    apply = jax.jit(lambda x: module.apply({"params": params}, x)[0])
    a, b = apply(x), apply(changed)
    others = [t for t in range(T) if t != 5]
    np.testing.assert_allclose(a[:, :, others], b[:, :, others], atol=1e-6)
    assert not np.allclose(a[:, :, 5], b[:, :, 5], atol=1e-6)


def test_vibe_parameter_count_at_paper_size():
    model = build_model(default_model_config("vibe"), body_model())
    shapes = jax.eval_shape(model.init, key(0), jnp.zeros((1, 2, 2048)))
    count = count_params(shapes)
    gru = 3 * 1024 * (2048 + 1024) + 6 * 1024 + 3 * 1024 * (1024 + 1024) + 6 * 1024
    linear = 1024 * 2048 + 2048
    regressor = (2048 + 157) * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 157 + 157
    assert count == gru + linear + regressor  # VIBE's generator without the discriminator


def test_vibe_encoder_options_follow_vibes_rules():
    """VIBE's TemporalEncoder (lib/models/vibe.py): the linear layer exists when add_linear is
    set or the GRU is bidirectional; the residual is added only with use_residual and an output
    as wide as the input features. (tests/test_vibe_weights.py checks the values against numpy.)"""
    x = features()
    kinds = {  # (attributes, has the linear layer, output width)
        "vibe": ({}, True, D),
        "bidirectional": ({"bidirectional": True, "add_linear": False}, True, D),
        "no_linear": ({"add_linear": False}, False, H),
    }
    for attributes, linear, width in kinds.values():
        encoder = TemporalEncoder(H, num_layers=1, **attributes)
        variables = jax.eval_shape(encoder.init, key(0), x)
        assert ("linear" in variables["params"]) == linear
        chex.assert_shape(jax.eval_shape(encoder.apply, variables, x), (B, T, width))
    # Without the linear layer and with the widths equal, the residual is the only difference.
    with_residual = TemporalEncoder(D, num_layers=1, add_linear=False)
    without = TemporalEncoder(D, num_layers=1, add_linear=False, use_residual=False)
    variables = jax.jit(with_residual.init)(key(0), x)
    difference = with_residual.apply(variables, x) - without.apply(variables, x)
    np.testing.assert_allclose(difference, x, atol=1e-6)
    # The registry: the two fields reach VIBE, and other models refuse them.
    params, _ = output_shapes("vibe", (("add_linear", False), ("hidden_size", D)))
    assert "linear" not in params["encoder"]
    with pytest.raises(ValueError, match="model.use_residual is not a field of the 'lmr' model"):
        build_model(small_config("lmr", use_residual=False), body_model())


def _regressor(**kwargs):
    return HMRRegressor(hidden_size=H, **kwargs)


def test_hmr_regressor_hoisting_matches_one_layer_on_the_concatenation():
    """The feature projection computed once equals fc1 on [features, pose, shape, cam]."""
    x = features()[:, :3]
    module = _regressor(dropout=0.0)
    params = jax.jit(module.init)(key(0), x)["params"]
    pose, shape, cam = jax.jit(module.apply)({"params": params}, x)
    fc1, fc2 = params["fc1"], params["fc2"]
    kernel = jnp.concatenate(
        [fc1["static_projection"]["kernel"], fc1["dynamic_projection"]["kernel"]]
    )
    start = MeanParams().initial(x.shape[:-1])
    state = jnp.concatenate([start[0].reshape(*x.shape[:-1], 144), start[1], start[2]], -1)
    for v in range(3):
        hidden = jnp.concatenate([x, state], -1) @ kernel + fc1["static_projection"]["bias"]
        hidden = hidden @ fc2["kernel"] + fc2["bias"]
        update = [hidden @ params[n]["kernel"] + params[n]["bias"]
                  for n in ("decpose", "deccam", "decshape")]  # fmt: skip
        state = state + jnp.concatenate([update[0], update[2], update[1]], -1)
        np.testing.assert_allclose(pose[v].reshape(*x.shape[:-1], 144), state[..., :144],
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(shape[v], state[..., 144:154], atol=1e-5)
        np.testing.assert_allclose(cam[v], state[..., 154:], atol=1e-5)


def test_hmr_regressor_dropout_only_in_training_and_zero_heads_give_the_mean():
    x = features()[:, :3]
    module = _regressor(dropout=0.5)
    params = jax.jit(module.init)(key(0), x)["params"]
    apply = jax.jit(lambda p, train, rng: module.apply({"params": p}, x, train=train,
                                                       rngs={"dropout": rng}),
                    static_argnums=1)  # fmt: skip
    eval_out = apply(params, False, key(1))
    train_a, train_b = apply(params, True, key(1)), apply(params, True, key(1))
    chex.assert_trees_all_equal(train_a, train_b)
    assert not np.allclose(train_a[0], eval_out[0])
    silent = dict(params, **{n: jax.tree.map(jnp.zeros_like, params[n])
                             for n in ("decpose", "decshape", "deccam")})  # fmt: skip
    pose, shape, cam = apply(silent, True, key(2))
    start = MeanParams().initial(x.shape[:-1])
    np.testing.assert_array_equal(pose, jnp.broadcast_to(start[0], pose.shape))
    np.testing.assert_array_equal(shape, jnp.broadcast_to(start[1], shape.shape))
    np.testing.assert_array_equal(cam, jnp.broadcast_to(start[2], cam.shape))


def test_vibe_network_gradients_with_dropout_are_finite():
    """VIBE without its body model (the LMR test covers the body model's gradients)."""
    x = features()
    encoder, regressor = TemporalEncoder(H, num_layers=2, dropout=0.1), _regressor(dropout=0.5)

    def network(p, rng):
        rngs = {"dropout": rng}
        encoded = encoder.apply({"params": p["encoder"]}, x, train=True, rngs=rngs)
        return regressor.apply({"params": p["regressor"]}, encoded, train=True, rngs=rngs)

    params = jax.jit(lambda k: {
        "encoder": encoder.init(k, x)["params"],
        "regressor": regressor.init(k, x)["params"],
    })(key(0))  # fmt: skip
    loss = lambda p: sum(jnp.sum(jnp.square(out)) for out in network(p, key(2)))  # noqa: E731
    grads = jax.jit(jax.grad(loss))(params)
    chex.assert_tree_all_finite(grads)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert np.abs(grad).max() > 0, jax.tree_util.keystr(path)

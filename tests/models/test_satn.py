"""SATN by value: the un-shuffling and the in-place positional encoding against naive
references, the positional encoding alone cannot sort, every frame a centre frame with repeated
ends against a per-frame loop, the sort loss (min over forward and reversed), the shuffle in
training, the frozen DSD and the output dict."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax.models import satn
from tests.models.small_models import OUTPUT_SHAPES, body_model, features, key, normal

N, W, E = 3, satn.WINDOW, 8
CORE = dict(num_heads=2, head_dim=4, ffn_width=16, tcn_width=8)
PERMUTATIONS = np.stack([np.random.default_rng(i).permutation(W) for i in range(N)])


@pytest.fixture(scope="module")
def core():
    model = satn.SATNCore(**CORE)
    windows = normal(0, (N, W, E))
    params = jax.jit(model.init)(key(0), windows)["params"]

    @jax.jit
    def apply(windows, permutation):
        return model.apply({"params": params}, windows, permutation=permutation,
                           mutable=["intermediates"])  # fmt: skip

    return apply, windows, params


def test_the_tcn_sees_the_attention_outputs_unshuffled(core):
    apply, windows, _ = core
    out, state = apply(windows, jnp.asarray(PERMUTATIONS))
    sown = {k: np.asarray(v[0]) for k, v in state["intermediates"].items()}
    attention, pe = sown["attention_output"], satn.positional_encoding(W, E)
    want_input, want_tcn = np.zeros((N, W, E)), np.zeros((N, W, E))
    for n in range(N):
        for s in range(W):  # slot s holds the frame of original position PERMUTATIONS[n, s]
            want_input[n, s] = windows[n, PERMUTATIONS[n, s]] + pe[s]  # encoding in place
            want_tcn[n, PERMUTATIONS[n, s]] = attention[n, s]
    np.testing.assert_allclose(sown["encoder_input"], want_input, atol=1e-6)
    np.testing.assert_array_equal(sown["tcn_input"], want_tcn)
    np.testing.assert_allclose(out["sort_targets"], 2 * PERMUTATIONS / (W - 1) - 1)


def test_the_positional_encoding_alone_cannot_sort(core):
    apply, windows, _ = core
    identity = jnp.broadcast_to(jnp.arange(W), (N, W))
    zeros = jnp.zeros((N, W, E))  # no frame content: the inputs are the encoding only
    (shuffled, _), (ordered, _) = apply(zeros, jnp.asarray(PERMUTATIONS)), apply(zeros, identity)
    # The sort head's predictions do not depend on the permutation, so no loss on the
    # targets (which do) can go below what one fixed guess gets.
    np.testing.assert_array_equal(shuffled["sort_positions"], ordered["sort_positions"])
    assert not np.array_equal(shuffled["sort_targets"], ordered["sort_targets"])
    # With frame content the predictions do move with the shuffle (the test is not vacuous).
    (content, _), (plain, _) = apply(windows, jnp.asarray(PERMUTATIONS)), apply(windows, identity)
    assert not np.allclose(content["sort_positions"], plain["sort_positions"])


def test_every_frame_is_a_centre_frame_with_repeated_ends(core):
    frames, step = 5, 2
    index = satn.window_index(frames, step)
    for t in range(frames):  # naive: frame t + (k - 4) * step, held at the first / last frame
        for k in range(W):
            assert index[t, k] == min(max(t + (k - W // 2) * step, 0), frames - 1)
    apply, _, _ = core
    sequence = normal(1, (2, frames, E))
    identity = jnp.broadcast_to(jnp.arange(W), (2 * frames, W))
    got, _ = apply(sequence[:, index].reshape(2 * frames, W, E), identity)

    class Stub:  # over_sequence's gather and reshape around the same core
        def __call__(self, windows, **_):
            return apply(windows, identity)[0]

    wrapped = satn.over_sequence(Stub(), sequence, step)
    for b in range(2):
        for t in range(frames):
            window = np.stack([sequence[b, index[t, k]] for k in range(W)])
            np.testing.assert_allclose(wrapped["params"][b, t], got["params"][b * frames + t])
            one, _ = apply(jnp.broadcast_to(window, (2 * frames, W, E)), identity)
            np.testing.assert_allclose(wrapped["params"][b, t], one["params"][0], atol=1e-5)


def test_sort_loss_takes_the_better_of_forward_and_reversed():
    permutation = np.array([[2, 0, 1, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    targets = 2 * permutation / 8 - 1
    reversed_targets = 2 * (8 - permutation) / 8 - 1  # the order read backwards
    predicted = np.stack([targets[0] + 0.1, reversed_targets[1] - 0.3])
    valid = np.array([1.0, 1.0])
    got = satn.sort_loss(jnp.asarray(predicted), jnp.asarray(targets), jnp.asarray(valid))
    forward = ((predicted - targets) ** 2).mean(-1)
    backward = ((predicted - reversed_targets) ** 2).mean(-1)
    np.testing.assert_allclose(got, np.minimum(forward, backward).mean(), rtol=1e-6)
    np.testing.assert_allclose(got, (0.01 + 0.09) / 2, rtol=1e-5)
    masked = satn.sort_loss(jnp.asarray(predicted), jnp.asarray(targets), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(masked, 0.01, rtol=1e-5)


@pytest.fixture(scope="module")
def system():
    config = satn.default_config()
    config.update(skeleton_hidden=8, detail_width=6, bilinear_width=E, **CORE)
    model = satn.build(config, body_model())
    x = features()
    variables = jax.eval_shape(model.init, key(0), x)
    return config, model, variables, x


def test_outputs_match_hmrs_and_params_hold_dsds(system):
    _, model, variables, x = system
    assert set(variables["params"]) == {"dsd", "satn"}
    outputs = jax.eval_shape(model.apply, variables, x)
    extra = {"skeleton2d", "bilinear", "sort_positions", "sort_targets", "iterations"}
    assert set(outputs) == {*OUTPUT_SHAPES, *extra}
    for name, shape in OUTPUT_SHAPES.items():
        assert outputs[name].shape == shape, name
    assert outputs["sort_positions"].shape == (*x.shape[:2], W)


def test_shuffle_in_training_only_and_dsd_frozen_by_default(system, core):
    config, model, variables, x = system
    tiny = x[:1, :3]
    temporal = functools.partial(model.apply, method=satn.SATN.temporal)  # no body model
    # The core's parameters (same widths) and random DSD ones: no init to compile.
    params = {"satn": core[2], "dsd": jax.tree.map(
        lambda v: normal(7, v.shape, 0.3), variables["params"]["dsd"])}  # fmt: skip
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, variables["params"])

    @jax.jit
    def run(params, rng):
        train = temporal({"params": params}, tiny, train=True, rngs={"dropout": rng})
        test = temporal({"params": params}, tiny)
        loss = lambda p: jnp.sum(temporal({"params": p}, tiny)["params"])
        return train["sort_targets"], test["sort_targets"], jax.grad(loss)(params)

    shuffled, ordered, grads = run(params, key(1))
    positions = np.sort(np.asarray(shuffled) * 4 + 4, axis=-1)
    np.testing.assert_allclose(positions, np.broadcast_to(np.arange(W), positions.shape))
    assert not np.allclose(shuffled, ordered)  # a permutation in training ...
    np.testing.assert_allclose(ordered, np.broadcast_to(np.arange(W) / 4 - 1, ordered.shape))
    assert all(not np.any(g) for g in jax.tree.leaves(grads["dsd"]))  # frozen: zero gradient
    assert any(np.any(g) for g in jax.tree.leaves(grads["satn"]))
    terms = satn.extra_losses(config, {"sort_positions": shuffled, "sort_targets": shuffled},
                              {"kp2d": jnp.zeros((1, 3, 49, 3))})  # fmt: skip
    assert set(terms) == {"sort"} and float(terms["sort"]) == 0.0
    config.finetune_dsd = True
    outputs = {"sort_positions": shuffled, "sort_targets": -shuffled,  # reversed: loss 0
               "skeleton2d": jnp.ones((1, 3, 14, 2))}  # fmt: skip
    terms = satn.extra_losses(config, outputs, {"kp2d": jnp.zeros((1, 3, 49, 3))})
    assert set(terms) == {"sort", "skeleton2d"} and float(terms["sort"]) == 0.0

"""Tests of the GRU: the cell equations, directions, layers, stacking, the custom VJP, dtypes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax.models.recurrent import GRU, _gru_steps, gru_scan
from tests.models.small_models import key, normal

B, T, DS, DD, H = 2, 6, 5, 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_layer(gates, kernel, bias):
    """PyTorch's GRU recurrence in numpy: gates [B, T, 3H], kernel [H, 3H], bias [3H]."""
    h = np.zeros((gates.shape[0], kernel.shape[0]))
    outputs = []
    for t in range(gates.shape[1]):
        x_r, x_z, x_n = np.split(gates[:, t], 3, axis=-1)
        h_r, h_z, h_n = np.split(h @ kernel + bias, 3, axis=-1)
        r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, axis=1)


def reference_gru(params, static, dynamic, num_layers, bidirectional):
    """A whole (unstacked) GRU in numpy from the module's parameters."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    gates = static @ p["static_projection"]["kernel"] + p["static_projection"]["bias"]
    if dynamic is not None:
        gates = gates + dynamic @ p["dynamic_projection"]["kernel"]
    dirs = 2 if bidirectional else 1
    outputs = None
    for layer in range(num_layers):
        if layer > 0:
            proj = p[f"layer_projections_{layer - 1}"]
            gates = outputs @ proj["kernel"] + proj["bias"]
        kernel, bias = p[f"recurrent_kernel_{layer}"], p[f"recurrent_bias_{layer}"]
        per_dir = np.split(gates, dirs, axis=-1)
        outputs = [reference_layer(per_dir[0], kernel[0], bias[0])]
        if bidirectional:
            reverse = reference_layer(per_dir[1][:, ::-1], kernel[1], bias[1])
            outputs.append(reverse[:, ::-1])
        outputs = np.concatenate(outputs, axis=-1)
    return outputs


def _forward(module, static, dynamic, train=False):
    return module(module.project_static(static), dynamic, train=train)


@functools.partial(jax.jit, static_argnames=("gru", "train"))
def _run(gru, params, static, dynamic, train=False, rng=None):
    rngs = {"dropout": rng} if rng is not None else {}
    return gru.apply({"params": params}, static, dynamic, train, method=_forward, rngs=rngs)


@functools.partial(jax.jit, static_argnames=("gru",))
def _init(gru, static, dynamic):
    return gru.init(key(0), static, dynamic, method=_forward)["params"]


@pytest.fixture(scope="module")
def inputs():
    return normal(0, (B, T, DS)), normal(1, (B, T, DD))


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_gru_matches_numpy_reference(inputs, num_layers, bidirectional):
    static, dynamic = inputs
    gru = GRU(H, num_layers=num_layers, bidirectional=bidirectional)
    params = _init(gru, static, dynamic)
    out = _run(gru, params, static, dynamic)
    dirs = 2 if bidirectional else 1
    chex.assert_shape(out, (B, T, dirs * H))
    assert out.dtype == jnp.float32
    want = reference_gru(params, np.asarray(static), np.asarray(dynamic), num_layers, bidirectional)
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_gru_parameter_count_matches_pytorch():
    d, h = 7, 5
    gru = GRU(h, num_layers=2, bidirectional=True)
    static = jnp.zeros((1, 2, d))
    shapes = jax.eval_shape(lambda: _init(gru, static, None))
    count = sum(np.prod(a.shape) for a in jax.tree.leaves(shapes))
    # torch.nn.GRU(d, h, num_layers=2, bidirectional=True): per direction 3h(in + h) + 6h.
    want = 2 * (3 * h * (d + h) + 6 * h) + 2 * (3 * h * (2 * h + h) + 6 * h)
    assert count == want


def test_unidirectional_gru_is_causal_bidirectional_is_not(inputs):
    static, dynamic = inputs
    later = static.at[:, 3:].add(1.0)
    for bidirectional in (False, True):
        gru = GRU(H, bidirectional=bidirectional)
        params = _init(gru, static, dynamic)
        a = _run(gru, params, static, dynamic)
        b = _run(gru, params, later, dynamic)
        early_changed = not np.allclose(a[:, :3], b[:, :3], atol=1e-7)
        assert early_changed == bidirectional
        assert not np.allclose(a[:, 3:], b[:, 3:])


def _carry(module, static, dynamic, state):
    gates = module.project_static(static)
    return module(gates, dynamic, initial_state=state, return_state=True)


def test_state_carried_across_calls_equals_one_call(inputs):
    """Frames 0-2 then 3-5 from the returned state give one 6-frame call's outputs (2 layers,
    stacked parts: every layer's state is carried); bidirectional GRUs refuse to carry."""
    static, dynamic = inputs
    stacked = jnp.broadcast_to(dynamic, (3, *dynamic.shape))
    gru = GRU(H, num_layers=2, num_stack=3)
    params = _init(gru, static, stacked)
    run = jax.jit(lambda s, d, h: gru.apply({"params": params}, s, d, h, method=_carry))
    whole, _ = run(static, stacked, None)
    first, state = run(static[:, :3], stacked[..., :3, :], None)
    second, _ = run(static[:, 3:], stacked[..., 3:, :], state)
    assert len(state) == 2 and state[0].shape == (3, 1, B, H)
    np.testing.assert_allclose(np.concatenate([first, second], -2), whole, atol=1e-6)
    assert not np.allclose(second, run(static[:, 3:], stacked[..., 3:, :], None)[0], atol=1e-3)
    with pytest.raises(ValueError, match="bidirectional GRU cannot carry"):
        GRU(H, bidirectional=True).init(key(0), static, dynamic, None, method=_carry)


def test_stacked_gru_matches_parts_run_one_by_one():
    """P stacked GRUs with zero-padded dynamic inputs equal P separate GRUs on unpadded inputs."""
    widths = (2, 5, 3)  # dynamic input width of each part; padded to 5
    num_parts, pad = len(widths), max(widths)
    static = normal(2, (B, T, DS))
    dynamic = normal(3, (num_parts, B, T, pad))
    mask = (np.arange(pad)[None] < np.asarray(widths)[:, None]).astype(np.float32)
    dynamic = dynamic * mask[:, None, None, :]
    stacked = GRU(H, num_layers=2, bidirectional=True, num_stack=num_parts)
    params = _init(stacked, static, dynamic)
    out = _run(stacked, params, static, dynamic)
    chex.assert_shape(out, (num_parts, B, T, 2 * H))
    single = GRU(H, num_layers=2, bidirectional=True)
    for p, width in enumerate(widths):
        part = jax.tree.map(lambda a, p=p: a[p], params)
        part["dynamic_projection"]["kernel"] = part["dynamic_projection"]["kernel"][:width]
        part["static_projection"]["kernel"] = params["static_projection"]["kernel"][:, p]
        want = _run(single, part, static, dynamic[p, ..., :width])
        np.testing.assert_allclose(out[p], want, atol=1e-6)


def test_custom_vjp_matches_autodiff_of_the_scan():
    shape = (3, 2)  # stacked parts and directions
    gates = normal(4, (T, *shape, B, 3 * H))
    kernel = normal(5, (*shape, H, 3 * H))
    bias = normal(6, (*shape, 3 * H))
    weight = normal(7, (T, *shape, B, H))
    h0 = normal(8, (*shape, B, H), 0.5)  # a streamed state

    def custom(g, k, b, h):
        return jnp.sum(weight * jnp.sin(gru_scan(g, k, b, initial_state=h)))

    def autodiff(g, k, b, h):
        return jnp.sum(weight * jnp.sin(_gru_steps(g, k, b, h, jnp.float32, 1)[0]))

    got = jax.jit(jax.grad(custom, argnums=(0, 1, 2, 3)))(gates, kernel, bias, h0)
    want = jax.jit(jax.grad(autodiff, argnums=(0, 1, 2, 3)))(gates, kernel, bias, h0)
    chex.assert_trees_all_close(got, want, atol=1e-5)
    chex.assert_tree_all_finite(got)
    assert float(jnp.abs(got[3]).max()) > 1e-3  # the state's gradient is not dropped


def naive_gru_scan(gates, kernel, bias, h0, dtype):
    """PyTorch's GRU as a plain lax.scan, differentiated by JAX: [T, ..., B, 3H] -> [T, ..., B, H].

    The recurrent matmul takes `dtype` inputs and accumulates in float32, the mixed-precision
    contract of recurrent.gru_scan; everything else is float32.
    """

    def step(h, gates_t):
        recurrent = jnp.einsum(
            "...bh,...hg->...bg",
            h.astype(dtype),
            kernel.astype(dtype),
            preferred_element_type=jnp.float32,
        )
        x_r, x_z, x_n = jnp.split(gates_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(recurrent + bias[..., None, :], 3, axis=-1)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    return jax.lax.scan(step, h0, gates)[1]


# Relative error bounds of the custom backward against autodiff of the naive scan, per dtype:
# (error norm / gradient norm, largest elementwise error / largest gradient entry). float32 is
# rounding only (measured ~2e-7). In bfloat16 both sides round h and W_hh (and the custom
# backward also the gate gradients) to 8 mantissa bits, eps 2^-8 = 4e-3, in a different order;
# measured 1e-3 to 3e-3 over T = 16 steps, so 1e-2 leaves 3x margin, while dropping or
# misplacing one term of the backward moves a gradient by 10% or more.
GRADIENT_TOLERANCE = {"float32": (2e-6, 2e-6), "bfloat16": (1e-2, 1e-2)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_custom_vjp_matches_autodiff_of_a_naive_scan(dtype):
    t, stack, b, h = 16, (2, 2), 3, 32  # long enough for errors to build up through W_hh
    gates = normal(14, (t, *stack, b, 3 * h))
    # Recurrent weights ~1.5/sqrt(H): h @ W_hh is O(1), the gates neither saturate nor vanish.
    kernel = normal(15, (*stack, h, 3 * h), 1.5 / np.sqrt(h))
    bias = normal(16, (*stack, 3 * h), 0.5)
    h0 = normal(17, (*stack, b, h), 0.5)
    weight = normal(18, (t, *stack, b, h))
    compute = jnp.dtype(dtype)

    def loss(scan):
        return lambda *args: jnp.sum(weight * jnp.sin(scan(*args)))

    custom = loss(lambda g, k, bb, h0: gru_scan(g, k, bb, compute, initial_state=h0))
    naive = loss(lambda g, k, bb, h0: naive_gru_scan(g, k, bb, h0, compute))
    grad = lambda f: jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(gates, kernel, bias, h0)
    got, want = grad(custom), grad(naive)
    norm_bound, max_bound = GRADIENT_TOLERANCE[dtype]
    for name, g, w in zip(("gates", "kernel", "bias", "h0"), got, want, strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        scale = np.abs(w).max()
        assert scale > 0.1, name  # a gradient that vanished would compare equal at any bound
        error = np.linalg.norm(g - w) / np.linalg.norm(w)
        assert error <= norm_bound, f"d/d{name}: relative error {error:.2e} > {norm_bound:.0e}"
        np.testing.assert_allclose(g, w, rtol=0, atol=max_bound * scale, err_msg=name)
    if dtype == "bfloat16":  # the bfloat16 backward really ran: it differs from float32's
        exact = grad(loss(lambda g, k, bb, h0: gru_scan(g, k, bb, initial_state=h0)))
        assert not np.allclose(got[1], exact[1], rtol=0, atol=1e-3)


def test_dropout_between_layers_only_in_training(inputs):
    static, dynamic = inputs
    gru = GRU(H, num_layers=2, dropout=0.5)
    params = _init(gru, static, dynamic)
    eval_out = _run(gru, params, static, dynamic)
    np.testing.assert_array_equal(eval_out, _run(gru, params, static, dynamic))
    train_a = _run(gru, params, static, dynamic, train=True, rng=key(7))
    train_b = _run(gru, params, static, dynamic, train=True, rng=key(7))
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, eval_out)


def test_bfloat16_matmuls_keep_float32_params_and_outputs(inputs):
    static, dynamic = inputs
    params = _init(GRU(H), static, dynamic)
    out32 = _run(GRU(H), params, static, dynamic)
    out16 = _run(GRU(H, dtype=jnp.bfloat16), params, static, dynamic)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=3e-2)
    assert not np.array_equal(out16, out32)  # the bfloat16 path really ran

"""HKMR against a naive reference: six chains one after another, joint by joint.

The model runs the five child chains as one stacked, padded computation, hoists phi's part of
every embedding, scans the inner iterations and maps the backward steps to joints with a
gather. The reference here undoes all of that: float64 numpy with Python loops over outer
iterations, chains, inner iterations and joints, reading each chain's layers out of the stacked
parameters (dropping the padding) and concatenating every input in the paper's order (eq. 1-2).
The parameters are random everywhere, the padding included, so that every layer's output
depends on its inputs: a wrong joint order, a backward pass from a padded joint, a child that
sees the old root or padding that leaks into a real joint all change the result.
"""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import smpl
from lmr_jax.models import hkmr, hkmr_chain
from tests.models.small_models import OUTPUT_SHAPES, body_model, features, key, normal

B, F, D, H = 2, 3, 6, 8  # batch, frames, feature width, psi width
ROOT, *CHILDREN = smpl.PARTS.values()
WIDEST = max(len(joints) for joints in CHILDREN)
MEAN_POSE = np.zeros((24, 3))
MEAN_POSE[0, 0] = np.pi  # params.MeanParams: the root turned 180 degrees about x
MEAN_CAM = np.array([0.9, 0.0, 0.0])
# float32 model against a float64 reference; measured errors ~1e-6, miswiring moves 1e-2+.
TOLERANCE = dict(atol=2e-5, rtol=2e-5)

VARIANTS = {
    "full": dict(num_iterations=2, inner_iterations=2),
    "no_hierarchy": dict(num_iterations=1, inner_iterations=2, hierarchy=False),
    "previous_only": dict(num_iterations=1, inner_iterations=2, previous_only=True),
    "forward_only": dict(num_iterations=1, inner_iterations=2, backward_pass=False),
}


# ------------------------------------------------------------------------------------------
# The reference.
# ------------------------------------------------------------------------------------------


def _embed(p, c, phi, condition, theta):
    """psi of chain c: ReLU([phi, condition, theta_c] @ W + b), the padded theta rows dropped."""
    width = condition.shape[-1]
    w = np.concatenate(
        [
            p["embed_static"]["kernel"][:, c],
            p["embed_dynamic"]["kernel"][c][: width + theta.shape[-2] * 3],
        ]
    )
    x = np.concatenate([phi, condition, theta.reshape(*theta.shape[:-2], -1)], axis=-1)
    return np.maximum(x @ w + p["embed_static"]["bias"][c], 0.0)


def _joint(layer, c, step, psi, earlier, options):
    """Eq. 1/2: one dense layer on [psi, d_{s-1}, ..., d_0] (most recent first) -> 3 numbers."""
    if not options.get("hierarchy", True):
        earlier = []
    elif options.get("previous_only", False):
        earlier = earlier[:1]
    x = np.concatenate([psi, *earlier], axis=-1)
    return x @ layer["kernel"][c, step][: x.shape[-1]] + layer["bias"][c, step]


def _chain(p, c, phi, condition, theta, options):
    """P inner iterations of chain c: forward over its joints, then backward from its last."""
    theta = theta.copy()
    joints = list(range(theta.shape[-2]))
    for _ in range(options["inner_iterations"]):
        psi, earlier, deltas = _embed(p, c, phi, condition, theta), [], []
        for i in joints:  # kinematic order
            deltas.append(_joint(p["forward_pass"], c, i, psi, earlier, options))
            earlier.insert(0, deltas[-1])
        theta = theta + np.stack(deltas, axis=-2)
        if not options.get("backward_pass", True):
            continue
        psi, earlier = _embed(p, c, phi, condition, theta), []
        update = np.zeros_like(theta)
        for step, i in enumerate(reversed(joints)):  # from the chain's own last joint
            update[..., i, :] = _joint(p["backward_pass_layers"], c, step, psi, earlier, options)
            earlier.insert(0, update[..., i, :])
        theta = theta + update
    return theta


def _hidden(p, x):
    w = np.concatenate([p["static_projection"]["kernel"], p["dynamic_projection"]["kernel"]])
    return np.maximum(x @ w + p["static_projection"]["bias"], 0.0)


def reference_hkmr(params, phi, options):
    """T outer iterations: root chain, then each child on the new root, shape, camera.

    Returns:
      per outer iteration (pose [B, F, 24, 3], betas [B, F, 10], cam [B, F, 3]).
    """
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    pose = np.broadcast_to(MEAN_POSE, (B, F, 24, 3)).copy()
    beta = np.zeros((B, F, 10))
    history = []
    for _ in range(options["num_iterations"]):
        pose[:, :, ROOT] = _chain(p["root"], 0, phi, beta, pose[:, :, ROOT], options)
        condition = np.concatenate([beta, pose[:, :, ROOT].reshape(B, F, -1)], axis=-1)
        new = [_chain(p["children"], c, phi, condition, pose[:, :, list(joints)], options)
               for c, joints in enumerate(CHILDREN)]  # fmt: skip
        for joints, theta in zip(CHILDREN, new, strict=True):
            pose[:, :, list(joints)] = theta
        flat = pose.reshape(B, F, -1)
        hidden = _hidden(p["shape"], np.concatenate([phi, flat, beta], axis=-1))
        beta = beta + hidden @ p["shape_head"]["kernel"] + p["shape_head"]["bias"]
        hidden = _hidden(p["camera"], np.concatenate([phi, flat, beta], axis=-1))
        cam = MEAN_CAM + hidden @ p["camera_head"]["kernel"] + p["camera_head"]["bias"]
        history.append((pose.copy(), beta, cam))
    return history


# ------------------------------------------------------------------------------------------
# The model at test size, with every parameter perturbed.
# ------------------------------------------------------------------------------------------


def _random_params(model, phi):
    """Normal values for every parameter (by abstract init: nothing runs or compiles), the
    padding included; the 'small' initial joint layers would give residuals of 1e-3, under
    which a miswiring would hide."""
    shapes = jax.eval_shape(model.init, key(0), phi)["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    values = [
        normal(200 + i, a.shape, 0.5 / np.sqrt(a.shape[-2] if len(a.shape) >= 2 else H))
        for i, a in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, values)


def _padding_scrambled(params):
    """Large values in every parameter that only padded joints use: no output may move."""
    p = jax.tree.map(np.array, params)
    children = p["children"]
    for c, joints in enumerate(CHILDREN):
        k = len(joints)
        condition = 10 + 3 * len(ROOT)
        children["embed_dynamic"]["kernel"][c, condition + 3 * k :] = 50.0
        for name in ("forward_pass", "backward_pass_layers"):
            if name in children:
                children[name]["kernel"][c, k:] = 50.0
                children[name]["bias"][c, k:] = 50.0
                children[name]["kernel"][c, :, H + 3 * (k - 1) :] = 50.0
    return jax.tree.map(jnp.asarray, p)


@pytest.fixture(scope="module")
def compiled():
    """name -> (compiled regressor apply, random params), built once; prints compile times."""
    phi = normal(1, (B, F, D))
    models = {}
    for name, options in VARIANTS.items():
        model = hkmr.HKMRRegressor(hidden_size=H, **options)
        params = _random_params(model, phi)
        start = time.perf_counter()
        apply = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x)).lower(params, phi)
        apply = apply.compile()
        print(f"HKMRRegressor {name} {options}: jit compile {time.perf_counter() - start:.2f} s")
        models[name] = (apply, params)
    return phi, models


@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_naive_reference(compiled, name):
    phi, models = compiled
    apply, params = models[name]
    poses, betas, cams = apply(params, phi)
    expected = reference_hkmr(params, np.asarray(phi, np.float64), VARIANTS[name])
    assert poses.shape == (VARIANTS[name]["num_iterations"], B, F, 24, 3)
    for t, (pose, beta, cam) in enumerate(expected):
        np.testing.assert_allclose(poses[t], pose, **TOLERANCE, err_msg=f"pose, iteration {t}")
        np.testing.assert_allclose(betas[t], beta, **TOLERANCE, err_msg=f"betas, iteration {t}")
        np.testing.assert_allclose(cams[t], cam, **TOLERANCE, err_msg=f"cam, iteration {t}")
    # The updates are not small: a miswired input would show far above the tolerance.
    assert np.abs(np.asarray(poses[-1]) - MEAN_POSE).max() > 0.1


@pytest.mark.parametrize("name", ["full", "no_hierarchy"])
def test_padded_joints_are_inert(compiled, name):
    phi, models = compiled
    apply, params = models[name]
    chex.assert_trees_all_close(apply(_padding_scrambled(params), phi), apply(params, phi))


def test_previous_only_differs_from_all_previous_joints(compiled):
    """The switch acts: with the same parameters, eq. 1's full context gives other poses."""
    phi, models = compiled
    apply, params = models["previous_only"]
    options = dict(VARIANTS["previous_only"], previous_only=False)
    full_context = reference_hkmr(params, np.asarray(phi, np.float64), options)[-1][0]
    assert np.abs(np.asarray(apply(params, phi)[0][-1]) - full_context).max() > 1e-2


def test_backward_order_starts_at_each_chains_last_joint():
    order = hkmr_chain.backward_order(tuple(len(j) for j in CHILDREN), WIDEST)
    np.testing.assert_array_equal(
        order,
        [[1, 0, 2, 3, 4], [4, 3, 2, 1, 0], [4, 3, 2, 1, 0], [3, 2, 1, 0, 4], [3, 2, 1, 0, 4]],
    )


def test_outputs_match_hmrs():
    """The full model's output dict: the keys and shapes every model returns (HMR's), and
    one entry per outer iteration in `iterations`, as the losses read them."""
    model = hkmr.build(_small_config(num_iterations=3), body_model())
    outputs, _ = jax.eval_shape(model.init_with_output, key(0), features())
    assert set(outputs) == {*OUTPUT_SHAPES, "iterations"}
    for name, shape in OUTPUT_SHAPES.items():
        assert outputs[name].shape == shape, name
    iterations = {name: value.shape for name, value in outputs["iterations"].items()}
    assert iterations == {
        "rotmats": (3, *OUTPUT_SHAPES["rotmats"]),
        "betas": (3, *OUTPUT_SHAPES["betas"]),
        "cam": (3, *OUTPUT_SHAPES["cam"]),
    }


def _small_config(**overrides):
    config = hkmr.default_config()
    config.hidden_size = H
    config.update(overrides)
    return config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(inner_iterations=0), "model.inner_iterations is 0, expected a positive integer"),
        (dict(head_init="big"), "model.head_init is 'big'"),
        (dict(hierarchy=False, previous_only=True), "model.previous_only is True"),
        (dict(dropout=1.0), "model.dropout is 1.0"),
        (dict(parts=(("root", (0, 3, 6, 9)), ("head", (15, 12)), *tuple(smpl.PARTS.items())[2:])),
         "chain 'head' lists joint 12 after 15"),
    ],
)  # fmt: skip
def test_check_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        hkmr.check_config(_small_config(**overrides))


def test_default_config_is_valid():
    config = hkmr.default_config()
    hkmr.check_config(config)
    assert (config.name, config.num_iterations, config.inner_iterations) == ("hkmr", 3, 4)

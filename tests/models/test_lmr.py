"""Tests of LMR: outputs, causality, root conditioning, part stacking, residual start, compile."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import geometry, smpl
from lmr_jax.models import GRU, PartRecurrences, build_model, default_model_config
from lmr_jax.models.lmr import DEFAULT_PARTS
from lmr_jax.models.params import MeanParams
from tests.models.small_models import (
    OUTPUT_SHAPES,
    B,
    D,
    H,
    T,
    body_model,
    built,
    features,
    key,
    normal,
    output_shapes,
    small_config,
)

VARIANTS = {
    "lmr": (),
    "single_rnn": (("single_rnn", True),),
    # The ablation with all other options, traced once (shapes, dtypes; values: unit tests).
    "no_root": (
        ("no_root_dependency", True),
        ("dtype", "bfloat16"),
        ("camera", "dense"),
        ("bidirectional", True),
        ("gru_layers", 2),
        ("dropout", 0.1),
    ),
}
CHILD_JOINTS = [j for _, joints in DEFAULT_PARTS[1:] for j in joints]
ROOT_JOINTS = list(DEFAULT_PARTS[0][1])
PART_POSE, PART_SHAPE = normal(1, (B, T, 24, 6)), normal(2, (B, T, 10))


def lmr(variant: str):
    return built("lmr", VARIANTS[variant])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_shapes_and_dtypes(variant):
    params, out = output_shapes("lmr", VARIANTS[variant])
    shapes = OUTPUT_SHAPES
    for name, shape in shapes.items():
        chex.assert_shape(out[name], shape)
    iterations = out["iterations"]
    chex.assert_shape(iterations["rotmats"], (3, B, T, 24, 3, 3))
    chex.assert_shape(iterations["betas"], (3, B, T, 10))
    chex.assert_shape(iterations["cam"], (3, B, T, 3))
    # Also with bfloat16 matmuls ('no_root'): parameters and outputs stay float32.
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(out))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))


def test_outputs_are_finite_and_consistent():
    _, _, out, _ = lmr("lmr")
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(out["rotmats"], out["iterations"]["rotmats"][-1])
    # The 2D joints are the projection of the 3D joints with the predicted camera.
    want = geometry.weak_perspective_project(out["joints3d"], out["cam"])
    np.testing.assert_allclose(out["kp2d"], want, atol=1e-6)
    np.testing.assert_allclose(out["pose"], geometry.rotmats_to_pose72(out["rotmats"]), atol=1e-5)


def test_weights_are_shared_across_iterations():
    def shapes(iterations):
        model = build_model(small_config("lmr", num_iterations=iterations), body_model())
        init = jax.eval_shape(model.init, key(0), features())
        return jax.tree.map(lambda a: a.shape, init)

    assert shapes(1) == shapes(3)


def test_unidirectional_lmr_is_causal():
    _, params, _, apply = lmr("lmr")
    x = features()
    changed = x.at[:, 5:].add(normal(9, (B, T - 5, D)))
    a, b = apply(params, x), apply(params, changed)
    for name in ("rotmats", "betas", "cam", "joints3d"):
        np.testing.assert_allclose(a[name][:, :5], b[name][:, :5], atol=1e-6, err_msg=name)
        assert not np.allclose(a[name][:, 5:], b[name][:, 5:], atol=1e-6), name


@functools.lru_cache(maxsize=2)
def part_module(no_root_dependency: bool):
    """PartRecurrences at test size: (params, jitted apply(params)) on fixed pose and shape."""
    x, pose, shape = features(), PART_POSE, PART_SHAPE
    module = PartRecurrences(H, no_root_dependency=no_root_dependency)
    params = jax.jit(lambda k: module.init(k, x, pose, shape, method=_part_forward))(key(0))
    apply = jax.jit(lambda p: module.apply({"params": p}, x, pose, shape, method=_part_forward))
    return params["params"], apply


def _part_forward(module, x, pose, shape):
    return module(module.project_static(x), pose, shape)[0]  # (pose, state None)


def _louder_root(params):
    """The parameters with a much larger root head: the root's output changes a lot."""
    head = params["root_head"]
    kernel = head["kernel"] + normal(3, head["kernel"].shape)
    return dict(params, root_head=dict(head, kernel=kernel))


def test_lmr_children_follow_the_root():
    _, params, _, apply = lmr("lmr")
    louder = dict(params, pose=_louder_root(params["pose"]))
    first = apply(params, features())["iterations"]["rotmats"][0]  # iteration 1: no beta path
    moved = apply(louder, features())["iterations"]["rotmats"][0]
    assert not np.allclose(first[..., ROOT_JOINTS, :, :], moved[..., ROOT_JOINTS, :, :])
    assert not np.allclose(first[..., CHILD_JOINTS, :, :], moved[..., CHILD_JOINTS, :, :])


@pytest.mark.parametrize("no_root_dependency", [False, True])
def test_children_are_unaffected_by_the_root_only_in_the_ablation(no_root_dependency):
    params, apply = part_module(no_root_dependency)
    first, moved = apply(params), apply(_louder_root(params))
    assert not np.allclose(first[..., ROOT_JOINTS, :], moved[..., ROOT_JOINTS, :])
    same = np.allclose(first[..., CHILD_JOINTS, :], moved[..., CHILD_JOINTS, :], atol=1e-7)
    assert same == no_root_dependency


def test_repeated_calls_compile_once():
    _, params, _, apply = lmr("lmr")  # apply raises if it is traced more than once
    for seed in range(3):  # new values, same shapes
        scaled = jax.tree.map(lambda a, s=seed: a * (1.0 + 0.1 * s), params)
        jax.block_until_ready(apply(scaled, features(seed)))
    assert apply._cache_size() == 1


def test_zero_heads_start_exactly_from_the_mean():
    _, params, _, apply = lmr("lmr")

    def silence(tree):
        return {
            name: jax.tree.map(jnp.zeros_like, sub)
            if name.endswith("head")
            else (silence(sub) if isinstance(sub, dict) else sub)
            for name, sub in tree.items()
        }

    it = apply(silence(params), features())["iterations"]
    upright = np.diag([1.0, -1.0, -1.0])[None]  # the root, then 23 identity joints
    mean = np.concatenate([upright, np.broadcast_to(np.eye(3), (23, 3, 3))])
    np.testing.assert_array_equal(it["rotmats"], np.broadcast_to(mean, (3, B, T, 24, 3, 3)))
    np.testing.assert_array_equal(it["betas"], np.zeros((3, B, T, 10)))
    np.testing.assert_array_equal(it["cam"], np.broadcast_to(np.float32([0.9, 0, 0]), (3, B, T, 3)))


def test_zero_head_init_and_mean_params_file(tmp_path):
    rng = np.random.default_rng(0)
    mean = {"pose": rng.normal(size=144), "shape": rng.normal(size=10), "cam": rng.normal(size=3)}
    np.savez(tmp_path / "smpl_mean_params.npz", **mean)
    config = small_config("lmr", head_init="zeros", num_iterations=1, camera="dense")
    config.mean_params = str(tmp_path / "smpl_mean_params.npz")
    model = build_model(config, body_model())
    pose, shape, cam = model.mean_params.initial((B, T))
    want = np.float32(mean["pose"]).reshape(24, 6)
    np.testing.assert_array_equal(pose, np.broadcast_to(want, (B, T, 24, 6)))
    np.testing.assert_array_equal(shape, np.broadcast_to(np.float32(mean["shape"]), (B, T, 10)))
    np.testing.assert_array_equal(cam, np.broadcast_to(np.float32(mean["cam"]), (B, T, 3)))
    params = jax.jit(model.init)(key(0), features())["params"]
    heads = [sub for name, sub in params.items() if name.endswith("head")]
    heads += [sub for name, sub in params["pose"].items() if name.endswith("head")]
    assert len(heads) == 4
    assert all(np.all(a == 0) for a in jax.tree.leaves(heads))


def _gru_forward(module, x, dynamic):
    return module(module.project_static(x), dynamic)


def test_stacked_child_recurrence_matches_parts_run_one_by_one():
    x, pose, shape = features(), PART_POSE, PART_SHAPE
    params, apply = part_module(False)
    louder = lambda a: a * 30.0 if a.ndim == 3 and a.shape[-1] == 30 else a  # noqa: E731
    params = jax.tree.map(louder, params)  # louder child heads: errors cannot hide
    got = apply(params)

    gru = GRU(H)
    run_gru = jax.jit(lambda p, d: gru.apply({"params": p}, x, d, method=_gru_forward))
    want = np.array(pose)
    root_in = jnp.concatenate([pose[..., ROOT_JOINTS, :].reshape(B, T, -1), shape], -1)
    root_head = params["root_head"]
    delta = run_gru(params["root_rnn"], root_in) @ root_head["kernel"] + root_head["bias"]
    want[..., ROOT_JOINTS, :] += np.asarray(delta).reshape(B, T, -1, 6)
    new_root = jnp.asarray(want[..., ROOT_JOINTS, :]).reshape(B, T, -1)
    widest = max(len(joints) for _, joints in DEFAULT_PARTS[1:])
    for p, (_, joints) in enumerate(DEFAULT_PARTS[1:]):
        part = jax.tree.map(lambda a, p=p: a[p], params["child_rnn"])
        static = params["child_rnn"]["static_projection"]["kernel"]  # shared input: [D, P, G]
        part["static_projection"]["kernel"] = static[:, p]
        kernel = part["dynamic_projection"]["kernel"]  # rows: own joints padded, shape, root
        n = 6 * len(joints)
        part["dynamic_projection"]["kernel"] = jnp.concatenate([kernel[:n], kernel[6 * widest :]])
        own = jnp.asarray(want[..., list(joints), :]).reshape(B, T, -1)
        hidden = run_gru(part, jnp.concatenate([own, shape, new_root], -1))
        head = jax.tree.map(lambda a, p=p: a[p], params["child_head"])
        delta = hidden @ head["kernel"][:, :n] + head["bias"][:n]
        want[..., list(joints), :] += np.asarray(delta).reshape(B, T, -1, 6)
    assert np.abs(want - np.asarray(pose)).max() > 0.1  # the update is not negligible
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_gradients_are_finite_and_reach_every_parameter_but_the_padding():
    model, params, _, _ = lmr("lmr")

    def loss(p):
        out = model.apply({"params": p}, features(), train=True)
        return sum(jnp.mean(jnp.square(out[k])) for k in ("joints3d", "kp2d", "betas", "cam"))

    grads = jax.jit(jax.grad(loss))(params)
    chex.assert_tree_all_finite(grads)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert np.abs(grad).max() > 0, jax.tree_util.keystr(path)
    head = np.asarray(grads["pose"]["child_head"]["kernel"])  # [5 parts, H, 6 x 5 joints]
    for p, (_, joints) in enumerate(DEFAULT_PARTS[1:]):
        assert np.abs(head[p, :, : 6 * len(joints)]).max() > 0
        np.testing.assert_array_equal(head[p, :, 6 * len(joints) :], 0.0)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"name": "lmx"}, "model.name"),
        ({"camera": "static"}, "model.camera"),
        ({"single_rnn": True, "no_root_dependency": True}, "exclude each other"),
        ({"mean_params": "/nonexistent/smpl_mean_params.npz"}, "does not exist"),
        ({"parts": (("head", (12, 15)),)}, "root"),
        ({"joint_layout": "vibe50"}, "vibe50"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(overrides, message):
    config = default_model_config("lmr")
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        build_model(config, body_model())


def test_mean_params_file_with_a_missing_key_is_refused(tmp_path):
    np.savez(tmp_path / "mean.npz", pose=np.zeros(144), shape=np.zeros(10))
    config = default_model_config("lmr")
    config.mean_params = str(tmp_path / "mean.npz")
    with pytest.raises(ValueError, match="'cam'"):
        build_model(config, smpl.procedural(0))


def test_default_mean_pose_stands_upright_in_the_camera_frame():
    """Without a mean-parameter file the start is upright in the y-down camera frame (head
    above the feet in the image), as VIBE's mean pose: an upside-down start made training flip
    the body through the stature shape direction."""
    pose6d, shape, _ = MeanParams().initial(())
    rotmats = geometry.rot6d_to_matrix(pose6d)
    np.testing.assert_allclose(rotmats[0], np.diag([1.0, -1.0, -1.0]), atol=1e-7)
    np.testing.assert_allclose(rotmats[1:], np.broadcast_to(np.eye(3), (23, 3, 3)), atol=1e-7)
    _, joints = smpl.forward(body_model(), shape[None], rotmats[None])
    head, ankles = joints[0, 15], joints[0, [7, 8]]
    assert float(head[1]) < float(ankles[:, 1].min()) - 1.0  # y down: the head is 1 m higher

"""PC-HMR's calibration module: eq. 6-13 by value on hand-made bones, degenerate bones, the init."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax.models import calibration
from tests.models.small_models import body_model

# Every check goes through a few jitted functions of fixed shapes: eager jnp dispatch and one
# compilation per test would cost far more than the math does.
calibrate = jax.jit(calibration.calibrate, static_argnames="bones")
bone_transforms = jax.jit(calibration.bone_transforms, static_argnames="bones")
NUM_PAIRS = 8  # every bone_rotations call: [8, 3] bone vectors


@jax.jit
def rotations_and_grads(b_src, b_tgt, cotangent):
    """Psi [8, 3, 3] and the gradients of sum(Psi * cotangent) wrt both inputs."""
    loss = lambda s, t: jnp.sum(calibration.bone_rotations(s, t).astype(jnp.float32) * cotangent)
    return calibration.bone_rotations(b_src, b_tgt), jax.grad(loss, argnums=(0, 1))(b_src, b_tgt)


def _cotangent(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(NUM_PAIRS, 3, 3)), jnp.float32)


# A chain 0 -> 1 -> 2 along x, and one side branch 1 -> 3.
CHAIN = jnp.asarray([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
CHAIN_BONES = ((0, 1), (1, 2), (1, 3))


def _one_hot(bone, num_vertices=1, num_bones=3):
    return jnp.zeros((num_vertices, num_bones)).at[:, bone].set(1.0)


def _random_problem(seed, batch=(), num_vertices=7):
    rng = np.random.default_rng(seed)
    joints_src = rng.normal(size=(*batch, 5, 3))
    joints_tgt = joints_src + rng.normal(scale=0.3, size=joints_src.shape)
    vertices = rng.normal(size=(*batch, num_vertices, 3))
    w = rng.uniform(-0.5, 1.5, size=(num_vertices, 4))
    a = rng.uniform(size=(num_vertices, 4))
    a = a / a.sum(-1, keepdims=True)
    bones = ((0, 1), (1, 2), (2, 3), (1, 4))
    return [np.asarray(x, np.float32) for x in (vertices, joints_src, joints_tgt, w, a)], bones


def test_rotation_by_a_known_angle_moves_a_known_vertex():
    # The child 2 turns 90 degrees about z around its parent 1: (2, 0, 0) -> (1, 1, 0).
    target = CHAIN.at[2].set(jnp.asarray([1.0, 1.0, 0.0]))
    psi, translation, delta = bone_transforms(CHAIN, target, CHAIN_BONES)
    rz90 = np.asarray([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(psi[1], rz90, atol=1e-6)
    np.testing.assert_allclose(psi[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(translation[1], [1.0, -1.0, 0.0], atol=1e-6)  # J_p - Psi J_p
    np.testing.assert_allclose(delta, 0.0, atol=1e-6)  # same bone lengths
    # (1.5, 0.2, 0) on bone 1->2: (0.5, 0.2, 0) from the parent turns to (-0.2, 0.5, 0).
    vertex = jnp.asarray([[1.5, 0.2, 0.0]])
    moved = calibrate(vertex, CHAIN, target, 0.0 * _one_hot(1), _one_hot(1),
                                  CHAIN_BONES)  # fmt: skip
    np.testing.assert_allclose(moved, [[0.8, 0.5, 0.0]], atol=1e-6)
    still = jnp.asarray([[0.5, -0.1, 0.3]])  # on bone 0->1, whose target is unchanged
    moved = calibrate(still, CHAIN, target, _one_hot(0), _one_hot(0), CHAIN_BONES)
    np.testing.assert_allclose(moved, still, atol=1e-6)


def test_rotation_is_the_minimal_one_of_eq_6():
    rng = np.random.default_rng(0)
    b_src, b_tgt = (jnp.asarray(rng.normal(size=(NUM_PAIRS, 3)), jnp.float32) for _ in range(2))
    psi, _ = rotations_and_grads(b_src, b_tgt, _cotangent())
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    rotated = jnp.einsum("nab,nb->na", psi, b_src)
    np.testing.assert_allclose(unit(rotated), unit(b_tgt), atol=1e-5)
    axis = jnp.cross(b_src, b_tgt)  # eq. 6: the axis is the cross product, so it stays fixed
    np.testing.assert_allclose(jnp.einsum("nab,nb->na", psi, axis), axis, atol=1e-5)
    angle = np.arccos(np.clip(np.sum(unit(b_src) * unit(b_tgt), -1), -1, 1))
    np.testing.assert_allclose((jnp.trace(psi, axis1=-2, axis2=-1) - 1) / 2, np.cos(angle),
                               atol=1e-5)  # fmt: skip


def test_target_equal_to_input_leaves_the_mesh_unchanged():
    (vertices, joints, _, w, a), bones = _random_problem(1, batch=(2,))
    moved = calibrate(vertices, joints, joints, w, a, bones)
    np.testing.assert_allclose(moved, vertices, atol=1e-5)


def test_nonrigid_term_moves_the_child_exactly_onto_its_target():
    # Bone 1->2 turned and stretched from length 1 to 1.5: Delta fills the gap (eq. 10).
    target = CHAIN.at[2].set(jnp.asarray([1.0, 0.9, 1.2]))
    child = CHAIN[2][None]
    rigid = calibrate(child, CHAIN, target, 0.0 * _one_hot(1), _one_hot(1),
                                  CHAIN_BONES)  # fmt: skip
    full = calibrate(child, CHAIN, target, _one_hot(1), _one_hot(1), CHAIN_BONES)
    np.testing.assert_allclose(full, target[2][None], atol=1e-6)
    np.testing.assert_allclose(
        rigid, [[1.0, 0.6, 0.8]], atol=1e-6
    )  # unit length, on the target ray
    half = calibrate(child, CHAIN, target, 0.5 * _one_hot(1), _one_hot(1),
                                 CHAIN_BONES)  # fmt: skip
    np.testing.assert_allclose(half, (rigid + full) / 2, atol=1e-6)


def _rodrigues_numpy(b_src, b_tgt):
    """Eq. 6-7 as printed (arccos, normalised cross product), in float64."""
    u, v = b_src / np.linalg.norm(b_src), b_tgt / np.linalg.norm(b_tgt)
    axis = np.cross(u, v)
    phi = axis / np.linalg.norm(axis)
    angle = np.arccos(np.clip(u @ v, -1.0, 1.0))
    hat = np.asarray([[0, -phi[2], phi[1]], [phi[2], 0, -phi[0]], [-phi[1], phi[0], 0]])
    return (
        np.cos(angle) * np.eye(3) + (1 - np.cos(angle)) * np.outer(phi, phi) + np.sin(angle) * hat
    )


def test_vectorised_calibrate_matches_a_double_loop():
    (vertices, j_src, j_tgt, w, a), bones = _random_problem(2, batch=(2,))
    moved = calibrate(vertices, j_src, j_tgt, w, a, bones)
    expected = np.zeros_like(vertices, np.float64)
    for frame in range(vertices.shape[0]):
        for j, vertex in enumerate(vertices[frame].astype(np.float64)):
            for i, (p, c) in enumerate(bones):
                src, tgt = j_src[frame].astype(np.float64), j_tgt[frame].astype(np.float64)
                psi = _rodrigues_numpy(src[p] - src[c], tgt[p] - tgt[c])
                t = tgt[p] - psi @ src[p]  # eq. 8
                delta = tgt[c] - (psi @ src[c] + t)  # eq. 9-10
                expected[frame, j] += a[j, i] * (psi @ vertex + t + w[j, i] * delta)  # 12-13
    np.testing.assert_allclose(moved, expected, atol=2e-5)


DEGENERATE = {  # (b_src, b_tgt)
    "parallel": ([0.3, -0.2, 0.5], [0.6, -0.4, 1.0]),
    "near_parallel": ([0.3, -0.2, 0.5], [0.3, -0.2, 0.5001]),
    "anti_parallel": ([0.3, -0.2, 0.5], [-0.9, 0.6, -1.5]),
    "near_anti_parallel": ([0.0, 0.0, 0.4], [1e-5, 0.0, -0.3]),
    "anti_parallel_axis": ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]),
    "zero_source": ([0.0, 0.0, 0.0], [0.1, 0.2, 0.3]),
    "zero_target": ([0.1, 0.2, 0.3], [0.0, 0.0, 0.0]),
    "both_zero": ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_degenerate_bones_give_rotations_and_finite_gradients(dtype):
    b_src = jnp.asarray([s for s, _ in DEGENERATE.values()], dtype)
    b_tgt = jnp.asarray([t for _, t in DEGENERATE.values()], dtype)
    psi, grads = rotations_and_grads(b_src, b_tgt, _cotangent())
    assert psi.dtype == dtype
    psi32 = psi.astype(jnp.float32)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    assert np.isfinite(psi32).all()
    eye = np.broadcast_to(np.eye(3), psi.shape)
    np.testing.assert_allclose(jnp.swapaxes(psi32, -1, -2) @ psi32, eye, atol=tol)
    np.testing.assert_allclose(jnp.linalg.det(psi32), 1.0, atol=tol)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    rotated = jnp.einsum("nab,nb->na", psi32[:5], b_src[:5].astype(jnp.float32))
    np.testing.assert_allclose(unit(rotated), unit(b_tgt[:5].astype(jnp.float32)), atol=tol)
    np.testing.assert_allclose(psi32[5:], eye[5:], atol=tol)  # zero-length bones: identity
    for grad in grads:
        assert grad.dtype == dtype and np.isfinite(grad.astype(jnp.float32)).all()


def test_gradients_are_continuous_across_the_small_angle_branch():
    # |u x v|^2 = 1e-6 switches to the Taylor branch: angles just either side of it.
    angles = jnp.asarray([0.9e-3, 1.1e-3] * (NUM_PAIRS // 2))
    b_src = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0]), (NUM_PAIRS, 3))
    b_tgt = jnp.stack([jnp.sin(angles), 0.0 * angles, jnp.cos(angles)], axis=-1)
    cotangent = jnp.broadcast_to(_cotangent(1)[0], (NUM_PAIRS, 3, 3))
    _, (grad_src, grad_tgt) = rotations_and_grads(b_src, b_tgt, cotangent)
    np.testing.assert_allclose(grad_src[0], grad_src[1], atol=2e-3)
    np.testing.assert_allclose(grad_tgt[0], grad_tgt[1], atol=2e-3)


@jax.jit
def _calibrate_grads(*args):
    loss = lambda *x: jnp.sum(calibration.calibrate(*x, CHAIN_BONES).astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(*args)


def test_calibrate_gradients_are_finite_on_degenerate_skeletons():
    # Bone 0->1 of zero length, 1->2 anti-parallel, 1->3 unchanged (parallel).
    j_src = CHAIN.at[1].set(CHAIN[0])
    j_tgt = j_src.at[2].set(2.0 * j_src[1] - j_src[2])
    vertices = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)), jnp.float32)
    w, a = 0.5 * jnp.ones((4, 3)), jnp.full((4, 3), 1.0 / 3.0)
    grads = _calibrate_grads(vertices, j_src, j_tgt, w, a)  # bfloat16: see the test above
    assert all(np.isfinite(g).all() for g in grads)


def test_module_rows_of_a_sum_to_one_and_rigid_ablation_has_no_w():
    (vertices, j_src, j_tgt, w, a), bones = _random_problem(4, batch=(2,))
    a_sparse = np.where(a > 0.3, a, 0.0) + np.eye(4)[np.arange(7) % 4]
    a_sparse = a_sparse / a_sparse.sum(-1, keepdims=True)
    module = calibration.Calibration(a_sparse, w, bones)
    variables = module.init(jax.random.key(0), method=module.weights)  # no calibrate traced
    w_now, a_now = module.apply(variables, method=module.weights)
    np.testing.assert_allclose(a_now.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a_now, a_sparse, atol=1e-5)
    chex.assert_trees_all_close(w_now, w)
    shifted = jax.tree.map(lambda x: x + 0.7 * jnp.arange(x.shape[-1]), variables)
    np.testing.assert_allclose(module.apply(shifted, method=module.weights)[1].sum(-1), 1.0,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(
        jax.jit(module.apply)(variables, vertices, j_src, j_tgt),
        calibrate(vertices, j_src, j_tgt, w, a_now, bones),
        atol=1e-5,
    )
    rigid = module.clone(nonrigid=False)
    rigid_vars = rigid.init(jax.random.key(0), method=rigid.weights)
    assert set(rigid_vars["params"]) == {"a_logits"}
    w_rigid, a_rigid = rigid.apply(rigid_vars, method=rigid.weights)
    np.testing.assert_array_equal(w_rigid, 0.0)
    np.testing.assert_allclose(a_rigid, a_now, atol=1e-7)


def test_initialisation_from_the_body_model():
    model = body_model()
    a0, w0 = calibration.initial_weights(model, "h36m17")
    chex.assert_shape([a0, w0], (6890, 16))
    np.testing.assert_allclose(a0.sum(-1), 1.0, atol=1e-5)
    assert w0.min() >= 0.0 and w0.max() <= 1.0
    # A vertex skinned only to SMPL's left knee follows the knee->ankle bone (child left_ankle).
    knee_only = np.nonzero(np.asarray(model.weights)[:, 4] > 0.999)[0]
    assert knee_only.size and np.all(np.argmax(a0[knee_only], -1) == 2)
    # The untrained module on the full body: a target equal to the input changes nothing, a
    # translated target translates the mesh.
    module = calibration.build_calibration(model)
    vertices, joints = calibration.template_source(model, rest=True)
    shift = jnp.asarray([0.1, -0.2, 0.3])

    @jax.jit
    def run(vertices, joints):
        variables = module.init(jax.random.key(0), vertices, joints, joints)
        two = lambda x: jnp.stack([x, x])
        return module.apply(
            variables, two(vertices), two(joints), jnp.stack([joints, joints + shift])
        )

    out = run(vertices, joints)
    np.testing.assert_allclose(out[0], vertices, atol=1e-5)
    np.testing.assert_allclose(out[1], vertices + shift, atol=1e-5)


def test_skeletons_map_every_smpl_joint_and_flops():
    for skeleton in calibration.SKELETONS.values():
        table = skeleton.skinning_to_bones()
        np.testing.assert_allclose(table.sum(-1), 1.0, atol=1e-6)
        assert all(p != c for p, c in skeleton.bones)
    assert calibration.SKELETONS["h36m17"].num_bones == 16
    assert calibration.calibration_flops(6890, 16) == 31 * 6890 * 16 + 21 * 6890 + 60 * 16

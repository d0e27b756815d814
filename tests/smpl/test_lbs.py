"""Tests for lmr_jax.smpl.lbs.forward: shapes, rest pose, rigid motion, shape, gradients, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lmr_jax.geometry import axis_angle_to_matrix
from lmr_jax.smpl import forward
from tests.smpl.conftest import jit_forward, random_rotmats

REST = np.broadcast_to(np.eye(3, dtype=np.float32), (4, 24, 3, 3))


# Batch 4 throughout, so that the tests share compiled executables.
@pytest.mark.parametrize("batch", [(), (4,), (2, 2)])
def test_any_leading_batch_shape(model, batch):
    rng = np.random.default_rng(len(batch))
    betas = rng.normal(size=(*batch, 10)).astype(np.float32)
    rotmats = random_rotmats(rng, (*batch, 24), max_angle=1.0)
    verts, joints = jit_forward(model, betas, rotmats)
    chex.assert_shape(verts, (*batch, 6890, 3))
    chex.assert_shape(joints, (*batch, 24, 3))
    assert verts.dtype == jnp.float32
    flat_v, flat_j = jit_forward(model, betas.reshape(-1, 10), rotmats.reshape(-1, 24, 3, 3))
    np.testing.assert_allclose(verts.reshape(-1, 6890, 3), flat_v, atol=1e-6)
    np.testing.assert_allclose(joints.reshape(-1, 24, 3), flat_j, atol=1e-6)


def test_rest_pose_is_the_template(model):
    verts, joints = jit_forward(model, np.zeros((4, 10), np.float32), REST)
    np.testing.assert_allclose(verts, np.broadcast_to(model.v_template, verts.shape), atol=1e-7)
    np.testing.assert_allclose(joints, np.broadcast_to(model.J_template, joints.shape), atol=1e-7)


def test_global_rotation_rotates_about_the_root_joint(model):
    rng = np.random.default_rng(1)
    betas = rng.normal(size=(4, 10)).astype(np.float32)
    rest_v, rest_j = jit_forward(model, betas, REST)
    rot = Rotation.random(4, random_state=2).as_matrix().astype(np.float32)
    rotmats = np.array(REST)
    rotmats[:, 0] = rot
    verts, joints = jit_forward(model, betas, rotmats)
    root = np.asarray(rest_j[:, :1])
    want_v = np.einsum("nab,nvb->nva", rot, rest_v - root) + root
    want_j = np.einsum("nab,nvb->nva", rot, rest_j - root) + root
    np.testing.assert_allclose(verts, want_v, atol=2e-6)
    np.testing.assert_allclose(joints, want_j, atol=2e-6)


def test_betas_move_joints_with_the_shaped_mesh(model):
    betas = 2.0 * np.random.default_rng(3).normal(size=(4, 10)).astype(np.float32)
    verts, joints = jit_forward(model, betas, REST)
    # In the rest pose the kinematic joints are the regressor applied to the shaped mesh ...
    np.testing.assert_allclose(
        joints, np.einsum("jv,nvc->njc", model.J_regressor, verts), atol=1e-5
    )
    # ... the mesh is the linear shape blend, and the betas did move things.
    shaped = model.v_template + np.einsum("vck,nk->nvc", model.shapedirs, betas)
    np.testing.assert_allclose(verts, shaped, atol=1e-5)
    assert np.abs(np.asarray(joints - model.J_template)).max() > 0.01


def test_pose_moves_joints_down_the_tree_only(model):
    rotmats = np.array(REST)
    rotmats[:, 18] = Rotation.from_rotvec([0.0, 0.0, 1.2]).as_matrix()  # bend the left elbow
    _, joints = jit_forward(model, np.zeros((4, 10), np.float32), rotmats)
    moved = np.linalg.norm(np.asarray(joints[0] - model.J_template), axis=-1) > 1e-6
    assert sorted(np.nonzero(moved)[0]) == [20, 22]
    np.testing.assert_allclose(  # bone lengths are kept
        np.linalg.norm(joints[0, 20] - joints[0, 18]),
        np.linalg.norm(model.J_template[20] - model.J_template[18]),
        rtol=1e-5,
    )


def test_bad_shapes_are_named(model):
    with pytest.raises(ValueError, match=r"rotmats has shape \(2, 23, 3, 3\), expected"):
        forward(model, jnp.zeros((2, 10)), jnp.zeros((2, 23, 3, 3)))
    with pytest.raises(ValueError, match=r"betas has shape \(2, 11\).*at most 10"):
        forward(model, jnp.zeros((2, 11)), jnp.zeros((2, 24, 3, 3)))


def test_fewer_betas_use_the_leading_directions(model):
    betas = np.random.default_rng(4).normal(size=(4, 10)).astype(np.float32)
    betas[:, 6:] = 0.0
    rotmats = random_rotmats(np.random.default_rng(5), (4, 24), max_angle=1.0)
    full_v, full_j = jit_forward(model, betas, rotmats)
    part_v, part_j = jit_forward(model, betas[:, :6], rotmats)
    np.testing.assert_allclose(part_v, full_v, atol=1e-6)
    np.testing.assert_allclose(part_j, full_j, atol=1e-6)


def test_gradients_match_finite_differences(model):
    """Forward and reverse mode against central differences, in float64, along a random
    direction in (axis-angle pose, betas); jitted (eager check_grads takes 20 s)."""
    rng = np.random.default_rng(6)
    point = (rng.normal(size=(2, 24, 3)) * 0.8, rng.normal(size=(2, 10)))
    direction = (rng.normal(size=(2, 24, 3)), rng.normal(size=(2, 10)))
    cotangent = rng.normal(size=(2, 6890 + 24, 3))
    with jax.enable_x64(True):

        def posed(x):
            verts, joints = forward(model, x[1], axis_angle_to_matrix(x[0]))
            return jnp.concatenate([verts, joints], axis=-2)

        # Two compiled programs: the JVP (also gives the primal at the shifted points) and the VJP.
        jvp = jax.jit(lambda x, dx: jax.jvp(posed, (x,), (dx,)))
        vjp = jax.jit(lambda x, ct: jax.vjp(posed, x)[1](ct)[0])
        to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
        x, dx, ct = to64(point), to64(direction), to64(cotangent)
        out, tangent = jvp(x, dx)
        eps = 1e-5
        shifted = lambda sign: jax.tree.map(lambda a, d: a + sign * eps * d, x, dx)
        numeric = (jvp(shifted(1.0), dx)[0] - jvp(shifted(-1.0), dx)[0]) / (2 * eps)
        flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)])
        ct_dot_jdx = np.vdot(ct, tangent)
        jt_ct_dot_dx = np.vdot(flat(vjp(x, ct)), flat(dx))
        assert out.dtype == jnp.float64
        assert np.abs(np.asarray(numeric)).max() > 0.1  # the direction moves the mesh
        np.testing.assert_allclose(tangent, numeric, rtol=0, atol=1e-7)
        np.testing.assert_allclose(jt_ct_dot_dx, ct_dot_jdx, rtol=1e-10)


def test_bfloat16_compute_is_close_to_float32(model):
    rng = np.random.default_rng(7)
    betas = rng.normal(size=(4, 10)).astype(np.float32)
    rotmats = random_rotmats(rng, (4, 24))
    ref_v, ref_j = jit_forward(model, betas, rotmats)
    verts, joints = jit_forward(model, betas.astype(jnp.bfloat16), rotmats.astype(jnp.bfloat16))
    assert verts.dtype == jnp.bfloat16 and joints.dtype == jnp.bfloat16
    # bfloat16 inputs and outputs (8 bits of mantissa: 2-4 mm at 1 m), float32 accumulation.
    assert np.abs(np.asarray(verts, np.float32) - ref_v).max() < 1e-2
    assert np.abs(np.asarray(joints, np.float32) - ref_j).max() < 1e-2


def test_jit_traces_once_per_shape(model):
    rng = np.random.default_rng(8)
    betas = rng.normal(size=(4, 10)).astype(np.float32)
    rotmats = random_rotmats(rng, (4, 24))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def posed(model, betas, rotmats):
        return forward(model, betas, rotmats)

    out = posed(model, betas, rotmats)
    out_again = posed(model, betas + 1.0, rotmats)  # new values, same shapes: no retrace
    assert np.abs(np.asarray(out_again[0] - out[0])).max() > 1e-3
    np.testing.assert_array_equal(out[0], jit_forward(model, betas, rotmats)[0])

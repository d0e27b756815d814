"""Tests for lmr_jax.geometry: rotation conversions, projection and Procrustes alignment."""

from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.spatial.transform import Rotation

from lmr_jax import geometry

# Eager dispatch compiles every primitive on its own (seconds per call on CPU); jitting each public
# function once keeps this file fast and also checks that everything traces.
PUBLIC_NAMES = (
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rot6d_to_matrix",
    "matrix_to_rot6d",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "pose72_to_rotmats",
    "rotmats_to_pose72",
    "weak_perspective_project",
    "procrustes_align",
)
geo = SimpleNamespace(**{name: jax.jit(getattr(geometry, name)) for name in PUBLIC_NAMES})

ATOL = 2e-5


def _random_axis_angle(rng: np.random.Generator, shape, max_angle=np.pi) -> np.ndarray:
    axis = rng.normal(size=(*shape, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=(*shape, 1))
    return (axis * angle).astype(np.float32)


def _random_rotmats(rng: np.random.Generator, n: int) -> np.ndarray:
    return Rotation.random(n, random_state=rng).as_matrix().astype(np.float32)


def _scipy_quat_wxyz(rotation: Rotation) -> np.ndarray:
    """scipy quaternions are (x, y, z, w); reorder and pick the w >= 0 sign."""
    xyzw = rotation.as_quat()
    wxyz = np.concatenate([xyzw[..., 3:], xyzw[..., :3]], axis=-1)
    return np.where(wxyz[..., :1] < 0, -wxyz, wxyz)


def _rotation_distance(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(r1, np.float64) - np.asarray(r2, np.float64)).max(axis=(-2, -1))


# ---------------------------------------------------------------- axis-angle <-> matrix


def test_axis_angle_to_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    aa = _random_axis_angle(rng, (4, 5))
    got = geo.axis_angle_to_matrix(aa)
    chex.assert_shape(got, (4, 5, 3, 3))
    expected = Rotation.from_rotvec(aa.reshape(-1, 3).astype(np.float64)).as_matrix()
    np.testing.assert_allclose(np.asarray(got).reshape(-1, 3, 3), expected, atol=ATOL)


def test_axis_angle_to_matrix_is_orthonormal_with_det_one():
    rng = np.random.default_rng(1)
    aa = _random_axis_angle(rng, (64,), max_angle=3 * np.pi)
    rot = np.asarray(geo.axis_angle_to_matrix(aa), np.float64)
    eye = np.broadcast_to(np.eye(3), rot.shape)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), eye, atol=ATOL)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=ATOL)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-4, 0.05, 0.5, 2.0, 3.0, np.pi - 1e-3])
def test_axis_angle_round_trip(angle):
    rng = np.random.default_rng(2)
    axis = rng.normal(size=(16, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    aa = (axis * angle).astype(np.float32)
    back = geo.matrix_to_axis_angle(geo.axis_angle_to_matrix(aa))
    np.testing.assert_allclose(np.asarray(back), aa, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("angle", [np.pi - 1e-6, np.pi])
def test_axis_angle_round_trip_at_pi(angle):
    # At pi, aa and -aa are the same rotation; float32 may land on either.
    rng = np.random.default_rng(3)
    axis = rng.normal(size=(32, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    aa = (axis * angle).astype(np.float32)
    back = np.asarray(geo.matrix_to_axis_angle(geo.axis_angle_to_matrix(aa)))
    error = np.minimum(np.abs(back - aa).max(-1), np.abs(back + aa).max(-1))
    assert error.max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(back, axis=-1), np.pi, atol=1e-5)


def test_matrix_to_axis_angle_matches_scipy_including_near_pi():
    rng = np.random.default_rng(4)
    axis = rng.normal(size=(40, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 20), np.pi - rng.uniform(1e-4, 1e-2, 20)])
    rotvec = axis * angles[:, None]
    rot = Rotation.from_rotvec(rotvec).as_matrix().astype(np.float32)
    got = np.asarray(geo.matrix_to_axis_angle(rot))
    np.testing.assert_allclose(got, rotvec, atol=1e-4)


def test_matrix_to_axis_angle_at_identity_is_exactly_zero():
    got = geo.matrix_to_axis_angle(jnp.eye(3))
    np.testing.assert_array_equal(np.asarray(got), np.zeros(3))


# ---------------------------------------------------------------- quaternions


def test_axis_angle_to_quaternion_matches_scipy():
    rng = np.random.default_rng(5)
    aa = _random_axis_angle(rng, (50,))
    got = np.asarray(geo.axis_angle_to_quaternion(aa))
    expected = _scipy_quat_wxyz(Rotation.from_rotvec(aa.astype(np.float64)))
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("largest", ["w", "x", "y", "z"])
def test_matrix_to_quaternion_each_branch(largest):
    # Rotations whose largest quaternion component is w, x, y or z exercise all four branches.
    rng = np.random.default_rng(6)
    quats = rng.normal(size=(32, 4)) * 0.3
    quats[:, "wxyz".index(largest)] = 1.0 + rng.uniform(size=32)
    quats *= rng.choice([-1.0, 1.0], size=(32, 1))
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    xyzw = np.concatenate([quats[:, 1:], quats[:, :1]], axis=-1)
    rot = Rotation.from_quat(xyzw).as_matrix().astype(np.float32)
    got = np.asarray(geo.matrix_to_quaternion(rot))
    expected = np.where(quats[:, :1] < 0, -quats, quats)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    np.testing.assert_allclose(np.asarray(geo.quaternion_to_matrix(got)), rot, atol=ATOL)


def test_matrix_to_quaternion_at_pi_rotations():
    rot = np.stack([np.diag(d) for d in ([1, -1, -1], [-1, 1, -1], [-1, -1, 1])]).astype(np.float32)
    got = np.asarray(geo.matrix_to_quaternion(rot))
    np.testing.assert_allclose(np.abs(got), np.eye(4)[1:], atol=1e-7)


def test_quaternion_sign_does_not_matter():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(20, 4)).astype(np.float32)
    aa_pos = geo.quaternion_to_axis_angle(q)
    aa_neg = geo.quaternion_to_axis_angle(-q)
    np.testing.assert_allclose(np.asarray(aa_pos), np.asarray(aa_neg), atol=1e-6)
    rot_pos = geo.quaternion_to_matrix(q)
    rot_neg = geo.quaternion_to_matrix(-q)
    np.testing.assert_allclose(np.asarray(rot_pos), np.asarray(rot_neg), atol=1e-6)


def test_quaternion_to_matrix_normalises_and_matches_scipy():
    rng = np.random.default_rng(8)
    q = rng.normal(size=(20, 4)) * 3.0
    got = geo.quaternion_to_matrix(q.astype(np.float32))
    expected = Rotation.from_quat(np.concatenate([q[:, 1:], q[:, :1]], axis=-1)).as_matrix()
    np.testing.assert_allclose(np.asarray(got), expected, atol=ATOL)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-3, 1.0, np.pi - 1e-3])
def test_quaternion_axis_angle_round_trip(angle):
    rng = np.random.default_rng(9)
    axis = rng.normal(size=(16, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    aa = (axis * angle).astype(np.float32)
    q = geo.axis_angle_to_quaternion(aa)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(q), axis=-1), 1.0, atol=1e-6)
    back = geo.quaternion_to_axis_angle(q)
    np.testing.assert_allclose(np.asarray(back), aa, atol=ATOL, rtol=1e-5)
    back_neg = geo.quaternion_to_axis_angle(-q)
    np.testing.assert_allclose(np.asarray(back_neg), aa, atol=ATOL, rtol=1e-5)


def test_matrix_quaternion_round_trip():
    rot = _random_rotmats(np.random.default_rng(10), 100)
    back = geo.quaternion_to_matrix(geo.matrix_to_quaternion(rot))
    assert _rotation_distance(back, rot).max() < ATOL


# ---------------------------------------------------------------- 6D


def test_rot6d_layout_is_row_major_3x2():
    # a1 = column (0, 1, 0), a2 = column (0, 0, 1): row-major (3, 2) is [[0, 0], [1, 0], [0, 1]].
    x = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    expected = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.asarray(geo.rot6d_to_matrix(x)), expected, atol=1e-7)
    np.testing.assert_allclose(np.asarray(geo.matrix_to_rot6d(jnp.asarray(expected))), x)
    # VIBE's identity rotation in its mean parameters reads [1, 0, 0, 1, 0, 0].
    identity_6d = geo.matrix_to_rot6d(jnp.eye(3))
    np.testing.assert_array_equal(np.asarray(identity_6d), [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])


def test_rot6d_gram_schmidt_of_non_orthogonal_columns():
    # a1 = (2, 0, 0), a2 = (1, 3, 0) -> b1 = x axis, b2 = y axis, b3 = z axis.
    x = jnp.array([2.0, 1.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(np.asarray(geo.rot6d_to_matrix(x)), np.eye(3), atol=1e-6)


def test_rot6d_round_trip_and_random_inputs_give_rotations():
    rng = np.random.default_rng(11)
    rot = _random_rotmats(rng, 50).reshape(5, 10, 3, 3)
    back = geo.rot6d_to_matrix(geo.matrix_to_rot6d(rot))
    chex.assert_shape(back, (5, 10, 3, 3))
    np.testing.assert_allclose(np.asarray(back), rot, atol=ATOL)

    x = rng.normal(size=(50, 6)).astype(np.float32)
    got = np.asarray(geo.rot6d_to_matrix(x), np.float64)
    np.testing.assert_allclose(
        got @ np.swapaxes(got, -1, -2), np.broadcast_to(np.eye(3), got.shape), atol=ATOL
    )
    np.testing.assert_allclose(np.linalg.det(got), 1.0, atol=ATOL)
    # The first column is the normalised a1 = x[..., 0::2].
    a1 = x[:, 0::2] / np.linalg.norm(x[:, 0::2], axis=-1, keepdims=True)
    np.testing.assert_allclose(got[:, :, 0], a1, atol=ATOL)


# ---------------------------------------------------------------- SMPL pose wrappers


def test_pose72_wrappers():
    rng = np.random.default_rng(12)
    pose = _random_axis_angle(rng, (3, 24), max_angle=3.0).reshape(3, 72)
    rotmats = geo.pose72_to_rotmats(pose)
    chex.assert_shape(rotmats, (3, 24, 3, 3))
    np.testing.assert_allclose(
        np.asarray(rotmats[:, 5]), np.asarray(geo.axis_angle_to_matrix(pose[:, 15:18])), atol=1e-6
    )
    back = geo.rotmats_to_pose72(rotmats)
    chex.assert_shape(back, (3, 72))
    np.testing.assert_allclose(np.asarray(back), pose, atol=ATOL)


# ---------------------------------------------------------------- gradients


def test_axis_angle_to_matrix_numerical_gradients():
    aa = jnp.asarray(_random_axis_angle(np.random.default_rng(13), (4,)))
    check_grads(
        geo.axis_angle_to_matrix, (aa,), order=1, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2
    )
    check_grads(geo.axis_angle_to_matrix, (jnp.zeros(3),), order=1, modes=["fwd", "rev"], atol=1e-2)


def test_axis_angle_to_matrix_gradient_at_zero_is_exact():
    # dR/d(aa_k) at 0 is the generator [e_k]_x, so the gradient of <W, R> is the skew part of W.
    weights = jnp.asarray(np.random.default_rng(14).normal(size=(3, 3)), jnp.float32)
    grad = jax.jit(jax.grad(lambda aa: jnp.sum(weights * geometry.axis_angle_to_matrix(aa))))(
        jnp.zeros(3)
    )
    expected = jnp.array(
        [
            weights[2, 1] - weights[1, 2],
            weights[0, 2] - weights[2, 0],
            weights[1, 0] - weights[0, 1],
        ]
    )
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize(
    "fn, arg",
    [
        (geometry.axis_angle_to_matrix, jnp.zeros(3)),
        (geometry.axis_angle_to_quaternion, jnp.zeros(3)),
        (geometry.quaternion_to_axis_angle, jnp.array([1.0, 0.0, 0.0, 0.0])),
        (geometry.matrix_to_axis_angle, jnp.eye(3)),
        (geometry.matrix_to_quaternion, jnp.eye(3)),
        (geometry.rot6d_to_matrix, jnp.zeros(6)),
        (geometry.rotmats_to_pose72, jnp.broadcast_to(jnp.eye(3), (24, 3, 3))),
    ],
)
def test_gradients_are_finite_at_degenerate_points(fn, arg):
    grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(fn(x) + 0.3))))(arg)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_rot6d_to_matrix_numerical_gradients():
    x = jnp.asarray(np.random.default_rng(15).normal(size=(3, 6)), jnp.float32)
    check_grads(geo.rot6d_to_matrix, (x,), order=1, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2)


def test_weak_perspective_project_values_and_gradients():
    points = jnp.array([[[1.0, 2.0, 5.0], [-0.5, 0.25, 3.0]]])
    cam = jnp.array([[2.0, 0.1, -0.2]])
    got = geo.weak_perspective_project(points, cam)
    chex.assert_shape(got, (1, 2, 2))
    np.testing.assert_allclose(np.asarray(got), [[[2.2, 3.6], [-0.8, 0.1]]], atol=1e-6)
    # The paper's form s * X + t' is the same camera with t' = s * t.
    paper = cam[:, None, :1] * points[..., :2] + cam[:, None, :1] * cam[:, None, 1:]
    np.testing.assert_allclose(np.asarray(got), np.asarray(paper), atol=1e-6)
    check_grads(geo.weak_perspective_project, (points, cam), order=1, modes=["fwd", "rev"])


# ---------------------------------------------------------------- Procrustes


def _similarity(rng, shape):
    rot = Rotation.random(int(np.prod(shape)), random_state=rng).as_matrix().reshape(*shape, 3, 3)
    scale = rng.uniform(0.5, 2.0, size=shape)
    trans = rng.normal(size=(*shape, 3))
    return rot, scale, trans


def test_procrustes_recovers_known_similarity():
    rng = np.random.default_rng(16)
    pred = rng.normal(size=(2, 3, 14, 3))
    rot, scale, trans = _similarity(rng, (2, 3))
    gt = scale[..., None, None] * np.einsum("...ij,...nj->...ni", rot, pred) + trans[..., None, :]
    aligned = geo.procrustes_align(pred.astype(np.float32), gt.astype(np.float32))
    chex.assert_shape(aligned, (2, 3, 14, 3))
    np.testing.assert_allclose(np.asarray(aligned), gt, atol=1e-4)


def test_procrustes_never_uses_a_reflection():
    rng = np.random.default_rng(17)
    gt = rng.normal(size=(4, 14, 3)).astype(np.float32)
    mirrored = gt * np.array([-1.0, 1.0, 1.0], np.float32)
    aligned = np.asarray(geo.procrustes_align(mirrored, gt), np.float64)
    # A reflection would fit exactly; a proper rotation cannot.
    assert np.linalg.norm(aligned - gt, axis=-1).mean() > 0.1
    # Recover the linear map mirrored -> aligned (centred) and check it is s * R with det(R) = +1.
    for src, dst in zip(mirrored, aligned, strict=True):
        src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
        linear, *_ = np.linalg.lstsq(src_c, dst_c, rcond=None)
        assert np.linalg.det(linear) > 0


def test_procrustes_weights_ignore_masked_joints():
    rng = np.random.default_rng(18)
    pred = rng.normal(size=(3, 10, 3))
    rot, scale, trans = _similarity(rng, (3,))
    gt = scale[:, None, None] * np.einsum("bij,bnj->bni", rot, pred) + trans[:, None, :]
    gt[:, :2] += 5.0  # corrupt two joints, then mask them out
    weights = np.ones((3, 10), np.float32)
    weights[:, :2] = 0.0
    aligned = np.asarray(
        geo.procrustes_align(pred.astype(np.float32), gt.astype(np.float32), weights)
    )
    np.testing.assert_allclose(aligned[:, 2:], gt[:, 2:], atol=1e-4)
    unweighted = np.asarray(geo.procrustes_align(pred.astype(np.float32), gt.astype(np.float32)))
    assert np.abs(unweighted[:, 2:] - gt[:, 2:]).max() > 0.1


def test_public_names_and_batch_shapes():
    assert all(callable(getattr(geometry, name)) for name in PUBLIC_NAMES)
    aa = _random_axis_angle(np.random.default_rng(19), (2, 3))
    rot = geo.axis_angle_to_matrix(aa)
    chex.assert_shape(rot, (2, 3, 3, 3))
    chex.assert_type(rot, jnp.float32)
    chex.assert_shape(geo.matrix_to_axis_angle(rot), (2, 3, 3))
    chex.assert_shape(geo.matrix_to_quaternion(rot), (2, 3, 4))
    chex.assert_shape(geo.matrix_to_rot6d(rot), (2, 3, 6))
    chex.assert_shape(geo.axis_angle_to_quaternion(aa), (2, 3, 4))
    # Unbatched inputs work too.
    chex.assert_shape(geo.axis_angle_to_matrix(aa[0, 0]), (3, 3))
    chex.assert_shape(geo.procrustes_align(aa[0], aa[1]), (3, 3))

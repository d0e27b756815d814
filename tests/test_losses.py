"""Tests of the training losses against hand-computed values, with masked labels."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import geometry, losses, smpl
from lmr_jax.models import smpl_outputs

B, T = 1, 2


def test_keypoint_2d_loss_is_confidence_weighted_over_visible_joints():
    pred = jnp.array([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    gt = jnp.array([[[1.0, 0.0, 1.0], [1.0, 3.0, 0.5], [-5.0, -5.0, 0.0]]])  # joint 2 missing
    # l1: joint 0 mean(|-1|, 0) * 1 = 0.5, joint 1 mean(0, 2) * 0.5 = 0.5; 2 visible joints.
    np.testing.assert_allclose(losses.keypoint_2d_loss(pred, gt, "l1"), 0.5, rtol=1e-6)
    # l2: joint 0 mean(1, 0) * 1 = 0.5, joint 1 mean(0, 4) * 0.5 = 1.0.
    np.testing.assert_allclose(losses.keypoint_2d_loss(pred, gt, "l2"), 0.75, rtol=1e-6)
    nothing_visible = gt.at[..., 2].set(0.0)
    assert losses.keypoint_2d_loss(pred, nothing_visible, "l1") == 0.0


def test_keypoint_3d_loss_centres_on_the_pelvis_and_masks_frames():
    gt = jnp.array([[[0.0, 0.0, 0.0, 1], [1.0, 0.0, 0.0, 1], [0.0, 2.0, 0.0, 1]]])
    gt = jnp.stack([gt[0], gt[0] * 7.0])  # [2 frames, 3 joints, 4]
    pred = gt[..., :3] + jnp.array([0.3, -0.2, 5.0])  # a translation only
    has = jnp.array([1.0, 1.0])
    assert losses.keypoint_3d_loss(pred, gt, has, "l1", None, (0,)) < 1e-6
    # Move joint 2 of frame 0 by (0, 0, 0.6): one of 6 valid joints, mean over xyz 0.2.
    moved = pred.at[0, 2, 2].add(0.6)
    np.testing.assert_allclose(
        losses.keypoint_3d_loss(moved, gt, has, "l1", None, (0,)), 0.2 / 6, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.keypoint_3d_loss(moved, gt, has, "l2", None, (0,)), 0.12 / 6, rtol=1e-5
    )
    # Without 3D labels on frame 0 the error there does not count, and 3 joints remain.
    garbage = moved.at[0].add(100.0 * jnp.arange(9.0).reshape(3, 3))
    no_first = jnp.array([0.0, 1.0])
    assert losses.keypoint_3d_loss(garbage, gt, no_first, "l1", None, (0,)) < 1e-6
    # A joint with zero 3D confidence does not count either.
    assert losses.keypoint_3d_loss(moved, gt.at[0, 2, 3].set(0.0), has, "l1", None, (0,)) < 1e-6


def test_common14_selection_uses_the_mid_hips_and_ignores_other_joints():
    joints, pelvis = losses.kp3d_selection("vibe49", "common14")
    assert joints == tuple(range(25, 39)) and pelvis == (2, 3)
    assert losses.kp3d_selection("vibe49", "all")[1] == smpl.get_layout("vibe49").pelvis
    rng = np.random.default_rng(0)
    gt = jnp.asarray(np.concatenate([rng.normal(size=(2, 49, 3)), np.ones((2, 49, 1))], -1))
    pred = gt[..., :3].at[:, :25].add(3.0).at[:, 39:].add(-2.0) + 0.5  # other joints, shift
    has = jnp.ones(2)
    assert losses.keypoint_3d_loss(pred, gt, has, "l1", joints, pelvis) < 1e-6
    assert losses.keypoint_3d_loss(pred, gt, has, "l1", None, pelvis) > 0.1
    with pytest.raises(ValueError, match="common14"):
        losses.kp3d_selection("smpl24", "common14")


def test_smpl_losses_compare_rotation_matrices_on_labelled_frames():
    angle = 0.5
    gt_pose = jnp.zeros((2, 72))
    rotmats = jnp.broadcast_to(jnp.eye(3), (2, 24, 3, 3))
    rz = jnp.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1.0]])  # fmt: skip
    rotmats = rotmats.at[1, 5].set(rz)
    betas = jnp.zeros((2, 10)).at[1, 0].set(2.0)
    gt_shape = jnp.zeros((2, 10))
    smpl_losses = jax.jit(losses.smpl_losses, static_argnums=5)
    only_first = jnp.array([1.0, 0.0])
    pose, shape = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_first, "l1")
    assert pose < 1e-6 and shape == 0.0
    only_second = jnp.array([0.0, 1.0])
    pose, shape = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_second, "l1")
    diff = np.abs(np.asarray(rz) - np.eye(3)).sum()  # one joint of 24, 9 entries each
    np.testing.assert_allclose(pose, diff / (24 * 9), rtol=1e-5)
    np.testing.assert_allclose(shape, 2.0 / 10, rtol=1e-6)
    pose, shape = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_second, "l2")
    diff2 = np.square(np.asarray(rz) - np.eye(3)).sum()
    np.testing.assert_allclose(pose, diff2 / (24 * 9), rtol=1e-5)
    np.testing.assert_allclose(shape, 4.0 / 10, rtol=1e-6)
    none = jnp.zeros(2)
    assert smpl_losses(rotmats, betas, gt_pose, gt_shape, none, "l1") == (0.0, 0.0)


def _batch(rng, has_smpl, has_kp3d):
    return {
        "kp2d": jnp.asarray(np.concatenate(
            [rng.normal(size=(B, T, 49, 2)), rng.uniform(size=(B, T, 49, 1))], -1), jnp.float32),
        "kp3d": jnp.asarray(np.concatenate(
            [rng.normal(size=(B, T, 49, 3)), np.ones((B, T, 49, 1))], -1), jnp.float32),
        "pose": jnp.asarray(rng.normal(scale=0.3, size=(B, T, 72)), jnp.float32),
        "shape": jnp.asarray(rng.normal(size=(B, T, 10)), jnp.float32),
        "has_smpl": jnp.asarray(has_smpl, jnp.float32).reshape(B, T),
        "has_kp3d": jnp.asarray(has_kp3d, jnp.float32).reshape(B, T),
    }  # fmt: skip


@pytest.fixture(scope="module")
def body():
    return smpl.procedural(0)


@pytest.fixture(scope="module")
def outputs(body):
    """Model-like outputs of 3 iterations, built from random parameters through the body model."""
    rng = np.random.default_rng(1)
    axis_angle = jnp.asarray(rng.normal(scale=0.3, size=(3, B, T, 24, 3)), jnp.float32)
    pose6d = jax.jit(lambda a: geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(a)))(
        axis_angle
    )
    betas = jnp.asarray(rng.normal(size=(3, B, T, 10)), jnp.float32)
    cam = jnp.asarray([0.9, 0.1, 0.0] + rng.normal(scale=0.05, size=(3, B, T, 3)), jnp.float32)
    build = jax.jit(lambda p, b, c: smpl_outputs(body, p, b, c, "vibe49"))
    return build(pose6d, betas, cam), build, (pose6d, betas, cam)


def test_total_is_the_weighted_sum_of_the_terms(body, outputs):
    out, _, _ = outputs
    config = losses.default_loss_config()
    batch = _batch(np.random.default_rng(2), [1, 0], [0, 1])
    total, terms = jax.jit(lambda o, b: losses.compute_losses(o, b, config, body))(out, batch)
    assert set(terms) == {"kp2d", "kp3d", "pose", "shape"}
    want = 300 * terms["kp2d"] + 300 * terms["kp3d"] + 60 * terms["pose"] + 0.06 * terms["shape"]
    np.testing.assert_allclose(total, want, rtol=1e-6)
    assert all(float(v) > 0 for v in terms.values())
    # The SMPL terms see frame 0 only: equal to the loss on that frame alone.
    first = np.asarray(batch["has_smpl"][0] == 1)
    gt_rotmats = geometry.pose72_to_rotmats(batch["pose"][:, first])
    pose = np.mean(np.abs(np.asarray(out["rotmats"][:, first]) - np.asarray(gt_rotmats)))
    np.testing.assert_allclose(terms["pose"], pose, rtol=1e-5)


def test_all_iterations_adds_the_loss_of_every_iteration(body, outputs):
    out, build, (pose6d, betas, cam) = outputs
    batch = _batch(np.random.default_rng(3), [1, 1], [1, 0])
    config = losses.default_loss_config()
    config.all_iterations = True
    config.kp3d_joints = "all"
    _, terms = jax.jit(lambda o: losses.compute_losses(o, batch, config, body))(out)
    final_only = losses.default_loss_config()
    final_only.kp3d_joints = "all"
    final_loss = jax.jit(lambda o: losses.compute_losses(o, batch, final_only, body)[1])
    want = {k: 0.0 for k in terms}
    for v in range(3):
        # Rolled so that iteration v is the last one, whose outputs go through the body model.
        rolled = build(*(jnp.roll(x, 2 - v, axis=0) for x in (pose6d, betas, cam)))
        for k, value in final_loss(rolled).items():
            want[k] += value
    chex.assert_trees_all_close(terms, want, rtol=1e-4)


def test_gradients_are_finite_even_without_any_label(body, outputs):
    out, _, _ = outputs
    batch = _batch(np.random.default_rng(4), [0, 0], [0, 0])
    batch["kp2d"] = batch["kp2d"].at[..., 2].set(0.0)
    config = losses.default_loss_config()
    keys = ("rotmats", "betas", "joints3d", "kp2d")

    def total(preds):
        return losses.compute_losses(dict(out, **preds), batch, config, body)[0]

    value, grads = jax.jit(jax.value_and_grad(total))({k: out[k] for k in keys})
    assert value == 0.0
    chex.assert_tree_all_finite(grads)


def test_bad_loss_config_is_refused(body, outputs):
    config = losses.default_loss_config()
    config.norm = "huber"
    with pytest.raises(ValueError, match="huber"):
        losses.compute_losses(outputs[0], _batch(np.random.default_rng(5), [1, 1], [1, 1]),
                              config, body)  # fmt: skip

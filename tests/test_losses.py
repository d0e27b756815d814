"""Tests of the training losses against hand-computed values, with masked labels."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import geometry, losses, smpl
from lmr_jax.models import smpl_outputs

B, T = 1, 2


def test_keypoint_2d_loss_averages_over_all_joints_missing_ones_included():
    pred = jnp.array([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    gt = jnp.array([[[1.0, 0.0, 1.0], [1.0, 3.0, 0.5], [-5.0, -5.0, 0.0]]])  # joint 2 missing
    # l1: joint 0 mean(|-1|, 0) * 1 = 0.5, joint 1 mean(0, 2) * 0.5 = 0.5, joint 2 0; 3 joints.
    np.testing.assert_allclose(losses.keypoint_2d_loss(pred, gt, "l1"), 1.0 / 3, rtol=1e-6)
    # mse: joint 0 mean(1, 0) * 1 = 0.5, joint 1 mean(0, 4) * 0.5 = 1.0.
    np.testing.assert_allclose(losses.keypoint_2d_loss(pred, gt, "mse"), 1.5 / 3, rtol=1e-6)
    nothing_visible = gt.at[..., 2].set(0.0)
    assert losses.keypoint_2d_loss(pred, nothing_visible, "l1") == 0.0
    # The padding of a short video is neither an error nor a joint of the denominator.
    two = jnp.stack([pred[0], pred[0] + 9.0]), jnp.stack([gt[0], gt[0]])
    np.testing.assert_allclose(
        losses.keypoint_2d_loss(*two, "l1", frames=jnp.array([1.0, 0.0])), 1.0 / 3, rtol=1e-6
    )


def vibe_keypoint_loss(pred, gt):
    """VIBE's VIBELoss.keypoint_loss (lib/core/loss.py), written out in numpy: conf times the
    element-wise MSE, averaged over every element of [N, J, 2]."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    conf = gt[..., -1:]
    return (conf * np.square(pred - gt[..., :-1])).mean()


def test_2d_loss_equals_vibes_formula_and_does_not_depend_on_the_device_split():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(8, 3, 49, 2)).astype(np.float32)
    gt = np.concatenate([rng.normal(size=(8, 3, 49, 2)), rng.uniform(size=(8, 3, 49, 1))], -1)
    gt[:5, ..., 2] *= rng.uniform(size=(5, 3, 49)) > 0.7  # uneven visibility over devices
    gt = gt.astype(np.float32)
    want = vibe_keypoint_loss(pred, gt)
    np.testing.assert_allclose(losses.keypoint_2d_loss(pred, gt, "mse"), want, rtol=1e-5)
    per_device = jax.pmap(
        lambda p, g: jax.lax.pmean(losses.keypoint_2d_loss(p, g, "mse", axis_name="d"), "d"),
        axis_name="d",
    )(pred[:, None], gt[:, None])
    np.testing.assert_allclose(per_device, want, rtol=1e-5)


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
    terms = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_first, "l1")
    assert terms["pose"] < 1e-6 and terms["shape"] == 0.0
    only_second = jnp.array([0.0, 1.0])
    terms = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_second, "l1")
    diff = np.abs(np.asarray(rz) - np.eye(3)).sum()  # one joint of 24, 9 entries each
    np.testing.assert_allclose(terms["pose"], diff / (24 * 9), rtol=1e-5)
    np.testing.assert_allclose(terms["shape"], 2.0 / 10, rtol=1e-6)
    terms = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_second, "mse")
    diff2 = np.square(np.asarray(rz) - np.eye(3)).sum()
    np.testing.assert_allclose(terms["pose"], diff2 / (24 * 9), rtol=1e-5)
    np.testing.assert_allclose(terms["shape"], 4.0 / 10, rtol=1e-6)
    # Eq. 2: one Euclidean norm over the frame's [R - R_gt, beta - beta_gt].
    terms = smpl_losses(rotmats, betas, gt_pose, gt_shape, only_second, "euclidean")
    assert set(terms) == {"smpl"}
    np.testing.assert_allclose(terms["smpl"], np.sqrt(diff2 + 4.0), rtol=1e-5)
    none = jnp.zeros(2)
    assert smpl_losses(rotmats, betas, gt_pose, gt_shape, none, "l1") == {"pose": 0, "shape": 0}


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


def vibe_loss(out, batch):
    """VIBE's generator loss without its motion discriminator (lib/core/loss.py VIBELoss with
    configs/config.yaml's weights), in numpy: 2D over every frame, 3D and SMPL over the frames
    whose w_3d / w_smpl are set, all MSE."""
    f64 = lambda x: np.asarray(x, np.float64).reshape(-1, *np.shape(x)[2:])
    w_3d, w_smpl = f64(batch["has_kp3d"]) > 0, f64(batch["has_smpl"]) > 0
    loss_2d = vibe_keypoint_loss(f64(out["kp2d"]), f64(batch["kp2d"])) * 300.0
    pred_3d, real_3d = f64(out["joints3d"])[w_3d, 25:39], f64(batch["kp3d"])[w_3d, 25:39, :3]
    pred_3d = pred_3d - (pred_3d[:, 2:3] + pred_3d[:, 3:4]) / 2
    real_3d = real_3d - (real_3d[:, 2:3] + real_3d[:, 3:4]) / 2
    loss_3d = np.square(pred_3d - real_3d).mean() * 300.0
    gt_rotmats = f64(geometry.pose72_to_rotmats(batch["pose"]))[w_smpl]
    loss_pose = np.square(f64(out["rotmats"])[w_smpl] - gt_rotmats).mean() * 60.0
    loss_shape = np.square(f64(out["betas"])[w_smpl] - f64(batch["shape"])[w_smpl]).mean() * 0.06
    return loss_2d + loss_3d + loss_pose + loss_shape


def lmr_paper_loss(out, batch):
    """Eq. 2-5 of the LMR paper with the lmr_paper preset's weights, in numpy: per-frame Euclidean
    norm of the SMPL parameter difference, mean per-joint L1 norms of 3D (14 common joints,
    confidence-weighted, mid-hips centred) and 2D (confidence-weighted, all joints)."""
    f64 = lambda x: np.asarray(x, np.float64).reshape(-1, *np.shape(x)[2:])
    w_3d, w_smpl = f64(batch["has_kp3d"]) > 0, f64(batch["has_smpl"]) > 0
    gt2d = f64(batch["kp2d"])
    l2d = (gt2d[..., 2] * np.abs(f64(out["kp2d"]) - gt2d[..., :2]).sum(-1)).mean()
    pred3d, gt3d = f64(out["joints3d"])[w_3d, 25:39], f64(batch["kp3d"])[w_3d, 25:39]
    centre = lambda j: j - j[:, 2:4].mean(1, keepdims=True)
    per_joint = np.abs(centre(pred3d) - centre(gt3d[..., :3])).sum(-1)
    l3d = (gt3d[..., 3] * per_joint).sum() / (gt3d[..., 3] > 0).sum()
    gt_rotmats = f64(geometry.pose72_to_rotmats(batch["pose"]))[w_smpl]
    d_pose = (f64(out["rotmats"])[w_smpl] - gt_rotmats).reshape(-1, 216)
    d_shape = f64(out["betas"])[w_smpl] - f64(batch["shape"])[w_smpl]
    l_smpl = np.linalg.norm(np.concatenate([d_pose, d_shape], -1), axis=-1).mean()
    return 60.0 * l_smpl + 300.0 * l3d + 300.0 * l2d


@pytest.mark.parametrize(("preset", "reference"), [("vibe", vibe_loss),
                                                   ("lmr_paper", lmr_paper_loss)])  # fmt: skip
def test_presets_compute_the_published_losses(body, outputs, preset, reference):
    out, _, _ = outputs
    batch = _batch(np.random.default_rng(6), [1, 0], [1, 1])
    batch["kp3d"] = batch["kp3d"].at[0, 1, 30, 3].set(0.0)  # VIBE ignores 3D confidences
    batch["kp2d"] = batch["kp2d"].at[0, 0, :20, 2].set(0.0)  # missing 2D joints count as 0
    config = losses.default_loss_config(preset)
    total, _ = jax.jit(lambda o: losses.compute_losses(o, batch, config, body))(out)
    np.testing.assert_allclose(total, reference(out, batch), rtol=1e-4)


def test_a_field_overrides_its_preset_and_bad_values_are_refused(body, outputs):
    config = losses.default_loss_config("vibe")
    assert losses.resolve(config).w_2d == 300.0 and losses.resolve(config).param_norm == "mse"
    config.w_2d = 10.0
    settings = losses.resolve(config)
    assert (settings.w_2d, settings.w_3d, settings.keypoint_norm) == (10.0, 300.0, "mse")
    bad = losses.default_loss_config("vibe")
    bad.param_norm = "huber"
    with pytest.raises(ValueError, match="loss.param_norm is 'huber'"):
        losses.compute_losses(outputs[0], _batch(np.random.default_rng(5), [1, 1], [1, 1]),
                              bad, body)  # fmt: skip
    unknown = losses.default_loss_config("vibe")
    unknown.preset = "spin"
    with pytest.raises(ValueError, match="loss.preset is 'spin'"):
        losses.resolve(unknown)

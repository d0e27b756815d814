"""PC-HMR's 2D-to-3D lifter: input normalisation and layout by value, training, checkpoint."""

import jax
import numpy as np
import pytest

from lmr_jax import geometry, smpl
from lmr_jax.models import lifter
from tests.models.small_models import body_model

normalize = jax.jit(lifter.normalize_keypoints)


def _keypoints(seed=0, batch=(2,)):
    """vibe49 keypoints [*batch, 49, 3], every joint visible."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-0.8, 0.8, size=(*batch, 49, 2))
    return np.concatenate([xy, np.ones((*batch, 49, 1))], -1).astype(np.float32)


def test_input_joints_are_the_common_14_of_vibe49():
    names = [smpl.get_layout("vibe49").joint_names[i] for i in lifter.INPUT_SLOTS]
    assert names[:6] == ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee",
                         "left_ankle"]  # fmt: skip
    assert names[12:] == ["neck_lsp", "head_top_lsp"]
    assert [names[i] for i in lifter.INPUT_HIPS] == ["right_hip", "left_hip"]


def test_normalisation_by_value():
    kp2d = _keypoints()
    out = np.asarray(normalize(kp2d))
    assert out.shape == (2, 42)
    xy = kp2d[:, 25:39, :2].astype(np.float64)
    centred = xy - xy[:, [2, 3]].mean(1, keepdims=True)
    rms = np.sqrt((centred**2).sum((1, 2)) / 14)[:, None, None]
    np.testing.assert_allclose(out[:, :28], (centred / rms).reshape(2, 28), atol=1e-5)
    np.testing.assert_allclose(out[:, 28:], 1.0)
    # Invariant to the camera's scale and translation (x' = s x + t).
    moved = kp2d.copy()
    moved[..., :2] = 0.3 * moved[..., :2] + np.asarray([0.2, -0.1], np.float32)
    np.testing.assert_allclose(np.asarray(normalize(moved)), out, atol=1e-4)


def test_missing_keypoints_are_zero_with_their_flag_and_do_not_move_the_rest():
    kp2d = _keypoints(1, (1,))
    hidden = kp2d.copy()
    hidden[0, 25 + 7] = [0.0, 0.0, 0.0]  # right elbow missing
    hidden[0, 25 + 2] = [0.0, 0.0, 0.0]  # right hip missing: centre on the visible mean
    out = np.asarray(normalize(hidden))[0]
    np.testing.assert_array_equal(out[28:][[2, 7]], 0.0)
    assert out[28:].sum() == 12
    np.testing.assert_array_equal(out[:28].reshape(14, 2)[[2, 7]], 0.0)
    visible = [j for j in range(14) if j not in (2, 7)]
    xy = kp2d[0, 25:39, :2][visible].astype(np.float64)
    centred = xy - xy.mean(0)
    expected = centred / np.sqrt((centred**2).sum() / 12)
    np.testing.assert_allclose(out[:28].reshape(14, 2)[visible], expected, atol=1e-5)


def test_tiny_lifter_learns_and_its_checkpoint_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(64, lifter.INPUT_DIM)).astype(np.float32)
    mix = rng.normal(size=(lifter.INPUT_DIM, 16 * 3)).astype(np.float32) * 0.05
    targets = np.concatenate([np.zeros((64, 1, 3)), (inputs @ mix).reshape(64, 16, 3)], 1)
    config = lifter.default_config()
    config.model.update(hidden_size=32, dropout=0.0)
    config.optim.update(batch_size=64, num_steps=30, lr=3e-3)
    trained, history = lifter.train_lifter(inputs, targets.astype(np.float32), config,
                                           str(tmp_path))  # fmt: skip
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    loaded = lifter.load_lifter(str(tmp_path))
    assert loaded.model.to_dict() == config.model.to_dict()
    kp2d = _keypoints(2, (3,))
    np.testing.assert_allclose(np.asarray(loaded.lift(kp2d)), np.asarray(trained.lift(kp2d)),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(loaded.lift(kp2d))[:, 0], 0.0)  # root-relative
    with pytest.raises(ValueError, match="holds no pose lifter"):
        lifter.load_lifter(str(tmp_path / "elsewhere"))


def test_training_pairs_are_the_gt_meshes_h36m_joints_root_relative():
    body = body_model()
    rng = np.random.default_rng(3)
    pose = (rng.normal(size=(3, 72)) * 0.2).astype(np.float32)
    shape = rng.normal(size=(3, 10)).astype(np.float32)
    video = {"kp2d": _keypoints(3, (3,)), "pose": pose, "shape": shape,
             "has_smpl": np.asarray([1.0, 0.0, 1.0])}  # fmt: skip
    inputs, targets = lifter.pairs_from_videos([video], body, chunk=4)
    assert inputs.shape == (2, 42) and targets.shape == (2, 17, 3)
    # The naive form: the full mesh of each labelled frame, its J_regressor_h36m rows.
    rotmats = geometry.pose72_to_rotmats(pose[[0, 2]])
    vertices, _ = jax.jit(smpl.forward)(body, shape[[0, 2]], rotmats)
    h36m = np.einsum("jv,fvc->fjc", np.asarray(body.J_regressor_h36m), np.asarray(vertices))
    np.testing.assert_allclose(targets, h36m - h36m[:, :1], atol=1e-5)
    np.testing.assert_allclose(inputs, np.asarray(normalize(video["kp2d"][[0, 2]])), atol=1e-6)


def test_experiment_variants():
    from experiments import pchmr_lifter

    default = pchmr_lifter.get_config("")
    assert default.model.to_dict() == {"hidden_size": 1024, "num_blocks": 2, "dropout": 0.5}
    assert pchmr_lifter.get_config("cpu").data.name == "synthetic_motion/small"
    assert pchmr_lifter.get_config("cpu_standard").data.name == "synthetic_motion/standard"
    assert pchmr_lifter.get_config("smoke").optim.num_steps == 5
    with pytest.raises(ValueError, match="unknown config variant 'big'"):
        pchmr_lifter.get_config("big")

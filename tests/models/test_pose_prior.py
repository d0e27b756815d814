"""HKMR's VAE pose prior: the KL term by value, a tiny training run, its checkpoint, pose files."""

import chex
import jax
import numpy as np
import pytest

from lmr_jax.models import pose_prior
from tests.models.small_models import key


def _numpy_encoder(params, x):
    """The encoder's MLP in float64 numpy: leaky ReLU (0.2) layers, then the mu/log_var heads."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for i in range(sum(name.startswith("hidden_") for name in p)):
        x = x @ p[f"hidden_{i}"]["kernel"] + p[f"hidden_{i}"]["bias"]
        x = np.where(x > 0, x, 0.2 * x)
    head = lambda name: x @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
    return head("mu"), head("log_var")


def test_kl_to_prior_matches_closed_form():
    encoder = pose_prior.PoseEncoder(hidden_size=16, num_layers=2, latent_size=4)
    poses = np.random.default_rng(0).normal(size=(3, 5, 69)).astype(np.float32)
    params = encoder.init(key(0), poses)["params"]
    mu, log_var = _numpy_encoder(params, poses.astype(np.float64))
    # KL(N(mu, s^2) || N(0, 1)) per dimension: log(1 / s) + (s^2 + mu^2) / 2 - 1 / 2.
    sigma = np.exp(0.5 * log_var)
    expected = np.sum(-np.log(sigma) + 0.5 * (sigma**2 + mu**2) - 0.5, axis=-1)
    kl = pose_prior.kl_to_prior(params, poses)
    assert kl.shape == (3, 5)
    np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-6)
    assert np.all(expected > 0.01)  # not a degenerate zero


def _tiny_config(steps):
    config = pose_prior.default_config()
    config.model.update(hidden_size=32, latent_size=4)
    config.optim.update(lr=3e-3, batch_size=32, num_steps=steps)
    return config


def _tiny_poses():
    """128 poses on a 3-D linear manifold of the 69-D space, plus a little noise."""
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 69)) * 0.3
    return (rng.normal(size=(128, 3)) @ basis + 0.01 * rng.normal(size=(128, 69))).astype(
        np.float32
    )


def test_training_lowers_the_loss_and_the_checkpoint_round_trips(tmp_path):
    prior, history = pose_prior.train_pose_prior(_tiny_poses(), _tiny_config(60), str(tmp_path))
    assert len(history) == 60
    first = np.mean([m["loss"] for m in history[:5]])
    last = np.mean([m["loss"] for m in history[-5:]])
    assert last < 0.5 * first, (first, last)
    loaded = pose_prior.load_pose_prior(str(tmp_path))
    chex.assert_trees_all_equal(loaded.params, prior.params)
    assert loaded.model.to_dict() == prior.model.to_dict()
    poses = _tiny_poses()[:4]
    np.testing.assert_array_equal(loaded.kl(poses), prior.kl(poses))


def test_missing_prior_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no pose prior"):
        pose_prior.load_pose_prior(str(tmp_path))


def test_pose_files(tmp_path):
    smpl = np.random.default_rng(2).normal(size=(7, 72))
    np.savez(tmp_path / "smpl.npz", poses=smpl)
    np.testing.assert_allclose(pose_prior.poses_from_file(str(tmp_path / "smpl.npz")),
                               smpl[:, 3:], rtol=1e-6)  # fmt: skip
    smplh = np.random.default_rng(3).normal(size=(7, 156))  # AMASS: body 22 joints + hands
    np.savez(tmp_path / "smplh.npz", poses=smplh)
    body = pose_prior.poses_from_file(str(tmp_path / "smplh.npz"))
    np.testing.assert_allclose(body[:, :63], smplh[:, 3:66], rtol=1e-6)
    np.testing.assert_array_equal(body[:, 63:], 0.0)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(trans=np.zeros((4, 3))), r"has no 'poses' array \(keys: \['trans'\]\)"),
        (dict(poses=np.zeros((4, 69))), r"'poses' has shape \(4, 69\)"),
        (dict(poses=np.full((4, 72), np.nan)), "hold NaN or infinite values"),
    ],
)
def test_bad_pose_file_gives_one_sentence(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as error:
        pose_prior.poses_from_file(str(path))
    assert "\n" not in str(error.value)


def test_unreadable_pose_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        pose_prior.poses_from_file(str(tmp_path / "missing.npz"))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="could not read pose file .*expected an .npz"):
        pose_prior.poses_from_file(str(tmp_path / "text.npz"))


def test_poses_from_synthetic_motion(tiny_data_dir):
    poses = pose_prior.poses_from_dataset("synthetic_motion/tiny", "train", tiny_data_dir)
    assert poses.shape[1] == 69 and len(poses) > 10
    assert np.isfinite(poses).all() and np.abs(poses).max() > 0.1
    every_other = pose_prior.poses_from_dataset(
        "synthetic_motion/tiny", "train", tiny_data_dir, stride=2
    )
    assert len(every_other) < len(poses)


def test_experiment_variants():
    from experiments import hkmr_pose_prior

    assert hkmr_pose_prior.get_config("").model.hidden_size == 512
    assert hkmr_pose_prior.get_config("cpu").data.datasets == "synthetic_motion/small"
    assert hkmr_pose_prior.get_config("smoke").optim.num_steps == 5
    with pytest.raises(ValueError, match="unknown config variant 'big'"):
        hkmr_pose_prior.get_config("big")

"""HKMR trained end to end: L_KL (hkmr.extra_losses) by value against a naive loop, a missing
prior named, and the smoke run under pmap with a tiny prior trained here."""

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lmr_jax import checkpoints, models, train
from lmr_jax import config as config_lib
from lmr_jax.models import hkmr, pose_prior
from tests.runs import smoke_config


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    """A tiny prior (hidden 16, latent 4), trained for 3 steps on random small poses."""
    workdir = str(tmp_path_factory.mktemp("prior"))
    config = pose_prior.default_config()
    config.model.update(hidden_size=16, latent_size=4)
    config.optim.update(batch_size=16, num_steps=3)
    poses = 0.3 * np.random.default_rng(0).normal(size=(64, 69)).astype(np.float32)
    pose_prior.train_pose_prior(poses, config, workdir)
    return workdir


def _numpy_kl(params, pose69):
    """KL(q(z | pose) || N(0, I)) of the encoder, in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = pose69
    for i in range(sum(name.startswith("hidden_") for name in p)):
        x = x @ p[f"hidden_{i}"]["kernel"] + p[f"hidden_{i}"]["bias"]
        x = np.where(x > 0, x, 0.2 * x)
    mu = x @ p["mu"]["kernel"] + p["mu"]["bias"]
    log_var = x @ p["log_var"]["kernel"] + p["log_var"]["bias"]
    return 0.5 * np.sum(np.exp(log_var) + mu**2 - 1.0 - log_var)


def _hkmr_run_config(prior, kl_weight=0.5):
    config = config_lib.base_config("hkmr")
    config.model.update(pose_prior=prior, kl_weight=kl_weight)
    return config


def test_kl_term_matches_a_naive_loop_over_iterations_and_frames(prior_dir):
    rng = np.random.default_rng(1)
    iters, batch, frames = 3, 8, 2
    rotvecs = rng.normal(size=(iters, batch, frames, 24, 3)) * 0.8
    rotmats = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_matrix()
    rotmats = rotmats.reshape(iters, batch, frames, 24, 3, 3).astype(np.float32)
    valid = (rng.random((batch, frames)) > 0.3).astype(np.float32)
    valid[0, 0] = 1.0
    outputs = {"iterations": {"rotmats": rotmats}}
    config = _hkmr_run_config(prior_dir)
    encoder = pose_prior.load_pose_prior(prior_dir).params["encoder"]
    # Naive: each iteration's mean over the real frames of the KL of the 69-D body pose (the
    # axis-angle of joints 1..23, scipy's conversion), summed over the iterations.
    total = 0.0
    for t in range(iters):
        kls = [_numpy_kl(encoder, Rotation.from_matrix(rotmats[t, b, f].astype(np.float64))
                         .as_rotvec()[1:].reshape(69)) * valid[b, f]
               for b in range(batch) for f in range(frames)]  # fmt: skip
        total += sum(kls) / valid.sum()
    expected = 0.5 * total
    got = jax.jit(lambda o, v: hkmr.extra_losses(config, o, {"valid": v}, None))(outputs, valid)
    assert set(got) == {"kl"} and got["kl"].dtype == np.float32
    np.testing.assert_allclose(got["kl"], expected, rtol=2e-4)
    # Per device under pmap (one example each): the mean of the devices' terms is the global one.
    per_device = jax.pmap(
        lambda o, v: hkmr.extra_losses(config, o, {"valid": v}, "data")["kl"],
        axis_name="data", in_axes=({"iterations": {"rotmats": 1}}, 0),
    )(outputs, valid[:, None])  # fmt: skip
    np.testing.assert_allclose(np.mean(per_device), expected, rtol=2e-4)
    # Through the registry; no term without a prior.
    np.testing.assert_allclose(models.extra_losses(config, outputs, {"valid": valid})["kl"],
                               expected, rtol=2e-4)  # fmt: skip
    config.model.pose_prior = ""
    assert models.extra_losses(config, outputs, {"valid": valid}) == {}


def test_a_workdir_without_a_prior_is_one_sentence(tmp_path):
    config = _hkmr_run_config(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError) as error:
        config_lib.check(config)
    assert str(error.value).startswith(f"model.pose_prior is '{tmp_path}/nowhere', which holds "
                                       "no pose prior")  # fmt: skip
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)


@pytest.mark.slow  # one HKMR train step compiled: about 35 s of CPU on a contended 2-core CPU
def test_hkmr_smoke_trains_under_pmap_with_the_kl_term(tiny_data_dir, prior_dir, tmp_path):
    assert jax.local_device_count() == 8
    config = smoke_config(tiny_data_dir, model="hkmr")
    # experiments/hkmr.py's loss (eq. 3 over every outer iteration) and a small HKMR.
    config.loss = config_lib.losses.default_loss_config("hkmr_paper")
    # One outer and one inner iteration: the program of a 2-core CPU budget (the sum over
    # outer iterations is checked by value above, and in tests/test_losses.py).
    config.model.update(hidden_size=16, num_iterations=1, inner_iterations=1,
                        pose_prior=prior_dir, kl_weight=0.5)  # fmt: skip
    result = train.train(config, str(tmp_path / "run"))
    metrics = result.last_metrics
    assert np.isfinite(metrics["loss"]) and metrics["loss_kl"] > 0
    shared = {"kp2d": 600.0, "kp3d": 900.0, "pose": 60.0, "shape": 10 * 60 / 216}
    total = sum(w * metrics[f"loss_{k}"] for k, w in shared.items()) + metrics["loss_kl"]
    np.testing.assert_allclose(metrics["loss"], total, rtol=1e-5)
    # The model's parameters only: the prior's encoder is a constant of the step.
    params = result.state.params
    assert set(params) == {"regressor"}
    encoder_shapes = {a.shape for a in jax.tree.leaves(hkmr.prior_encoder(prior_dir))}
    state_shapes = {a.shape for a in jax.tree.leaves(result.state)}
    assert not {(69, 16), (16, 4)} & state_shapes and {(69, 16), (16, 4)} <= encoder_shapes
    first = checkpoints.restore_params(str(tmp_path / "run"), 1)
    change = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(),
                                              params, first)))  # fmt: skip
    assert change > 0

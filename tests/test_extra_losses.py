"""A system's own loss terms (models.extra_losses): a toy system registered as a new file would
be, its weighted term added to the training loss (by value, and in the gradient) and logged."""

import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmr_jax import losses, models, train
from lmr_jax import optim as optim_lib
from lmr_jax.models import common
from tests.runs import sgd_config, sgd_gradient

B, T, D, J = 8, 4, 64, 49  # 8 devices, one example each


class ToyModel(nn.Module):
    """Dense heads straight to the output dict (no body model: a small program)."""

    @nn.compact
    def __call__(self, features, *, train=False, state=None, return_state=False):
        lead = features.shape[:-1]
        head = lambda n, name: nn.Dense(n, name=name)(features).reshape(*lead, -1)  # noqa: E731
        rotmats = jnp.eye(3) + 0.1 * head(216, "pose").reshape(*lead, 24, 3, 3)
        betas, cam = head(10, "shape"), head(3, "cam")
        iterations = {"rotmats": rotmats[None], "betas": betas[None], "cam": cam[None]}
        out = {"rotmats": rotmats, "betas": betas, "cam": cam, "iterations": iterations,
               "joints3d": head(3 * J, "joints").reshape(*lead, J, 3),
               "kp2d": head(2 * J, "kp2d").reshape(*lead, J, 2)}  # fmt: skip
        return (out, ()) if return_state else out


def toy_term(weight, betas, valid):
    """The toy's term: weight x the mean over real frames of |beta|^2."""
    return weight * jnp.sum(jnp.sum(betas**2, -1) * valid) / jnp.sum(valid)


def _toy_system():
    def default_config():
        config = common.shared_config("toy")
        config.toy_weight = 0.25
        return config

    def extra_losses(config, outputs, batch, axis_name):
        error = jnp.sum(jnp.square(outputs["betas"]), -1)
        valid = batch["valid"]
        term = losses.masked_mean(error, valid, valid, axis_name)
        return {"toy": config.model.toy_weight * term}

    return types.SimpleNamespace(
        default_config=default_config, check_config=lambda c: None,
        build=lambda c, body: ToyModel(), extra_losses=extra_losses,
    )  # fmt: skip


def _batch(rng):
    valid = (rng.random((B, T)) > 0.4).astype(np.float32)
    valid[:, 0] = 1.0  # uneven counts per device: the global mean is not the devices' mean
    kp2d = rng.normal(size=(B, T, J, 3)).astype(np.float32)
    kp2d[..., 2] = rng.random((B, T, J)) > 0.2
    kp3d = rng.normal(size=(B, T, J, 4)).astype(np.float32)
    kp3d[..., 3] = 1.0
    batch = {"features": rng.normal(size=(B, T, D)), "kp2d": kp2d, "kp3d": kp3d,
             "pose": 0.3 * rng.normal(size=(B, T, 72)), "shape": rng.normal(size=(B, T, 10)),
             "has_smpl": np.ones((B, T)), "has_kp3d": np.ones((B, T)), "valid": valid}  # fmt: skip
    return {k: np.asarray(v, np.float32) for k, v in batch.items()}


def test_a_systems_extra_term_is_added_to_the_loss_and_logged(monkeypatch, tiny_data_dir):
    monkeypatch.setitem(models.SYSTEMS, "toy", _toy_system())
    config = sgd_config(tiny_data_dir, lr=1.0)
    config.model = models.default_model_config("toy")
    model = models.build_model(config.model, None)
    optimizer = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    schedule = optim_lib.learning_rate_schedule(config.optim, config.train.num_steps)
    state = train.init_state(config, model, optimizer, (1, T, D))
    before = jax.device_get(state.params)
    batch = _batch(np.random.default_rng(0))
    step = train.make_pmapped_step(config, model, None, optimizer, schedule, donate=False)
    device_batch = {k: v[:, None] for k, v in batch.items()}  # [devices, 1, ...]
    state, metrics = step(state, device_batch, jax.random.PRNGKey(0))
    metrics = {k: float(np.asarray(v)[0]) for k, v in metrics.items()}

    # Naive: the whole batch on one device, the toy term written out.
    def naive_loss(params):
        outputs = model.apply({"params": params}, batch["features"], train=True)
        shared, terms = losses.compute_losses(outputs, batch, config.loss, None)
        return shared + toy_term(0.25, outputs["betas"], batch["valid"]), terms

    (total, terms), grads = jax.jit(jax.value_and_grad(naive_loss, has_aux=True))(before)
    outputs = jax.jit(model.apply)({"params": before}, batch["features"])
    expected_toy = toy_term(0.25, outputs["betas"], batch["valid"])
    assert metrics["loss_toy"] == pytest.approx(float(expected_toy), rel=1e-5)
    assert metrics["loss_toy"] > 1e-3
    assert metrics["loss"] == pytest.approx(float(total), rel=1e-5)
    for k, v in terms.items():
        assert metrics[f"loss_{k}"] == pytest.approx(float(v), rel=1e-5)
    # The gradient holds the toy term's: SGD at lr 1 moved the parameters by -gradient.
    applied = sgd_gradient(before, jax.device_get(state.params), config.optim.lr)
    chex.assert_trees_all_close(applied, jax.device_get(grads), rtol=1e-4, atol=1e-6)


def test_systems_without_extra_terms_add_none_and_a_clash_is_named(monkeypatch):
    config = ml_collections.ConfigDict({"model": models.default_model_config("lmr")})
    assert models.extra_losses(config, {}, {}, None) == {}
    loss_config = losses.default_loss_config()
    with pytest.raises(ValueError, match="extra loss term 'kp2d' has the name of a shared"):
        train.training_loss({}, {}, loss_config, None, lambda o, b, a: {"kp2d": 1.0})

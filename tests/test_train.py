"""End-to-end training tests: resume, device-count invariance, non-finite handling, checkpoints."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import config as config_lib
from lmr_jax import optim as optim_lib
from lmr_jax import train
from lmr_jax.data import pipeline
from tests.runs import latest_params, smoke_config


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_data_dir, tmp_path):
    straight = smoke_config(tiny_data_dir, num_steps=3)
    train.train(straight, str(tmp_path / "straight"))

    interrupted = smoke_config(tiny_data_dir, num_steps=2)
    train.train(interrupted, str(tmp_path / "resumed"))
    step, params_at_2 = latest_params(tmp_path / "resumed")
    assert step == 2
    resumed = smoke_config(tiny_data_dir, num_steps=3)
    result = train.train(resumed, str(tmp_path / "resumed"))
    assert int(result.state.step) == 3

    step_a, params_a = latest_params(tmp_path / "straight")
    step_b, params_b = latest_params(tmp_path / "resumed")
    assert step_a == step_b == 3
    chex.assert_trees_all_close(params_a, params_b, atol=1e-6, rtol=1e-6)
    # The resumed run really trained: step 3 differs from step 2.
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params_b, params_at_2))
    assert max(diffs) > 0
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines[:3]] == [1, 2, 3]
    assert (tmp_path / "resumed" / "plots" / "curves.png").stat().st_size > 1000


def _one_step(config, data_dir, devices):
    """Loss and parameters after one step with the global batch split over `devices`."""
    model, body_model, optimizer, schedule, state = _setup(config)
    spec = train.dataset_specs(config)
    data = pipeline.train_dataset(
        spec, window=config.data.window, global_batch_size=8, num_local_devices=1, seed=0
    )
    batch = next(iter(data))
    batch = jax.tree.map(lambda x: x.reshape(devices, 8 // devices, *x.shape[2:]), batch)
    step = train.make_pmapped_step(config, model, body_model, optimizer, schedule)
    new_state, metrics = step(state, batch, jax.random.PRNGKey(0))
    return float(np.mean(metrics["loss"])), new_state.params


@functools.lru_cache
def _setup_cached(hidden):
    from lmr_jax import models, smpl

    body_model = smpl.procedural(0)
    config = config_lib.smoke(config_lib.base_config("lmr"))
    config.model.hidden_size = hidden
    model = models.build_model(config.model, body_model)
    return model, body_model


def _setup(config):
    model, body_model = _setup_cached(config.model.hidden_size)
    schedule = optim_lib.learning_rate_schedule(config.optim, config.train.num_steps)
    optimizer = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    state = train.init_state(config, model, optimizer, (1, config.data.window, 64))
    return model, body_model, optimizer, schedule, state


def test_same_loss_and_update_on_1_and_8_devices(tiny_data_dir):
    assert jax.local_device_count() == 8
    config = smoke_config(tiny_data_dir)
    config.model.num_iterations = 2
    loss_1, params_1 = _one_step(config, tiny_data_dir, devices=1)
    loss_8, params_8 = _one_step(config, tiny_data_dir, devices=8)
    assert np.isfinite(loss_1)
    np.testing.assert_allclose(loss_1, loss_8, rtol=1e-5)
    chex.assert_trees_all_close(params_1, params_8, atol=1e-6, rtol=1e-5)


def _poison(monkeypatch, bad_step):
    """Puts NaN into the 2D labels of the batch of step `bad_step` (a grain map, so the
    iterator stays checkpointable)."""
    real = pipeline.train_dataset
    calls = {"n": 0}

    def poison(batch):
        calls["n"] += 1
        if calls["n"] == bad_step + 1:  # +1: train() peeks at one batch first
            batch = dict(batch, kp2d=np.full_like(batch["kp2d"], np.nan))
        return batch

    monkeypatch.setattr(pipeline, "train_dataset", lambda *a, **k: real(*a, **k).map(poison))


@pytest.mark.slow
def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(
    tiny_data_dir, tmp_path, monkeypatch
):
    _poison(monkeypatch, bad_step=3)
    config = smoke_config(tiny_data_dir, num_steps=4)
    with pytest.raises(train.TrainingError, match="non-finite loss or gradient at step 3"):
        train.train(config, str(tmp_path))
    step, params = latest_params(tmp_path)
    assert step == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_nonfinite_loss_skips_the_step_when_configured(tiny_data_dir, tmp_path, monkeypatch):
    _poison(monkeypatch, bad_step=2)
    config = smoke_config(tiny_data_dir, num_steps=3, nonfinite="skip", checkpoint_every=0)
    result = train.train(config, str(tmp_path))
    assert int(result.state.step) == 3
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(result.state.params))


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_naming_the_field(tiny_data_dir, tmp_path):
    train.train(smoke_config(tiny_data_dir, num_steps=1), str(tmp_path))
    other = smoke_config(tiny_data_dir, num_steps=2)
    other.model.hidden_size = 24
    with pytest.raises(train.TrainingError, match=r"model.hidden_size was 16, now 24"):
        train.train(other, str(tmp_path))


def test_config_check_names_the_bad_field():
    config = config_lib.base_config("lmr")
    config.train.nonfinite = "ignore"
    with pytest.raises(ValueError, match=r"train.nonfinite is 'ignore'"):
        config_lib.check(config)
    config = config_lib.base_config("lmr")
    config.train.batch_size = 0
    with pytest.raises(ValueError, match=r"train.batch_size is 0, expected > 0"):
        config_lib.check(config)
    with pytest.raises(ValueError, match="unknown config variant 'tiny'"):
        config_lib.apply_variant(config, "tiny")


def test_learning_rate_schedule_warmup_then_cosine():
    optim = config_lib.base_config("lmr").optim
    optim.lr, optim.schedule, optim.warmup_steps = 1e-3, "cosine", 10
    schedule = optim_lib.learning_rate_schedule(optim, 110)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(60)), 5e-4, rtol=1e-4)
    assert float(schedule(110)) < 1e-9
    assert train.itstime(5, 5, 100) and train.itstime(100, 7, 100) and not train.itstime(6, 5, 100)
    assert not train.itstime(5, 0, 100)


def test_train_step_is_traced_once(tiny_data_dir):
    config = smoke_config(tiny_data_dir)
    model, body_model, optimizer, schedule, state = _setup(config)
    counted = chex.assert_max_traces(train.train_step, n=1)
    step = jax.pmap(
        functools.partial(counted, model=model, optimizer=optimizer, schedule=schedule,
                          loss_config=config.loss, body_model=body_model, skip_nonfinite=False),
        axis_name="data", in_axes=(None, 0, None), out_axes=(None, 0),
    )  # fmt: skip
    spec = train.dataset_specs(config)
    data = iter(pipeline.train_dataset(spec, window=config.data.window, global_batch_size=8,
                                       num_local_devices=8, seed=0))  # fmt: skip
    for _ in range(3):
        state, metrics = step(state, next(data), jax.random.PRNGKey(0))
    assert int(state.step) == 3
    assert jnp.isfinite(metrics["loss"]).all()

"""The train step as training runs it (train.make_pmapped_step): RNG streams, the donated state,
one trace across a plateau drop, a skipped non-finite step; and evaluation on one device."""

from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import checkpoints, models, smpl, train
from lmr_jax import config as config_lib
from lmr_jax.data import pipeline
from lmr_jax.optim import plateau_state
from tests.runs import step_parts, step_test_config

BASE_RNG = jax.random.PRNGKey(0)


def test_no_init_key_is_an_ancestor_of_a_step_key(monkeypatch):
    real = jax.random.fold_in
    produced = []

    def recording(key, data):
        out = real(key, data)
        if not isinstance(out, jax.core.Tracer):  # keys made under vmap are returned below
            produced.append(np.asarray(out))
        return out

    monkeypatch.setattr(jax.random, "fold_in", recording)
    train.init_rng(BASE_RNG)
    init_chain = list(produced)
    produced.clear()
    examples = []
    for step in range(4):
        examples.extend(np.asarray(train.dropout_rngs(BASE_RNG, step, np.arange(8))))
    assert init_chain and produced  # the keys derived on the way to the examples' keys
    step_chain = {key.tobytes() for key in produced + examples}
    assert not step_chain & {key.tobytes() for key in init_chain}
    # Every example of every step draws its own key.
    assert len({key.tobytes() for key in examples}) == 4 * 8


def test_init_state_draws_from_the_init_key(tiny_data_dir):
    config = step_test_config(tiny_data_dir)
    model, _, optimizer, _, state = step_parts(config)
    dummy = np.zeros((1, config.data.window, 64), np.float32)
    init = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"])
    expected = init(train.init_rng(jax.random.PRNGKey(config.seed)))
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(expected))


def test_per_example_apply_matches_each_example_alone():
    # HMR: dropout in its regressor, and V = 2 iterations of outputs [V, B, ...].
    config = config_lib.base_config("hmr").model
    config.regressor_hidden, config.num_iterations = 16, 2
    model = models.build_model(config, smpl.procedural(0))
    assert train.uses_dropout(model)
    features = np.random.default_rng(0).normal(size=(3, 4, 64)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), features[:1])["params"]
    keys = train.dropout_rngs(BASE_RNG, 5, np.arange(3))
    # Only the outputs compared: the programs then leave out the SMPL vertices.
    pick = lambda o: {"rotmats": o["rotmats"], "betas": o["betas"], "iterations": o["iterations"]}
    out = jax.jit(lambda x, k: pick(train.apply_for_training(model, params, x, k)))(features, keys)
    alone = jax.jit(
        lambda x, k: pick(model.apply({"params": params}, x[None], train=True, rngs={"dropout": k}))
    )
    for i in range(3):
        expected = alone(features[i], keys[i])
        chex.assert_trees_all_close(out["rotmats"][i], expected["rotmats"][0], atol=1e-6)
        chex.assert_trees_all_close(
            out["iterations"]["betas"][:, i], expected["iterations"]["betas"][:, 0], atol=1e-6
        )
    # Dropout is on: another example's key gives other outputs.
    other = alone(features[0], keys[1])
    assert np.abs(np.asarray(other["betas"][0]) - np.asarray(out["betas"][0])).max() > 1e-4


@pytest.fixture(scope="module")
def real_step(tiny_data_dir):
    """The donated step of step_test_config, its trace counted (1 at most), and three batches."""
    config = step_test_config(tiny_data_dir)
    model, body_model, optimizer, schedule, state = step_parts(config)
    counted = chex.assert_max_traces(train.train_step, n=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "train_step", counted)
        step = train.make_pmapped_step(config, model, body_model, optimizer, schedule)
    spec = train.dataset_specs(config)
    data = iter(pipeline.train_dataset(spec, window=config.data.window, global_batch_size=8,
                                       num_local_devices=8, seed=0))  # fmt: skip
    initial = jax.device_get(state)
    return SimpleNamespace(
        config=config, parts=(model, body_model, optimizer, schedule), step=step,
        schedule=schedule, batches=[next(data) for _ in range(3)],
        fresh=lambda: checkpoints.replicate_on_local_devices(initial),
    )  # fmt: skip


def _host_copy(tree):
    """A numpy copy of `tree` that leaves its arrays donatable: on CPU, device_get of an array
    can be a view of its device buffer, which the array keeps and XLA then does not donate."""
    return jax.device_get(jax.tree.map(jnp.copy, tree))


def _applied_lr(before, after, metrics):
    """The learning rate an SGD step applied: |change of the parameters| / |gradient|."""
    change = jax.tree.map(lambda b, a: np.asarray(b) - np.asarray(a), before, after)
    norm = np.sqrt(sum(np.sum(c.astype(np.float64) ** 2) for c in jax.tree.leaves(change)))
    return norm / float(np.asarray(metrics["grad_norm"])[0])


def test_donated_state_is_deleted_and_the_step_matches_an_undonated_one(real_step):
    run = real_step
    reference = train.make_pmapped_step(run.config, *run.parts, donate=False)
    state_0 = run.fresh()
    state_1, _ = run.step(state_0, run.batches[0], BASE_RNG)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state_0))
    params_1 = _host_copy(state_1.params)
    expected, expected_metrics = reference(state_1, run.batches[1], BASE_RNG)
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state_1))
    state_2, metrics = run.step(state_1, run.batches[1], BASE_RNG)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state_1))
    chex.assert_trees_all_close(jax.device_get(state_2), jax.device_get(expected), rtol=1e-6)
    chex.assert_trees_all_close(metrics, expected_metrics, rtol=1e-6)
    assert _applied_lr(params_1, state_2.params, metrics) > 0.05  # it trained (lr 0.1)


def test_plateau_drop_lowers_the_applied_lr_without_a_retrace(real_step):
    run = real_step
    state, _ = run.step(run.fresh(), run.batches[0], BASE_RNG)
    applied = []
    for value in (10.0, 20.0):  # an improvement, then none: patience 0 drops the lr x0.1
        state = train.apply_plateau(state, value, run.config.optim)
        before = _host_copy(state.params)
        state, metrics = run.step(state, run.batches[int(state.step)], BASE_RNG)
        applied.append(_applied_lr(before, state.params, metrics))
        np.testing.assert_allclose(np.asarray(metrics["lr"]), applied[-1], rtol=1e-4)
    assert float(plateau_state(state.opt_state).scale) == pytest.approx(0.1)
    # Steps 1 and 2 of the warmup (lr 0.1, 0.2), the second at a tenth.
    np.testing.assert_allclose(applied, [0.1, 0.2 * 0.1], rtol=1e-4)


def _step_counts(opt_state):
    """The integer leaves of the optimizer state but the (host-updated) plateau state's."""
    parts = opt_state[:-1]  # PlateauState is last
    return [int(x) for x in jax.tree.leaves(parts) if np.issubdtype(x.dtype, np.integer)]


def test_skipped_step_keeps_the_parameters_and_the_lr_follows_the_step(real_step):
    run = real_step
    state_1, _ = run.step(run.fresh(), run.batches[0], BASE_RNG)
    kept = _host_copy(state_1)
    poisoned = dict(run.batches[1], kp2d=np.full_like(run.batches[1]["kp2d"], np.nan))
    state_2, metrics = run.step(state_1, poisoned, BASE_RNG)
    assert not np.asarray(metrics["finite"]).any()
    skipped = _host_copy(state_2)
    chex.assert_trees_all_equal(skipped.params, kept.params)
    floats = lambda s: [x for x in jax.tree.leaves(s) if not np.issubdtype(x.dtype, np.integer)]
    chex.assert_trees_all_equal(floats(skipped.opt_state), floats(kept.opt_state))
    chex.assert_trees_all_equal(plateau_state(skipped.opt_state), plateau_state(kept.opt_state))
    # The next step applies the learning rate it logs, schedule(2) (the old skip applied
    # schedule(1): the optimizer's count had stopped).
    state_3, metrics = run.step(state_2, run.batches[2], BASE_RNG)
    applied = _applied_lr(skipped.params, state_3.params, metrics)
    np.testing.assert_allclose(np.asarray(metrics["lr"]), applied, rtol=1e-4)
    np.testing.assert_allclose(applied, float(run.schedule(2)), rtol=1e-4)
    assert _step_counts(kept.opt_state) == [1]
    assert _step_counts(skipped.opt_state) == [2] == [int(skipped.step)]


def test_evaluation_runs_on_one_device(real_step, monkeypatch):
    run = real_step
    model, body_model = run.parts[:2]
    seen = []
    real_make = train.make_apply_fn

    def recording_make(model, *args):
        apply = real_make(model, *args)

        def recorded(params, features):
            seen.append({d for leaf in jax.tree.leaves(params) for d in leaf.devices()})
            return apply(params, features)

        return recorded

    monkeypatch.setattr(train, "make_apply_fn", recording_make)
    config = run.config.copy_and_resolve_references()
    config.data.eval_max_videos = 1
    params = run.fresh().params  # as the train step returns them: on every local device
    assert len(jax.tree.leaves(params)[0].devices()) == jax.local_device_count() == 8
    results = train.validate(config, model, params, body_model)
    assert seen and all(devices == {jax.local_devices()[0]} for devices in seen)
    assert np.isfinite(results["overall"]["MPJPE"])

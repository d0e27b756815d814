"""DSD-SATN's two stages: SATN's smoke run under pmap starting from a saved DSD run (frozen: its
params['dsd'] end as they started, SATN's change; the sort term logged), a resumed SATN run
reading nothing from the DSD run, a wrong model.dsd_run refused in one sentence, and the batch
fields a model reads in training (DSD's kp2d with use_gt_2d) passed by value."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmr_jax import checkpoints, losses, models, smpl, train
from lmr_jax import optim as optim_lib
from lmr_jax.models import satn
from lmr_jax.rngs import apply_for_training
from tests.runs import smoke_config

# experiments/satn.py:smoke's widths (DSD 32 wide, as experiments/dsd.py:smoke).
WIDTHS = dict(skeleton_hidden=32, detail_width=32, bilinear_width=32)
SATN_WIDTHS = dict(num_heads=2, head_dim=8, ffn_width=32)


def _config(data_dir, model, **fields):
    config = smoke_config(data_dir, model=model)
    config.loss = losses.default_loss_config("dsd_paper")
    config.model.update(num_iterations=1, **WIDTHS, **fields)
    return config


@pytest.fixture(scope="module")
def dsd_run(tiny_data_dir, tmp_path_factory):
    """(workdir, params): a DSD run's checkpoint as training saves it (its train state and the
    config's compat fields), of random parameters (normal draws of init's shapes: nothing is
    compiled, and no seed's init can match them)."""
    workdir = str(tmp_path_factory.mktemp("dsd"))
    config = _config(tiny_data_dir, "dsd")
    model = models.build_model(config.model, smpl.procedural(0))
    features = jax.ShapeDtypeStruct((1, config.data.window, 64), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
    optimizer = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    state = train.TrainState(step=np.int32(0), params=params, opt_state=optimizer.init(params))
    mngr = checkpoints.checkpoint_manager(workdir, 1)
    meta = {"compat": checkpoints.compat_view(config), "step": 0}
    mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)))  # fmt: skip
    mngr.wait_until_finished()
    return workdir, params


def _max_change(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


@pytest.mark.slow  # one SATN train step compiled under pmap
def test_satn_smoke_starts_from_a_frozen_dsd_run(tiny_data_dir, dsd_run, tmp_path, monkeypatch):
    assert jax.local_device_count() == 8
    dsd_dir, dsd_params = dsd_run
    # use_gt_2d: the kp2d labels reach the model through its training_inputs under pmap.
    config = _config(tiny_data_dir, "satn", **SATN_WIDTHS, dsd_run=dsd_dir, use_gt_2d=True)
    workdir = str(tmp_path / "satn")
    result = train.train(config, workdir)
    metrics = result.last_metrics
    assert np.isfinite(metrics["loss"]) and metrics["loss_sort"] > 0
    assert "loss_skeleton2d" not in metrics  # frozen DSD: its term would have no gradient
    shared = losses.resolve(config.loss).weights
    total = sum(w * metrics[f"loss_{k}"] for k, w in shared.items() if w) + metrics["loss_sort"]
    np.testing.assert_allclose(metrics["loss"], total, rtol=1e-5)
    first, last = checkpoints.restore_params(workdir, 1), jax.device_get(result.state.params)
    # Frozen: DSD's parameters after each step are the saved run's, SATN's have moved.
    assert _max_change(first["dsd"], dsd_params["dsd"]) == 0
    assert _max_change(last["dsd"], dsd_params["dsd"]) == 0
    assert _max_change(last["satn"], first["satn"]) > 0
    # A resumed run restores its own checkpoint and reads nothing from model.dsd_run.
    monkeypatch.setattr(satn, "initial_params", lambda *a: pytest.fail("DSD read on resume"))
    resumed = train.train(config, workdir)
    assert int(resumed.state.step) == 2
    assert _max_change(jax.device_get(resumed.state.params), last) == 0


def test_a_wrong_dsd_run_is_one_sentence(tiny_data_dir, dsd_run, tmp_path):
    dsd_dir, dsd_params = dsd_run
    params = {"dsd": jax.tree.map(np.zeros_like, dsd_params["dsd"]), "satn": {}}
    config = _config(tiny_data_dir, "satn", dsd_run=dsd_dir)
    loaded = models.initial_params(config, params, checkpoints.read_run)
    assert _max_change(loaded["dsd"], dsd_params["dsd"]) == 0 and loaded["satn"] == {}

    def message(**fields):
        config.model.update(fields)
        with pytest.raises(ValueError) as error:
            models.check_model_config(config.model)
            models.initial_params(config, params, checkpoints.read_run)
        text = str(error.value)
        assert "\n" not in text and text.endswith(".") and text.count(". ") == 0
        return text

    assert message(detail_width=16).startswith(
        f"model.dsd_run '{dsd_dir}' trained DSD with model.detail_width 32, but this config has "
        "16; expected the same DSD fields."
    )
    assert message(detail_width=32, dsd_run=str(tmp_path)).startswith(
        f"model.dsd_run is '{tmp_path}', which holds no checkpoints"
    )
    (tmp_path / "checkpoints").mkdir()
    assert message().startswith(f"model.dsd_run is '{tmp_path}', which holds no readable "
                                "checkpoint (no checkpoint in")  # fmt: skip
    small = {"dsd": {**params["dsd"], "detail": {"kernel": np.zeros((2048, 32), np.float32),
                                                 "bias": np.zeros(32, np.float32)}}}  # fmt: skip
    config.model.dsd_run = dsd_dir
    with pytest.raises(ValueError, match=r"has DSD parameter detail/kernel of shape \(64, 32\), "
                                         r"this model \(2048, 32\)"):  # fmt: skip
        models.initial_params(config, small, checkpoints.read_run)


class LabelReader(nn.Module):
    """Reads the batch's kp2d in training, as DSD with use_gt_2d (a small program)."""

    training_inputs = ("kp2d",)

    @nn.compact
    def __call__(self, features, *, train=False, kp2d=None):
        return {"x": nn.Dense(2)(features) + jnp.sum(kp2d[..., :2], axis=-2)}


def test_training_inputs_reach_the_model_batched_and_per_example():
    body = smpl.procedural(0)
    for name in ("dsd", "satn"):
        config = models.complete_model_config(dict(name=name, use_gt_2d=True))
        assert models.build_model(config, body).training_inputs == ("kp2d",)
        config.use_gt_2d = False
        assert models.build_model(config, body).training_inputs == ()
    model, rng = LabelReader(), np.random.default_rng(0)
    features = rng.normal(size=(4, 3, 16)).astype(np.float32)
    kp2d = rng.normal(size=(4, 3, 49, 3)).astype(np.float32)
    params = model.init(jax.random.key(0), features, kp2d=kp2d)["params"]
    expected = model.apply({"params": params}, features, train=True, kp2d=kp2d)["x"]
    keys = jax.random.split(jax.random.key(1), 4)
    for dropout_keys in (None, keys):  # one batched apply; one apply per example (vmapped)
        got = apply_for_training(model, params, features, dropout_keys, {"kp2d": kp2d})["x"]
        np.testing.assert_allclose(got, expected, rtol=1e-6)

"""End-to-end training tests: resume, non-finite handling, checkpoints, config checks (the
step itself and device-count invariance: test_train_step.py, test_train_parallel.py)."""

import glob
import os
import shutil
import struct

import chex
import jax
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

    # A run stopped after it logged step 3 but before its checkpoint at step 3 was written.
    stopped = smoke_config(tiny_data_dir, num_steps=3, checkpoint_every=2)
    train.train(stopped, str(tmp_path / "resumed"))
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "3")
    step, params_at_2 = latest_params(tmp_path / "resumed")
    assert step == 2
    assert _logged_steps(tmp_path / "resumed") == [1, 2, 3]
    result = train.train(stopped, str(tmp_path / "resumed"))
    assert int(result.state.step) == 3

    step_a, params_a = latest_params(tmp_path / "straight")
    step_b, params_b = latest_params(tmp_path / "resumed")
    assert step_a == step_b == 3
    chex.assert_trees_all_close(params_a, params_b, atol=1e-6, rtol=1e-6)
    # The resumed run really trained: step 3 differs from step 2.
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params_b, params_at_2))
    assert max(diffs) > 0
    # Step 3 is logged once, by the resumed run, as the uninterrupted run logged it.
    assert _logged_steps(tmp_path / "resumed") == [1, 2, 3]
    resumed_rows = train.MetricLog(str(tmp_path / "resumed")).read()
    straight_rows = train.MetricLog(str(tmp_path / "straight")).read()
    np.testing.assert_allclose(resumed_rows[-1]["loss"], straight_rows[-1]["loss"], rtol=1e-5)
    assert (tmp_path / "resumed" / "plots" / "curves.png").stat().st_size > 1000
    # TensorBoard shows what metrics.jsonl holds: the resumed run's event file starts with a
    # restart marker at step 3, hiding the stopped run's step 3.
    scalars, restarts = tensorboard_scalars(tmp_path / "resumed")
    assert restarts == [1, 3]
    assert_scalars_match_metrics(scalars, resumed_rows)


def _logged_steps(workdir):
    return [row["step"] for row in train.MetricLog(str(workdir)).read()]


def tensorboard_scalars(workdir):
    """The scalars of workdir/tensorboard as TensorBoard shows them, read without TensorFlow:
    TFRecord framing parsed here (CRCs checked), events decoded with tensorboardX's protobuf.

    Returns:
      ({tag: {step: value}}, the steps of the restart markers in file order). Files are read in
      the order written; a restart marker (SessionLog START at step s) hides the events of steps
      >= s before it, and a later value of a step replaces an earlier one.
    """
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars, restarts = {}, []
    paths = sorted(glob.glob(os.path.join(str(workdir), "tensorboard", "events.out.tfevents.*")))
    assert paths, f"no event file in {workdir}/tensorboard"
    for path in paths:  # named by the second they were opened: sorted = in the order written
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
            record = data[pos + 12 : pos + 12 + length]
            crc = data[pos + 12 + length : pos + 16 + length]
            assert struct.unpack("<I", crc)[0] == masked_crc32c(record)
            pos += 16 + length
            event = event_pb2.Event.FromString(record)
            if event.session_log.status == event_pb2.SessionLog.START:
                restarts.append(event.step)
                for values in scalars.values():
                    for step in [s for s in values if s >= event.step]:
                        del values[step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars, restarts


def assert_scalars_match_metrics(scalars, rows):
    """Every value of metrics.jsonl `rows` is in `scalars` under its key, at its step, and
    nothing else is."""
    expected = {}
    for row in rows:
        for key, value in row.items():
            if key != "step":
                expected.setdefault(key, {})[row["step"]] = value
    assert sorted(scalars) == sorted(expected)
    for tag, values in expected.items():
        assert sorted(scalars[tag]) == sorted(values), tag
        got = [scalars[tag][step] for step in sorted(values)]
        want = [values[step] for step in sorted(values)]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=tag)  # float32 in the events


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
    # Adam's step count went on through the skipped step (it drives the bias correction and
    # the learning-rate schedule as state.step does).
    counts = [x for x in jax.tree.leaves(result.state.opt_state) if x.dtype == np.int32]
    assert counts and all(int(x) == 3 for x in counts)


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_naming_the_field(tiny_data_dir, tmp_path):
    train.train(smoke_config(tiny_data_dir, num_steps=1), str(tmp_path))
    other = smoke_config(tiny_data_dir, num_steps=2)
    other.model.hidden_size = 24
    with pytest.raises(train.TrainingError, match=r"model.hidden_size was 16, now 24"):
        train.train(other, str(tmp_path))


def test_checkpoint_saved_before_a_model_field_existed_stays_compatible(tmp_path):
    import orbax.checkpoint as ocp

    from lmr_jax import checkpoints

    config = config_lib.base_config("lmr")
    compat = checkpoints.compat_view(config)
    del compat["model"]["single_rnn_hidden_size"]  # as saved before the field was added
    mngr = checkpoints.checkpoint_manager(str(tmp_path), 1)
    mngr.save(1, args=ocp.args.Composite(meta=ocp.args.JsonSave({"compat": compat, "step": 1})))
    mngr.wait_until_finished()
    assert checkpoints.read_meta(mngr, 1)["compat"]["model"]["single_rnn_hidden_size"] == 0
    checkpoints.check_compatible(mngr, 1, config)  # the new field at its default: accepted
    config.model.single_rnn, config.model.single_rnn_hidden_size = True, 64
    with pytest.raises(train.TrainingError, match="model.single_rnn"):
        checkpoints.check_compatible(mngr, 1, config)


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
    config = config_lib.base_config("lmr")
    config.optim.optimizer = "lion"
    with pytest.raises(ValueError, match=r"optim.optimizer is 'lion', expected one of"):
        optim_lib.make_optimizer(config.optim, 10)


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

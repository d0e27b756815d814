"""The command line: clear errors for bad input, and two processes training in lockstep."""

import functools
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from lmr_jax import checkpoints, train
from tests.runs import best_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, devices=1, extra_env=None, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")  # fmt: skip
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "lmr_jax.main", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def smoke_flags(data_dir, workdir):
    return [
        "--config=experiments/lmr_synthetic.py:smoke",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        "--config.data.train.synthetic.name=synthetic_motion/tiny",
        "--config.data.validation.name=synthetic_motion/tiny",
        "--config.eval.name=synthetic_motion/tiny",
        "--config.model.hidden_size=16",
        "--config.model.num_iterations=1",
        "--config.eval.split=",
    ]


def test_unknown_config_field_is_refused(tmp_path):
    result = run_main("--config=experiments/lmr_synthetic.py:smoke", f"--workdir={tmp_path}",
                      "--config.optim.learning_rate=1e-3")  # fmt: skip
    assert result.returncode != 0
    assert "learning_rate" in result.stderr


def test_bad_mode_and_missing_flags(tmp_path):
    result = run_main("--config=experiments/lmr_synthetic.py:smoke", f"--workdir={tmp_path}",
                      "--mode=fly")  # fmt: skip
    assert result.returncode != 0 and "mode" in result.stderr
    result = run_main("--config=experiments/lmr_synthetic.py:smoke")
    assert result.returncode != 0
    assert "--workdir" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_says_how_to_build_it(tmp_path):
    result = run_main(*smoke_flags(str(tmp_path / "empty"), str(tmp_path / "work")))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "lmr_jax:" in result.stderr and "python -m lmr_jax.data.build" in result.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NUM_STEPS = 3


def _two_process_flags(data_dir, workdir):
    # Plain SGD: the updates are -lr x gradient, so comparing them compares the gradients.
    return [
        *smoke_flags(data_dir, workdir), "--config.optim.optimizer=sgd",
        "--config.optim.lr=1e-4", "--config.optim.grad_clip=0",
        "--config.model.dropout=0.2",  # per-example keys: the same masks in both runs
        f"--config.train.num_steps={NUM_STEPS}",
        "--config.train.eval_every=1", "--config.data.eval_max_videos=1",
    ]  # fmt: skip


def _params_and_updates(workdir):
    """The parameters at step 1 and the updates of the later steps (a checkpoint each step)."""
    params = [checkpoints.restore_params(str(workdir), s) for s in range(1, NUM_STEPS + 1)]
    updates = [jax.tree.map(np.subtract, b, a) for a, b in zip(params, params[1:])]
    return params[0], updates


def _check_best(workdir):
    """workdir/best holds the parameters of the step of the lowest validation PA-MPJPE."""
    rows = [r for r in train.MetricLog(str(workdir)).read() if "val_PA-MPJPE" in r]
    assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1))
    expected = min(rows, key=lambda r: r["val_PA-MPJPE"])["step"]
    step, params = best_params(workdir)
    assert step == expected
    chex.assert_trees_all_equal(params, checkpoints.restore_params(str(workdir), step))
    return step


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices(tiny_data_dir, tmp_path):
    flags = functools.partial(_two_process_flags, tiny_data_dir)
    single = run_main(*flags(tmp_path / "one"), devices=2)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    env = {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "lmr_jax.main", *flags(tmp_path / "two"),
             "--jax_distributed", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={i}"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
                     XLA_FLAGS="--xla_force_host_platform_device_count=1", **env),
        )
        for i in range(2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    params_one, updates_one = _params_and_updates(tmp_path / "one")
    params_two, updates_two = _params_and_updates(tmp_path / "two")
    chex.assert_trees_all_close(params_one, params_two, atol=1e-6, rtol=1e-5)
    for one, two in zip(updates_one, updates_two, strict=True):
        scale = max(np.abs(u).max() for u in jax.tree.leaves(one))
        assert scale > 1e-4  # SGD moved the parameters
        chex.assert_trees_all_close(two, one, rtol=1e-3, atol=1e-4 * scale)
    assert _check_best(tmp_path / "one") == _check_best(tmp_path / "two")

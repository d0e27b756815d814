"""The command line: clear errors for bad input, and two processes training in lockstep."""

import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from lmr_jax import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, devices=1, extra_env=None, timeout=300):
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


def _params(workdir):
    return checkpoints.restore_params(str(workdir))


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices(tiny_data_dir, tmp_path):
    single = run_main(*smoke_flags(tiny_data_dir, tmp_path / "one"), devices=2)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    env = {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "lmr_jax.main", *smoke_flags(tiny_data_dir, tmp_path / "two"),
             "--jax_distributed", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={i}"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
                     XLA_FLAGS="--xla_force_host_platform_device_count=1", **env),
        )
        for i in range(2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=400) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    chex.assert_trees_all_close(
        _params(tmp_path / "one"), _params(tmp_path / "two"), atol=1e-6, rtol=1e-5
    )
    leaves = [np.abs(x).sum() for x in jax.tree.leaves(_params(tmp_path / "two"))]
    assert all(np.isfinite(leaves))

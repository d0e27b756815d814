"""The command line as a user meets it: one-line errors for bad inputs that create nothing,
--help, and quiet library logs unless --verbosity is given.

Every case runs the real command in a subprocess (absl parses flags once per process)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.test_main import run_main, smoke_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--config=experiments/lmr_synthetic.py:smoke"


def run_command(entry, *args):
    """Runs `python -m lmr_jax.main` (entry None) or a console script's function, as installed
    by setup.py (`lmr-train` = main.train_cli ...), with argv[0] set to the script's name."""
    if entry is None:
        command = ["-m", "lmr_jax.main"]
    else:
        script = f"lmr-{entry.removesuffix('_cli')}"
        command = ["-c", f"import sys; sys.argv[0] = {script!r}; "
                   f"from lmr_jax import main; main.{entry}()"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *command, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "entry,args,expected",
    [
        (None, ["--config=experiments/nope.py"],
         ["--config=experiments/nope.py: there is no config file 'experiments/nope.py'",
          "expected experiments/<name>.py", "lmr_synthetic"]),
        (None, [SMOKE, "--config.foo=1"],
         ["--config.foo names no field of experiments/lmr_synthetic.py:smoke",
          "the closest is '", "the top-level fields are data, eval, loss, model, optim"]),
        (None, [SMOKE, "--config.optim.lrr=1"],
         ["--config.optim.lrr names no field", "(the closest is 'optim.lr')."]),
        (None, ["--config=experiments/hmr_framewise.py:smoke", "--config.model.hidden_size=16"],
         ["--config.model.hidden_size: model.hidden_size is not a field of the 'hmr' model; "
          "its fields: dtype, head_init, joint_layout, mean_params, name, num_iterations, "
          "regressor_dropout, regressor_hidden."]),
        ("train_cli", ["--config=experiments/lmr_synthetic.py:gpu"],
         ["--config=experiments/lmr_synthetic.py:gpu: unknown config variant 'gpu', "
          "expected one of ['', 'bench', 'cpu', 'smoke']."]),
        # Checked before anything is created: no workdir, no workdir/checkpoints.
        ("eval_cli", [SMOKE],
         ["no checkpoint in ", "/run/checkpoints; train first (--mode=train)."]),
        (None, [SMOKE, "--smpl_path=/nonexistent/smpl.pkl"],
         ["SMPL model file /nonexistent/smpl.pkl does not exist"]),
    ],
    ids=["missing_file", "unknown_field", "mistyped_nested_field", "another_models_field",
         "unknown_variant",
         "eval_of_a_missing_workdir", "training_with_a_bad_smpl_path"],
)  # fmt: skip
def test_bad_input_is_one_sentence_exit_status_2_and_creates_nothing(
    tmp_path, entry, args, expected
):
    workdir = tmp_path / "run"
    result = run_command(entry, *args, f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmr_jax: error: "), result.stderr[-2000:]
    for text in expected:
        assert text in lines[0]
    assert result.stdout == "" and not workdir.exists()


@pytest.mark.parametrize(
    "entry,shown,hidden",
    [
        ("train_cli", ["config", "workdir", "smpl_path", "jax_distributed"], ["input", "mode"]),
        ("eval_cli", ["config", "workdir", "smpl_path"], ["glb", "mode"]),
        ("predict_cli", ["workdir", "input", "video", "output", "obj_dir", "glb", "overlap"],
         ["mode", "jax_distributed"]),
    ],
)  # fmt: skip
def test_help_lists_the_commands_own_flags_one_line_each(entry, shown, hidden):
    result = run_command(entry, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"lmr-{entry.removesuffix('_cli')}: ")
    rows = {line.split()[0].split("=")[0]: line for line in lines if line.startswith("  --")}
    for name in shown:  # one line: the flag, then what it is
        assert len(rows.pop(f"--{name}").split(maxsplit=1)) == 2
    assert "--config.FIELD" in rows
    assert not any(line.startswith("    ") for line in lines)  # no wrapped continuation lines
    for name in hidden:
        assert f"--{name}" not in rows


def _library_log_lines(text: str) -> list[str]:
    """absl-formatted INFO/DEBUG lines (`I1203 14:09:17.82 ... file.py:12] ...`) and any line
    naming orbax."""
    return [line for line in text.splitlines()
            if re.match(r"[ID]\d{4} ", line) or "orbax" in line.lower()]  # fmt: skip


@pytest.fixture(scope="module")
def quiet_run(tiny_data_dir, tmp_path_factory):
    """A one-step smoke training through the command line, without --verbosity."""
    workdir = tmp_path_factory.mktemp("quiet") / "run"
    return workdir, run_main(*smoke_flags(tiny_data_dir, workdir), "--config.train.num_steps=1")


@pytest.mark.slow
def test_training_prints_its_progress_and_no_library_logs(quiet_run):
    workdir, result = quiet_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 1/1  loss " in result.stdout
    assert (workdir / "checkpoints" / "1").is_dir()  # orbax saved (and logged nothing)
    assert _library_log_lines(result.stderr + result.stdout) == []


@pytest.mark.slow
def test_verbosity_brings_the_library_logs_back(quiet_run, tmp_path):
    workdir, _ = quiet_run
    np.savez(tmp_path / "clip.npz", features=np.zeros((10, 64), np.float32))
    predict = ["--mode=predict", f"--workdir={workdir}", f"--input={tmp_path}/clip.npz"]
    quiet = run_main(*predict, f"--output={tmp_path}/quiet.npz")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == "" and quiet.stdout == f"wrote {tmp_path}/quiet.npz\n"
    verbose = run_main(*predict, f"--output={tmp_path}/verbose.npz", "-v", "1")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    logs = _library_log_lines(verbose.stderr)
    assert sum("orbax" in line for line in logs) > 10, verbose.stderr[-3000:]

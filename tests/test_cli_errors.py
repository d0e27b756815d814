"""The command line as a user meets it: one-line errors for bad configs, and --help.

Every case runs the real command in a subprocess (absl parses flags once per process)."""

import os
import subprocess
import sys

import pytest

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
        ("train_cli", ["--config=experiments/lmr_synthetic.py:gpu"],
         ["--config=experiments/lmr_synthetic.py:gpu: unknown config variant 'gpu', "
          "expected one of ['', 'cpu', 'smoke']."]),
    ],
    ids=["missing_file", "unknown_field", "mistyped_nested_field", "unknown_variant"],
)  # fmt: skip
def test_bad_config_is_one_sentence_and_exit_status_2(tmp_path, entry, args, expected):
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

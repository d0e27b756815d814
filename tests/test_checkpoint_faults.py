"""Damaged checkpoints: files cut short inside the latest checkpoints of a run. Training resumes
from the newest intact one and sets the damaged ones aside (renamed, never deleted); evaluation
and prediction refuse with one sentence naming the damaged and the intact steps.

One 3-step smoke run (checkpoints 1, 2, 3, a validation at step 3) is shared; each test damages
a copy: step 3's state/_METADATA (orbax's JSON tree metadata) and step 2's largest array file
are cut to half their size, as a full disk or a killed copy leaves them.
"""

import gc
import logging
import os
import shutil
import sys
import time

import chex
import numpy as np
import pytest

from lmr_jax import checkpoints, predict, train
from tests.runs import SMOKE_RUN_STEPS, latest_params, smoke_config
from tests.test_main import run_main, smoke_flags
from tests.test_train import assert_scalars_match_metrics, tensorboard_scalars

NUM_STEPS = SMOKE_RUN_STEPS


def _config(data_dir, **overrides):
    # One validation, at the last step: the metrics and event files hold validation rows too.
    return smoke_config(data_dir, num_steps=NUM_STEPS, eval_every=NUM_STEPS, **overrides)


@pytest.fixture(scope="module")
def straight(smoke_run):
    """An uninterrupted run with checkpoints at steps 1, 2 and 3 (conftest's shared one, read
    or copied only)."""
    return smoke_run


def _cut(path) -> int:
    """Truncates the file at `path` to half its size; returns the new size."""
    size = os.path.getsize(path) // 2
    os.truncate(path, size)
    return size


def _largest_file(folder) -> str:
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    return max(files, key=os.path.getsize)


def _damaged_copy(straight, workdir):
    """A copy of the run with step 3's state/_METADATA and step 2's largest file cut short;
    returns {step: (the cut file relative to its step folder, its size now)}."""
    shutil.copytree(straight, workdir)
    cut = {}
    for step, path in ((3, "state/_METADATA"), (2, None)):
        folder = workdir / "checkpoints" / str(step)
        path = os.path.relpath(_largest_file(folder), folder) if path is None else path
        cut[step] = (path, _cut(folder / path))
    return cut


@pytest.fixture(scope="module")
def damaged(straight, tmp_path_factory):
    """A damaged copy that evaluation and prediction only read."""
    workdir = tmp_path_factory.mktemp("damaged") / "run"
    _damaged_copy(straight, workdir)
    return workdir


def _folders(workdir):
    return sorted(os.listdir(workdir / "checkpoints"))


@pytest.mark.slow
def test_resume_sets_damaged_checkpoints_aside_and_continues_from_the_newest_intact(
    straight, tiny_data_dir, tmp_path, caplog
):
    workdir = tmp_path / "run"
    cut = _damaged_copy(straight, workdir)
    # max_to_keep 2: orbax deletes step 1 after saving steps 2 and 3 again, never the set-aside
    # folders (their names are not steps).
    with caplog.at_level(logging.WARNING):
        result = train.train(_config(tiny_data_dir, max_to_keep=2), str(workdir))
    assert int(result.state.step) == NUM_STEPS
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 2, warnings
    start = f"the checkpoint at step 3 in {workdir}/checkpoints is damaged "
    assert warnings[0].startswith(start + "(state/_METADATA is not valid JSON: ")
    assert warnings[0].endswith("set aside as 3.damaged, resuming from step 1")
    assert "the checkpoint at step 2 " in warnings[1] and "its arrays do not read" in warnings[1]
    assert warnings[1].endswith("set aside as 2.damaged, resuming from step 1")

    # The damaged folders are kept as they were, renamed; orbax lists only the new steps.
    assert _folders(workdir) == ["2", "2.damaged", "3", "3.damaged"]
    for step, (path, size) in cut.items():
        assert os.path.getsize(workdir / "checkpoints" / f"{step}.damaged" / path) == size
    # Steps 2 and 3 trained again from step 1 end where the uninterrupted run ended.
    step, params = latest_params(workdir)
    straight_step, straight_params = latest_params(straight)
    assert step == straight_step == NUM_STEPS
    chex.assert_trees_all_close(params, straight_params, atol=1e-6, rtol=1e-6)
    rows = train.MetricLog(str(workdir)).read()
    straight_rows = train.MetricLog(str(straight)).read()
    assert [r["step"] for r in rows] == [r["step"] for r in straight_rows] == [1, 2, 3, 3]
    for row, want in zip(rows, straight_rows, strict=True):
        for key in set(want) - {"steps_per_s"}:
            assert row[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    # TensorBoard: a restart marker at step 2 hides the first run's steps 2 and 3.
    scalars, restarts = tensorboard_scalars(workdir)
    assert restarts == [1, 2]
    assert any(tag.startswith("val_") for tag in scalars)
    assert_scalars_match_metrics(scalars, rows)
    assert predict.load_run(str(workdir))[2]["step"] == NUM_STEPS


@pytest.mark.slow
def test_eval_refuses_naming_the_damaged_and_the_intact_steps(damaged, tiny_data_dir):
    result = run_main(*smoke_flags(tiny_data_dir, damaged), "--mode=eval")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]  # no traceback, no library logs
    start = f"lmr_jax: error: the checkpoint at step 3 in {damaged}/checkpoints is damaged "
    assert lines[0].startswith(start + "(state/_METADATA is not valid JSON: ")
    hint = "--mode=train sets step 3 aside and resumes from step 1"
    assert lines[0].endswith(
        f"; the intact one is step 1 ({hint}; predict reads {damaged}/checkpoints/1)."
    )
    assert result.stdout == ""
    assert _folders(damaged) == ["1", "2", "3"]  # nothing renamed


@pytest.mark.slow
def test_predict_refuses_naming_the_damaged_and_the_intact_steps(damaged, tmp_path):
    out = tmp_path / "pred.npz"
    features = tmp_path / "clip.npz"
    np.savez(features, features=np.zeros((10, 64), np.float32))
    result = run_main(
        "--mode=predict", f"--workdir={damaged}", f"--input={features}", f"--output={out}"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert "the checkpoint at step 3 " in lines[0] and "state/_METADATA" in lines[0]
    assert "; the intact one is step 1 (" in lines[0]
    assert not out.exists()
    # A step folder named directly: the damaged step 2 is refused, the intact step 1 loads.
    expected = r"step 2 .* is damaged \(its arrays do not read: .*\); the intact one is step 1 "
    with pytest.raises(checkpoints.DamagedCheckpointError, match=expected):
        predict.load_run(str(damaged / "checkpoints" / "2"))
    assert predict.load_run(str(damaged / "checkpoints" / "1"))[2]["step"] == 1
    assert _folders(damaged) == ["1", "2", "3"]


@pytest.mark.slow
def test_no_intact_checkpoint_is_refused_and_nothing_renamed(straight, tiny_data_dir, tmp_path):
    workdir = tmp_path / "run"
    _damaged_copy(straight, workdir)
    _cut(workdir / "checkpoints" / "1" / "meta" / "metadata")
    expected = (
        r"no checkpoint in .* is intact \(step 3: state/_METADATA .*; step 2: its arrays "
        r".*; step 1: meta/metadata is not valid JSON"
    )
    with pytest.raises(checkpoints.DamagedCheckpointError, match=expected):
        train.train(_config(tiny_data_dir), str(workdir))
    assert _folders(workdir) == ["1", "2", "3"]


def test_failed_reads_print_nothing_later(damaged, monkeypatch, caplog):
    """orbax leaves reads of a damaged checkpoint pending; collected later, they were reported
    as unraisable exceptions and asyncio errors, hundreds of lines on stderr at any time."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    # Installed before the first read, as a damaged read installs it: reads left over by
    # earlier tests may be collected at any moment, also before this test's first read ends.
    checkpoints._hide_abandoned_reads()
    mngr = checkpoints.open_checkpoints(str(damaged))
    for _ in range(4):
        assert checkpoints.checkpoint_damage(mngr, 2).startswith("its arrays do not read")
        gc.collect()
    time.sleep(0.5)  # for TensorStore's reads still in flight
    gc.collect()
    assert not reported, [str(r.exc_value)[:200] for r in reported[:3]]
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_errors_that_are_not_damage_pass_unchanged(straight, tmp_path, monkeypatch):
    """A restore that fails on intact files (a bug, a changed train state) renames nothing."""
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    mngr = checkpoints.checkpoint_manager(str(workdir), 3)

    def restore_into(*args):
        raise ValueError("not damage")

    monkeypatch.setattr(checkpoints, "_restore_into", restore_into)
    config = smoke_config("unused", num_steps=NUM_STEPS)
    with pytest.raises(ValueError, match="^not damage$"):
        checkpoints.restore_checkpoint(mngr, None, None, config)
    with pytest.raises(KeyError, match="not damage"), checkpoints.damage_named(mngr, 3):
        raise KeyError("not damage")
    assert _folders(workdir) == ["1", "2", "3"]


CUT_FILES = [
    "meta/metadata",
    "data/process_0-of-1.json",
    "state/array_metadatas/process_0",
    "state/_sharding",
    None,  # the largest file: array data
]


@pytest.mark.parametrize("path", CUT_FILES)
def test_checkpoint_damage_names_the_file_cut_short(straight, tmp_path, path):
    workdir = tmp_path / "run"
    shutil.copytree(straight / "checkpoints", workdir / "checkpoints")
    mngr = checkpoints.open_checkpoints(str(workdir))
    assert checkpoints.checkpoint_damage(mngr, 3) is None
    folder = workdir / "checkpoints" / "3"
    _cut(folder / path if path else _largest_file(folder))
    problem = checkpoints.checkpoint_damage(mngr, 3)
    if path:
        assert problem.startswith(f"{path} is not valid JSON: "), problem
    else:
        assert problem.startswith("its arrays do not read: "), problem
    # A second damaged step 3 is set aside beside the first.
    os.mkdir(workdir / "checkpoints" / "3.damaged")
    assert checkpoints._set_aside_name(mngr, 3) == "3.damaged.2"

"""Occlusion robustness of a smoke run through `--mode=eval`'s function: DoC 0 is the
plain evaluation, the curves average the occluded joints, and the table and plots are written."""

import copy
import importlib.util
import json
import math
import os
import shutil

import numpy as np
import pytest

from lmr_jax import checkpoints, models, optim, smpl, train
from lmr_jax import config as config_lib
from lmr_jax.data import pipeline
from tests.runs import smoke_config

_PLOT = os.path.join(os.path.dirname(__file__), "..", "experiments", "benchmarks",
                     "occlusion_plot.py")  # fmt: skip


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
    """A smoke run's checkpoint at initialisation (step 0: no train step is compiled) and its
    config; evaluation reads it like any run's latest checkpoint."""
    workdir = str(tmp_path_factory.mktemp("occlusion_run"))
    config = smoke_config(tiny_data_dir)
    specs = train.dataset_specs(config)
    dataset = pipeline.train_dataset(specs, window=config.data.window,
                                     global_batch_size=config.train.batch_size,
                                     num_local_devices=1, seed=0)  # fmt: skip
    model = models.build_model(config.model, smpl.procedural(0))
    optimizer = optim.make_optimizer(config.optim, config.train.num_steps)
    state = train.init_state(config, model, optimizer, (1, config.data.window, 64))
    mngr = checkpoints.checkpoint_manager(workdir, max_to_keep=1)
    checkpoints.save_checkpoint(mngr, state, iter(dataset), config)
    mngr.wait_until_finished()
    return config, workdir


def _occlusion_config(config, kinds, joints):
    config = copy.deepcopy(config)
    config.eval.occlusion, config.eval.occlusion_joints = kinds, joints
    config.eval.occlusion_max_videos = 0
    return config


def test_eval_mode_writes_the_doc_table_and_plot_and_doc0_is_the_plain_mpjpe(run, tmp_path):
    config, workdir = run
    occluded = _occlusion_config(config, "circle", "right_knee,left_wrist")
    results = train.evaluate_workdir(occluded, workdir)
    plain = train.evaluate_workdir(config, workdir)
    for metric in ("MPJPE", "PA-MPJPE"):
        assert math.isclose(results["reference"][metric], plain["overall"][metric], rel_tol=1e-6)
    assert results["frames"] == plain["frames"] and results["videos"] == 2
    curve = results["curves"]["circle"]
    assert len(curve["MPJPE"]) == 6 and all(np.isfinite(curve["MPJPE"]))
    # A degree's value is the mean over the occluded joints (they are scored on the same frames).
    for d in range(1, 6):
        joint_mean = np.mean([v[d - 1] for v in curve["per_joint"].values()])
        assert math.isclose(curve["MPJPE"][d], joint_mean, rel_tol=1e-9)
    assert curve["MPJPE"][1:] != [curve["MPJPE"][0]] * 5  # occlusion changes the predictions
    assert 0 < curve["hidden"][1] < curve["hidden"][5] < 1  # nested occluders hide more
    out = os.path.join(workdir, "occlusion")
    with open(os.path.join(out, "results.md")) as f:
        table = f.read()
    assert "| lmr, circle | " in table and "PA-MPJPE (mm)" in table
    assert f"{results['reference']['MPJPE']:.1f}" in table
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["label"] == "lmr"
    with open(os.path.join(out, "occlusion.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Several runs in one figure and table (here the same results under another label).
    other = tmp_path / "other"
    shutil.copytree(out, other / "occlusion")
    with open(other / "occlusion" / "results.json") as f:
        saved = json.load(f)
    with open(other / "occlusion" / "results.json", "w") as f:
        json.dump({**saved, "label": "hkmr"}, f)
    spec = importlib.util.spec_from_file_location("occlusion_plot", _PLOT)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    text = plot.combine([workdir, str(other)], str(tmp_path / "fig"))
    assert "| lmr, circle |" in text and "| hkmr, circle |" in text
    assert os.path.getsize(tmp_path / "fig" / "occlusion.png") > 1000


def test_bad_occlusion_settings_are_refused_in_one_sentence(run):
    config, workdir = run
    with pytest.raises(ValueError, match="eval.occlusion names 'square', expected one of"):
        config_lib.check(_occlusion_config(config, "square", ""))
    vibe = _occlusion_config(config, "bar", "")
    vibe.eval.sets = "3dpw"
    with pytest.raises(ValueError, match="dataset 'threedpw' stores precomputed image features"):
        train.evaluate_workdir(vibe, workdir)

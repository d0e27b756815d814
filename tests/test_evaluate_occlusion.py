"""Occlusion robustness: the DoC curves by value against the plain evaluation (a numpy stand-in
model), the tables and plots, and `--mode=eval`'s path on the shared trained smoke run."""

import copy
import importlib.util
import json
import math
import os
import shutil

import numpy as np
import pytest

from lmr_jax import config as config_lib
from lmr_jax import evaluate, evaluate_occlusion, smpl, train
from lmr_jax.data import occlusion, pipeline
from tests.runs import smoke_config, smoke_run_config

_PLOT = os.path.join(os.path.dirname(__file__), "..", "experiments", "benchmarks",
                     "occlusion_plot.py")  # fmt: skip


@pytest.fixture(scope="module")
def run(smoke_run, tiny_data_dir, tmp_path_factory):
    """A copy of conftest's trained smoke run (this module writes into it) and its config."""
    workdir = tmp_path_factory.mktemp("occlusion") / "run"
    shutil.copytree(smoke_run, workdir)
    return smoke_run_config(tiny_data_dir), str(workdir)


def _occlusion_config(config, kinds, joints):
    config = copy.deepcopy(config)
    config.eval.occlusion, config.eval.occlusion_joints = kinds, joints
    config.eval.occlusion_max_videos = 1
    return config


@pytest.fixture(scope="module")
def observed(tiny_data_dir):
    """The tiny test videos with their observations, SMPL labels off (no PVE is compiled)."""
    spec = pipeline.DatasetSpec("synthetic_motion/tiny", "test", tiny_data_dir)
    return [(dict(v, has_smpl=0 * v["has_smpl"]), o) for v, o in occlusion.observed_videos(spec)]


def linear_model(windows):
    """A stand-in model: joints3d [W, T, 49, 3] a fixed linear map of the features (numpy)."""
    weights = np.random.default_rng(0).normal(0.0, 0.02, size=(windows.shape[-1], 49 * 3))
    return {"joints3d": (np.asarray(windows) @ weights).reshape(*windows.shape[:2], 49, 3)}


def test_curves_by_value_doc0_is_the_plain_evaluation(observed, tmp_path):
    body = smpl.procedural(0)
    joints = ("right_knee", "left_wrist", "head_top")
    results = evaluate_occlusion.evaluate_occlusion(
        linear_model, observed, body, window=8, kinds=("circle", "bar"), occluded=joints
    )
    plain = evaluate.evaluate_videos(linear_model, [v for v, _ in observed], body, window=8)
    for metric in ("MPJPE", "PA-MPJPE"):
        assert math.isclose(results["reference"][metric], plain["overall"][metric], rel_tol=1e-6)
    assert results["frames"] == plain["frames"] and results["videos"] == 2
    # By value: DoC 2 of the circle on the right knee is the plain evaluation of the videos
    # re-featurized with that occluder.
    occluded = [dict(v, features=o.features(o.occluded_kp2d("circle", 2, "right_knee")))
                for v, o in observed]  # fmt: skip
    knee = evaluate.evaluate_videos(linear_model, occluded, body, window=8)["overall"]["MPJPE"]
    curve = results["curves"]["circle"]
    assert math.isclose(curve["per_joint"]["right_knee"][1], knee, rel_tol=1e-6)
    assert knee != results["reference"]["MPJPE"]  # the occluder changed the predictions
    # A degree's value is the mean over the occluded joints (they are scored on the same frames).
    for d in range(1, 6):
        joint_mean = np.mean([v[d - 1] for v in curve["per_joint"].values()])
        assert math.isclose(curve["MPJPE"][d], joint_mean, rel_tol=1e-9)
    for kind in ("circle", "bar"):  # nested occluders hide more keypoints at every degree
        hidden = results["curves"][kind]["hidden"]
        assert 0 == hidden[0] < hidden[1] < hidden[2] < hidden[3] < hidden[4] < hidden[5] < 1
    # The table, the JSON and the plot; several runs in one figure (occlusion_plot.py).
    text = evaluate_occlusion.write_occlusion_results(results, str(tmp_path / "a"), "lmr")
    assert f"| lmr, circle | {results['reference']['MPJPE']:.1f} | " in text
    assert f"{curve['MPJPE'][5]:.1f} |" in text and "PA-MPJPE (mm)" in text
    saved = evaluate_occlusion.read_occlusion_results(str(tmp_path / "a"))
    evaluate_occlusion.write_occlusion_results(saved, str(tmp_path / "b"), "hkmr")
    spec = importlib.util.spec_from_file_location("occlusion_plot", _PLOT)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    text = plot.combine([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "fig"))
    assert "| lmr, bar |" in text and "| hkmr, bar |" in text
    with open(tmp_path / "fig" / "occlusion.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="occlusion/results.json does not exist"):
        plot.combine([str(tmp_path)], str(tmp_path / "fig"))


def test_eval_mode_writes_the_table_and_plot_of_a_run(run):
    """What `--mode=eval --config.eval.occlusion=circle` runs (main.py: train.evaluate_workdir)."""
    config, workdir = run
    results = train.evaluate_workdir(_occlusion_config(config, "circle", "right_knee"), workdir)
    assert results["videos"] == 1 and results["occluded_joints"] == ["right_knee"]
    assert np.isfinite(results["curves"]["circle"]["MPJPE"]).all()
    out = os.path.join(workdir, "occlusion")
    with open(os.path.join(out, "results.md")) as f:
        assert f"| lmr, circle | {results['reference']['MPJPE']:.1f} | " in f.read()
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["label"] == "lmr"
    with open(os.path.join(out, "occlusion.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    vibe = _occlusion_config(config, "bar", "")
    vibe.eval.sets = "3dpw"
    with pytest.raises(ValueError, match="dataset 'threedpw' stores precomputed image features"):
        train.evaluate_workdir(vibe, workdir)


def test_an_unknown_kind_is_refused_in_one_sentence(tiny_data_dir):
    config = smoke_config(tiny_data_dir)
    with pytest.raises(ValueError, match="eval.occlusion names 'square', expected one of"):
        config_lib.check(_occlusion_config(config, "square", ""))
    with pytest.raises(ValueError, match="eval.occlusion_joints names 'knee', expected"):
        config_lib.check(_occlusion_config(config, "circle", "knee"))

"""The paper's real-data setting: experiment files, the 2D/3D mixture, the plateau schedule
(exact on resume) and a smoke run on small VIBE-format datasets evaluated on 3DPW test."""

import importlib.util
import json
import os

import chex
import jax
import numpy as np
import optax
import pytest

from lmr_jax import checkpoints, losses, train
from lmr_jax import config as config_lib
from lmr_jax import optim as optim_lib
from tests.data.vibe_files import VIDEOS, build_small_datasets
from tests.runs import latest_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = {
    "lmr_vibe": ("lmr", {}),
    "vibe_baseline_vibe": ("vibe", {}),
    "ablation_single_rnn_vibe": ("lmr", {"single_rnn": True}),
    "ablation_no_root_vibe": ("lmr", {"no_root_dependency": True}),
}


def experiment_config(name, variant=None):
    spec = importlib.util.spec_from_file_location(name, f"{REPO}/experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module")
def vibe_data_dir(tmp_path_factory):
    """threedpw (train, validation, test) and pennaction (train), two videos of 6 and 4 frames."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return build_small_datasets(str(tmp_path_factory.mktemp("vibe_format")))


def smoke_config(data_dir, num_steps=3, window=4):
    """lmr_vibe.py:smoke, smaller still; only a halving of the validation PA-MPJPE counts as an
    improvement, so the learning rate drops at every validation after the first."""
    config = experiment_config("lmr_vibe", "smoke")
    config.data.data_dir = data_dir
    config.data.window = window
    config.model.hidden_size = 16
    config.model.num_iterations = 1
    config.train.num_steps = num_steps
    config.optim.plateau_threshold = 0.5
    return config


def lr_by_step(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["lr"] for r in map(json.loads, lines) if "lr" in r}


@pytest.fixture(scope="module")
def smoke_run(vibe_data_dir, tmp_path_factory):
    """3 steps with a validation after each, then evaluation on 3DPW test."""
    workdir = tmp_path_factory.mktemp("lmr_vibe_smoke")
    # T = 6: every evaluation video is one window, so inference compiles for one batch size.
    results = train.train_and_evaluate(smoke_config(vibe_data_dir, window=6), str(workdir))
    return workdir, results


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_files_give_vibes_setting(name):
    model_name, switches = EXPERIMENTS[name]
    config = experiment_config(name)
    config_lib.check(config)
    assert config.model.name == model_name
    assert all(config.model[k] == v for k, v in switches.items())
    assert (config.data.window, config.train.batch_size, config.optim.lr) == (16, 32, 5e-5)
    assert (config.train.num_steps, config.train.eval_every) == (30 * 500, 500)
    assert config.optim.schedule == "plateau" and config.optim.plateau_patience == 5
    assert (config.optim.plateau_factor, config.optim.plateau_metric) == (0.1, "PA-MPJPE")
    assert config.optim.grad_clip == 0 and config.optim.weight_decay == 0
    loss = losses.resolve(config.loss)
    assert config.loss.preset == "vibe"
    assert (loss.param_norm, loss.keypoint_norm, loss.kp3d_confidence) == ("mse", "mse", False)
    assert (loss.w_2d, loss.w_3d, loss.w_pose, loss.w_shape) == (300.0, 300.0, 60.0, 0.06)
    groups = {d.name: (d.group, d.stride) for d in config.data.train.values()}
    # VIBE's overlaps: 3DPW 0 (threedpw.py's is_train = False), MPI-INF-3DHP and Insta 0.
    assert groups == {
        "insta_variety": ("2d", 16), "posetrack": ("2d", 4), "pennaction": ("2d", 4),
        "threedpw": ("3d", 16), "mpi_inf_3dhp": ("3d", 16), "human36m": ("3d", 4),
    }  # fmt: skip
    assert config.data.tail_window is False  # VIBE's split_into_chunks has no tail window
    assert config.data.ratio_2d == 0.6
    assert (config.data.validation.name, config.data.validation.joints) == ("threedpw", "h36m14")
    assert config_lib.eval_sets(config) == {"3dpw": config_lib.EVAL_SETS["3dpw"]}
    released = experiment_config(name, "vibe_w_3dpw")
    chosen = {d.name for d in released.data.train.values() if d.weight > 0}
    assert chosen == {"insta_variety", "threedpw", "mpi_inf_3dhp"}
    smoke = experiment_config(name, "smoke")
    config_lib.check(smoke)
    assert {d.name for d in smoke.data.train.values()} == {"threedpw", "pennaction"}


def test_eval_sets_name_the_papers_test_sets():
    config = experiment_config("lmr_vibe")
    config.eval.sets = "3dpw, mpi_inf_3dhp,human36m"
    sets = config_lib.eval_sets(config)
    assert list(sets) == ["3dpw", "mpi_inf_3dhp", "human36m"]
    # VIBE scores MPI-INF-3DHP on the 14 J_regressor_h36m joints, TCMR on its 17 test joints.
    assert sets["mpi_inf_3dhp"] == config_lib.EvalSet("mpi_inf_3dhp", "validation", "h36m14")
    config.eval.protocol = "tcmr"
    sets = config_lib.eval_sets(config)
    assert sets["mpi_inf_3dhp"] == config_lib.EvalSet("mpi_inf_3dhp", "validation", "mpii3d17")
    assert sets["human36m"] == config_lib.EvalSet("human36m", "test", "h36m14")
    config.eval.sets = ""
    assert config_lib.eval_sets(config) == {"test": config_lib.EvalSet("threedpw", "test",
                                                                       "h36m14")}  # fmt: skip
    config.eval.split = ""
    assert config_lib.eval_sets(config) == {}


def test_mixture_shares_follow_groups_and_window_counts(vibe_data_dir):
    config = smoke_config(vibe_data_dir)
    # A second 3D dataset: the validation split, stride 1 and weight 2; and one left out.
    config.data.train.extra = config_lib.dataset_config("threedpw", "validation", 2.0, 1, "3d")
    config.data.train.unused = config_lib.dataset_config("posetrack", weight=0.0, group="2d")
    specs = {(s.name, s.split): s.weight for s in train.dataset_specs(config)}
    # T = 4 over videos of 6 and 4 frames: stride 2 gives 2 + 1 windows, stride 1 gives 3 + 1.
    assert [length for _, length in VIDEOS] == [6, 4]
    expected = {("pennaction", "train"): 0.6, ("threedpw", "train"): 0.4 * 3 / (3 + 2 * 4),
                ("threedpw", "validation"): 0.4 * 2 * 4 / (3 + 2 * 4)}  # fmt: skip
    assert specs.keys() == expected.keys()
    for key, share in expected.items():
        assert specs[key] == pytest.approx(share), key
    assert "pennaction:train 60.0%" in train.describe_mixture(train.dataset_specs(config))


def test_plateau_update_follows_torchs_reduce_lr_on_plateau():
    optim = config_lib.base_config().optim
    optim.lr, optim.plateau_factor, optim.plateau_patience, optim.plateau_threshold = (
        1.0, 0.5, 2, 0.01)  # fmt: skip
    state = optim_lib.PlateauState(np.float32(1), np.float32(np.inf), np.int32(0))
    seen = []
    # 9.95 and 8.95 are within 1% of the best: not improvements; NaN never is.
    for value in (10.0, 9.95, 9.0, 9.0, 8.95, 9.5, np.nan, 1.0, 2.0, 2.0, 2.0):
        state = optim_lib.plateau_update(state, value, optim)
        seen.append((float(state.scale), float(state.best), int(state.num_bad)))
    assert seen == [
        (1.0, 10.0, 0), (1.0, 10.0, 1), (1.0, 9.0, 0), (1.0, 9.0, 1), (1.0, 9.0, 2),
        (0.5, 9.0, 0),  # the third validation in a row without improvement: patience exceeded
        (0.5, 9.0, 1), (0.5, 1.0, 0), (0.5, 1.0, 1), (0.5, 1.0, 2), (0.25, 1.0, 0),
    ]  # fmt: skip
    # Like torch, a drop smaller than 1e-8 in the learning rate is not made.
    optim.lr, optim.plateau_patience = 1e-8, 0
    small = optim_lib.plateau_update(optim_lib.PlateauState(1.0, 1.0, 0), 5.0, optim)
    assert (float(small.scale), int(small.num_bad)) == (1.0, 0)


def test_plateau_scale_multiplies_the_updates():
    optim = config_lib.base_config().optim
    optim.schedule, optim.grad_clip = "plateau", 0.0
    optimizer = optim_lib.make_optimizer(optim, 10)
    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.asarray([1.0, -2.0, 3.0], np.float32)}
    opt_state = optimizer.init(params)
    assert float(optim_lib.plateau_state(opt_state).scale) == 1.0
    full, _ = optimizer.update(grads, opt_state, params)
    dropped = (*opt_state[:-1], optim_lib.PlateauState(np.float32(0.1), np.float32(5), np.int32(0)))
    tenth, _ = optimizer.update(grads, dropped, params)
    chex.assert_trees_all_close(tenth, jax.tree.map(lambda u: 0.1 * u, full), rtol=1e-6)
    constant = optim_lib.make_optimizer(config_lib.base_config().optim, 10)
    assert optim_lib.plateau_state(constant.init(params)) is None
    assert isinstance(constant, optax.GradientTransformation)


@pytest.mark.slow
def test_smoke_run_on_the_vibe_mixture_evaluates_3dpw_test(smoke_run):
    workdir, results = smoke_run
    assert list(results) == ["3dpw"]
    test = results["3dpw"]
    assert (test["joints"], test["protocol"]) == ("h36m14", "vibe")
    # T = 6 under VIBE's protocol: video_a (6 frames) is one window, video_b (4) is too short.
    assert [length for _, length in VIDEOS] == [6, 4]
    assert test["frames"] == 6 and test["skipped"] == ["video_b"]
    assert set(test["videos"]) == {"video_a"}
    assert all(np.isfinite(v) for v in test["overall"].values()), test["overall"]
    saved = json.loads((workdir / "eval" / "3dpw.json").read_text())
    assert saved["overall"] == pytest.approx(test["overall"])
    assert (workdir / "eval" / "3dpw.md").read_text().startswith("| Method |")
    # The small files give the validation and test splits the same videos and labels, so the
    # last validation (the same parameters) must equal the test evaluation.
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in records if "val_PA-MPJPE" in r][-1]
    assert last_val["step"] == 3
    assert last_val["val_PA-MPJPE"] == pytest.approx(test["overall"]["PA-MPJPE"], rel=1e-6)


@pytest.mark.slow
def test_plateau_drops_the_learning_rate_after_validations(smoke_run):
    workdir, _ = smoke_run
    # Validation 1 sets the best; 2 and 3 do not halve it (patience 0): x0.1 after each.
    lr = lr_by_step(workdir)
    assert lr[1] == lr[2] == pytest.approx(1e-3)
    assert lr[3] == pytest.approx(1e-4)
    plateau = checkpoints.restore_saved_state(str(workdir))["opt_state"][-1]
    assert float(plateau["scale"]) == pytest.approx(0.01)
    assert int(plateau["num_bad"]) == 0 and np.isfinite(float(plateau["best"]))


@pytest.mark.slow
def test_resumed_run_continues_with_the_same_learning_rate(smoke_run, vibe_data_dir, tmp_path):
    straight, _ = smoke_run
    train.train(smoke_config(vibe_data_dir, num_steps=2, window=6), str(tmp_path))
    assert float(checkpoints.restore_saved_state(str(tmp_path))["opt_state"][-1]["scale"]) == (
        pytest.approx(0.1))  # fmt: skip
    result = train.train(smoke_config(vibe_data_dir, num_steps=3, window=6), str(tmp_path))
    assert int(result.state.step) == 3
    assert lr_by_step(tmp_path) == pytest.approx(lr_by_step(straight))
    resumed = jax.device_get(optim_lib.plateau_state(result.state.opt_state))
    saved = checkpoints.restore_saved_state(str(straight))["opt_state"][-1]
    assert float(resumed.scale) == float(saved["scale"])
    assert float(resumed.best) == float(saved["best"])
    assert int(resumed.num_bad) == int(saved["num_bad"])
    step_a, params_a = latest_params(straight)
    step_b, params_b = latest_params(tmp_path)
    assert step_a == step_b == 3
    chex.assert_trees_all_close(params_a, params_b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optim.schedule", "step", r"optim.schedule is 'step', expected one of \('constant'"),
        ("optim.plateau_metric", "loss", r"optim.plateau_metric is 'loss', expected one of"),
        ("eval.joints", "coco", r"eval.joints is 'coco', expected one of \('vibe49', 'h36m14'"),
        ("data.validation.joints", "h36m17", r"data.validation.joints is 'h36m17'"),
        ("eval.sets", "3dpw,h36m", r"eval.sets names 'h36m', expected names from \('3dpw'"),
        ("train.eval_every", 0, r"train.eval_every is 0, expected > 0: optim.schedule 'plateau'"),
        ("optim.plateau_factor", 1.0, r"optim.plateau_factor is 1.0, expected a value in"),
        ("data.ratio_2d", 1.5, r"data.ratio_2d is 1.5, expected a value in \[0, 1\]"),
        ("data.train.posetrack.group", "both", r"data.train.posetrack.group is 'both'"),
        ("data.train.posetrack.weight", -1.0, r"data.train.posetrack.weight is -1.0"),
        ("data.train.human36m.group", "", r"data.train.human36m.group is '', expected '2d'"),
    ],
)
def test_config_check_refuses_bad_values_with_one_sentence(field, value, message):
    config = experiment_config("lmr_vibe")
    *parents, last = field.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(ValueError, match=message):
        config_lib.check(config)


def test_config_check_refuses_a_mixture_without_datasets():
    config = experiment_config("lmr_vibe", "vibe_w_3dpw")
    for dataset in config.data.train.values():
        dataset.weight = 0.0
    with pytest.raises(ValueError, match="data.train has no dataset with a weight > 0"):
        config_lib.check(config)
    with pytest.raises(ValueError, match="unknown config variant 'cpu'"):
        experiment_config("lmr_vibe", "cpu")


@pytest.mark.slow
def test_eval_mode_scores_the_latest_checkpoint_like_training_did(smoke_run, vibe_data_dir):
    workdir, results = smoke_run
    config = smoke_config(vibe_data_dir, window=6)
    (workdir / "eval" / "3dpw.json").unlink()
    again = train.evaluate_workdir(config, str(workdir))
    assert again["3dpw"]["overall"] == pytest.approx(results["3dpw"]["overall"], rel=1e-6)
    assert (workdir / "eval" / "3dpw.json").exists()

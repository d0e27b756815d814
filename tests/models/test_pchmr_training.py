"""PC-HMR stage 2 (models/pchmr.py): a smoke run under pmap on a saved base run and lifter run
(the base exactly unchanged with freeze_base, W, A and the lifter moved, the parallel target's
kp2d reaching the model in training and in evaluation), the model's wiring by value, the
learning-rate groups by value, the vertex and lifter losses against a naive form, and the
errors of bad runs and fields."""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from lmr_jax import (
    calibrated,
    calibrated_eval,
    checkpoints,
    evaluate,
    geometry,
    losses,
    models,
    predict,
    runner,
    smpl,
    train,
)
from lmr_jax import config as config_lib
from lmr_jax import optim as optim_lib
from lmr_jax.data import pipeline
from lmr_jax.models import calibration as calibration_lib
from lmr_jax.models import lifter as lifter_lib
from lmr_jax.models import pchmr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_FIELDS = dict(regressor_hidden=16, regressor_dropout=0.0, num_iterations=1)
LIFTER_FIELDS = dict(hidden_size=8, num_blocks=1, dropout=0.0)
FEATURES = 64  # synthetic_motion/tiny's D


def _experiment(variant):
    spec = importlib.util.spec_from_file_location("pchmr_exp", f"{REPO}/experiments/pchmr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _random_like(shapes, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base_run, base params, lifter_run, lifter params): an HMR run's checkpoint as training
    saves it and a saved lifter, both of random parameters (nothing trained or compiled)."""
    body = smpl.procedural(0)
    base_dir = str(tmp_path_factory.mktemp("hmr"))
    config = config_lib.smoke(config_lib.base_config("hmr"))
    config.model.update(BASE_FIELDS)
    model = models.build_model(config.model, body)
    features = jax.ShapeDtypeStruct((1, config.data.window, FEATURES), np.float32)
    params = _random_like(jax.eval_shape(model.init, jax.random.key(0), features)["params"], 0)
    optimizer = optim_lib.make_optimizer(config.optim, 2)
    state = train.TrainState(step=np.int32(0), params=params, opt_state=optimizer.init(params))
    mngr = checkpoints.checkpoint_manager(base_dir, 1)
    meta = {"compat": checkpoints.compat_view(config), "step": 0}
    mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)))  # fmt: skip
    mngr.wait_until_finished()
    lifter_dir = str(tmp_path_factory.mktemp("lifter"))
    module = lifter_lib.PoseLifter(**LIFTER_FIELDS)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, lifter_lib.INPUT_DIM)))
    lifter_params = _random_like(shapes["params"], 1)
    lifter_lib.save_lifter(
        lifter_lib.Lifter(lifter_params, ml_collections.ConfigDict(LIFTER_FIELDS)), lifter_dir
    )
    return base_dir, params, lifter_dir, lifter_params


def _config(data_dir, runs, variant="smoke_parallel", **fields):
    config = _experiment(variant)
    config.data.data_dir = data_dir
    config.data.train.synthetic.name = "synthetic_motion/tiny"
    config.data.validation.name = "synthetic_motion/tiny"
    config.eval.name = "synthetic_motion/tiny"
    config.model.update(base_run=runs[0], lifter_run=runs[2], **fields)
    return config


def _max_change(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


@pytest.mark.slow  # one PC-HMR train step compiled under pmap, one prediction
def test_calibration_only_smoke_run_under_pmap_then_predict(tiny_data_dir, runs, tmp_path):
    assert jax.local_device_count() == 8
    base_dir, base_params, _, lifter_params = runs
    config = _config(tiny_data_dir, runs, variant="smoke_no_finetune", target="serial")
    config.train.checkpoint_every = 2  # one save (orbax's is slow here)
    assert config.model.freeze_base and config.optim.lr == 1e-3
    workdir = str(tmp_path / "pchmr")
    result = train.train(config, workdir)
    metrics = result.last_metrics
    assert metrics["loss_vertex"] > 0 and metrics["loss_lift"] > 0
    shared = losses.resolve(config.loss).weights
    total = sum(w * metrics[f"loss_{k}"] for k, w in shared.items()) + metrics["loss_vertex"]
    np.testing.assert_allclose(metrics["loss"], total + metrics["loss_lift"], rtol=1e-5)
    last = jax.device_get(result.state.params)
    # The base exactly as loaded; the calibration's W, A and the lifter moved.
    assert _max_change(checkpoints.restore_params(workdir, 2)["base"], base_params) == 0
    assert _max_change(last["base"], base_params) == 0
    a0, w0 = calibration_lib.initial_weights(result.body_model, "h36m17")
    a_logits = np.log(np.maximum(a0, 1e-6))
    assert np.abs(last["calibration"]["w"] - w0).max() > 0
    assert np.abs(last["calibration"]["a_logits"] - a_logits).max() > 0
    assert _max_change(last["lifter"], lifter_params) > 0
    # lmr-predict with the run as --workdir: its fine-tuned base predicts, its lifter, W and A
    # calibrate (serial target); the calibrated mesh's h36m17 joints land on the lifted ones.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(6, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "clip.npz", features=features)
    out_path = str(tmp_path / "clip_pred.npz")
    predict.run(workdir, input_path=str(tmp_path / "clip.npz"), output=out_path)
    pred = np.load(out_path)
    cal, target = pred["vertices_calibrated"], pred["joints_h36m17_target"]
    assert cal.shape == (6, 6890, 3) and np.abs(cal - pred["vertices"]).max() > 1e-3
    joints = np.asarray(smpl.layout_joints(result.body_model, cal, None, "h36m17"))
    before = np.asarray(smpl.layout_joints(result.body_model, pred["vertices"], None, "h36m17"))
    assert np.linalg.norm(joints - target, axis=-1).mean() < 0.2 * np.linalg.norm(
        before - target, axis=-1).mean()  # fmt: skip
    # Side by side: the run's uncalibrated and calibrated meshes over a test video.
    spec = pipeline.DatasetSpec("synthetic_motion/tiny", "test", data_dir=tiny_data_dir)
    rows = calibrated_eval.evaluate_run(result.model, result.state.params,
                                        pipeline.eval_videos(spec), result.body_model,
                                        config.data.window, max_videos=1)  # fmt: skip
    assert list(rows) == ["base", "trained"] and rows["base"]["frames"] > 0
    assert rows["base"]["overall"]["PVE"] != rows["trained"]["overall"]["PVE"]
    # The same run as --calibration on top of another run: its lifter, W and A (trained).
    base_run = predict.load_run(base_dir)
    lifter, weights, template = predict._calibrator(workdir, base_run, base_dir, None)
    model, params = result.model, result.state.params
    trained = model.calibration.apply({"params": params["calibration"]}, method="weights")
    np.testing.assert_allclose(weights[0], trained[0], atol=1e-7)
    np.testing.assert_allclose(weights[1], trained[1], atol=1e-7)
    assert template is None and lifter.weights is weights


class FixedBase(nn.Module):
    """A stand-in regressor: the given mesh, joints and camera whatever the features."""

    outputs: dict

    @nn.compact
    def __call__(self, features, *, train=False):
        del train
        frames = features.shape[:-1]
        return {k: jnp.broadcast_to(jnp.asarray(v), (*frames, *v.shape[2:]))
                for k, v in self.outputs.items()}  # fmt: skip


def test_serial_model_calibrates_the_base_mesh_towards_the_lifted_joints():
    body = smpl.procedural(0)
    rng = np.random.default_rng(2)
    vertices = np.asarray(body.v_template)[None, None] + 0.01 * rng.normal(size=(1, 2, 6890, 3))
    vertices = vertices.astype(np.float32)
    joints24 = np.einsum("jv,btvc->btjc", np.asarray(body.J_regressor), vertices)
    joints = np.asarray(smpl.layout_joints(body, vertices, joints24, "vibe49"))
    cam = np.asarray([[[0.9, 0.05, -0.1], [1.1, -0.2, 0.1]]], np.float32)
    kp2d = np.asarray(geometry.weak_perspective_project(joints, cam))
    base = FixedBase({"vertices": vertices, "joints3d": joints, "cam": cam, "kp2d": kp2d})
    model = pchmr.PCHMR(
        base=base, calibration=calibration_lib.build_calibration(body, "h36m17"),
        lifter=lifter_lib.PoseLifter(**LIFTER_FIELDS), body_model=body,
        target_body=smpl.joint_model(body, "h36m17"),
    )  # fmt: skip
    assert model.training_inputs == () and model.evaluation_inputs == ()
    features = np.zeros((1, 2, FEATURES), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    assert sorted(shapes) == ["calibration", "lifter"]
    a0, w0 = calibration_lib.initial_weights(body, "h36m17")
    params = {"lifter": _random_like(shapes["lifter"], 4),
              "calibration": {"a_logits": np.log(np.maximum(a0, 1e-6)), "w": w0}}  # fmt: skip
    out = jax.device_get(jax.jit(model.apply)({"params": params}, features))
    np.testing.assert_array_equal(out["vertices_base"], vertices)
    # The naive chain: project the base's joints with its camera, lift, place at J_hmr's
    # pelvis, calibrate with W0 and A0.
    lifter = lifter_lib.Lifter(params["lifter"], ml_collections.ConfigDict(LIFTER_FIELDS))
    keypoints = np.concatenate([kp2d, np.ones_like(kp2d[..., :1])], -1)
    joints_hmr = smpl.layout_joints(body, vertices, None, "h36m17")
    target = lifter.lift(keypoints) + joints_hmr[..., :1, :]
    a = jax.nn.softmax(jnp.log(jnp.maximum(a0, 1e-6)), -1)
    bones = calibration_lib.get_skeleton("h36m17").bones
    calibrate = jax.jit(calibration_lib.calibrate, static_argnums=5)
    expected = calibrate(vertices, joints_hmr, target, w0, a, bones)
    np.testing.assert_allclose(out["joints_target"], target, atol=1e-5)
    np.testing.assert_allclose(out["vertices"], expected, atol=1e-5)
    joints24 = np.einsum("jv,btvc->btjc", np.asarray(body.J_regressor), np.asarray(expected))
    joints3d = smpl.layout_joints(body, expected, joints24, "vibe49")
    np.testing.assert_allclose(out["joints3d"], joints3d, atol=1e-5)
    np.testing.assert_allclose(out["kp2d"], geometry.weak_perspective_project(joints3d, cam),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(out["kp2d_base"], kp2d)


def test_template_with_gt_targets_calibrates_the_template_on_labelled_frames():
    body = smpl.procedural(0)
    vertices, joints = (np.asarray(x) for x in calibration_lib.template_source(body, "h36m17"))
    fixed = {k: np.zeros((1, 2, *shape), np.float32)
             for k, shape in (("vertices", (6890, 3)), ("joints3d", (49, 3)), ("cam", (3,)),
                              ("kp2d", (49, 2)))}  # fmt: skip
    model = pchmr.PCHMR(
        base=FixedBase(fixed), calibration=calibration_lib.build_calibration(body, "h36m17"),
        lifter=None, body_model=body, target_body=smpl.joint_model(body, "h36m17"),
        target="gt", template_vertices=vertices, template_joints=joints,
    )  # fmt: skip
    assert model.training_inputs == ("pose", "shape", "has_smpl")
    rng = np.random.default_rng(7)
    labels = {"pose": (0.3 * rng.normal(size=(1, 2, 72))).astype(np.float32),
              "shape": rng.normal(size=(1, 2, 10)).astype(np.float32),
              "has_smpl": np.asarray([[1.0, 0.0]], np.float32)}  # fmt: skip
    features = np.zeros((1, 2, FEATURES), np.float32)
    a0, w0 = calibration_lib.initial_weights(body, "h36m17")
    params = {"calibration": {"a_logits": np.log(np.maximum(a0, 1e-6)), "w": w0}}

    @jax.jit
    def run(params, labels):  # one program: the model and the naive targets
        target = lifter_lib.lifter_targets(body, labels["pose"], labels["shape"])
        return model.apply({"params": params}, features, **labels), target

    out, gt_rel = jax.device_get(run(params, labels))
    gt_rel = gt_rel[0, 0]
    np.testing.assert_allclose(out["joints_target"][0, 0], gt_rel + joints[:1], atol=1e-5)
    np.testing.assert_allclose(out["joints_target"][0, 1], joints, atol=1e-6)  # unlabelled
    np.testing.assert_allclose(out["vertices"][0, 1], vertices, atol=1e-5)  # left as it was
    assert np.abs(out["vertices"][0, 0] - vertices).max() > 0.01


class KeypointReader(nn.Module):
    """Reads the video's kp2d at evaluation, as the parallel PC-HMR does."""

    @nn.compact
    def __call__(self, features, *, train=False, kp2d=None):
        return {"x": kp2d[..., 0, :2] + 0.0 * nn.Dense(2)(features)}


def test_evaluation_passes_the_models_inputs_window_by_window():
    n, window = 11, 4
    rng = np.random.default_rng(6)
    features = rng.normal(size=(n, 3)).astype(np.float32)
    kp2d = rng.normal(size=(n, 49, 3)).astype(np.float32)
    model = KeypointReader()
    params = model.init(jax.random.key(0), features[None, :window], kp2d=kp2d[None, :window])
    apply = runner.make_apply_fn(model, ("x",))
    for protocol in ("vibe", "tcmr"):  # windows of consecutive frames; repeated edge frames
        plan = evaluate.frame_plan(n, window, protocol)
        out = evaluate.predict_frames(lambda f, **x: apply(params["params"], f, **x), features,
                                      plan, inputs={"kp2d": kp2d})  # fmt: skip
        np.testing.assert_array_equal(out["x"], kp2d[plan.frames, 0, :2])


def test_learning_rate_groups_by_value():
    optim = config_lib.base_config("lmr").optim
    optim.update(optimizer="sgd", lr=0.5, grad_clip=0.0)
    optimizer = optim_lib.make_optimizer(optim, 10, {"base": 0.01, "lifter": 0.1})
    params = {"base": {"w": np.ones(3, np.float32)}, "lifter": {"w": np.ones(2, np.float32)},
              "calibration": {"w": np.ones(4, np.float32)}}  # fmt: skip
    grads = jax.tree.map(lambda p: 2.0 * np.ones_like(p), params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    moved = jax.tree.map(lambda p, u: np.asarray(optax.apply_updates(p, u)) - p, params, updates)
    np.testing.assert_allclose(moved["calibration"]["w"], -1.0, rtol=1e-6)  # -lr x grad
    np.testing.assert_allclose(moved["base"]["w"], -0.01, rtol=1e-6)
    np.testing.assert_allclose(moved["lifter"]["w"], -0.1, rtol=1e-6)
    config = ml_collections.ConfigDict({"model": pchmr.default_config()})
    assert models.learning_rate_scales(config) == {"base": 0.01, "lifter": 0.01}
    config.model.target = "gt"  # no lifter, no lifter group
    assert models.learning_rate_scales(config) == {"base": 0.01}
    assert models.learning_rate_scales(config_lib.base_config("lmr")) == {}
    wrong = optim_lib.make_optimizer(optim, 10, {"backbone": 0.1})
    with pytest.raises(ValueError, match="learning-rate scale for parameter group 'backbone'"):
        wrong.update(grads, wrong.init(params), params)


def test_vertex_and_lift_losses_against_a_naive_form():
    body = smpl.procedural(0)
    rng = np.random.default_rng(3)
    b, t = 2, 3
    pose = (0.3 * rng.normal(size=(b, t, 72))).astype(np.float32)
    shape = rng.normal(size=(b, t, 10)).astype(np.float32)
    noise = (0.02 * rng.normal(size=(b, t, 6890, 3))).astype(np.float32)
    lifted = (0.3 * rng.normal(size=(b, t, 17, 3))).astype(np.float32)
    has_smpl = np.asarray([[1, 0, 1], [1, 1, 0]], np.float32)
    valid = np.asarray([[1, 1, 1], [0, 1, 1]], np.float32)
    batch = {"pose": pose, "shape": shape, "has_smpl": has_smpl, "valid": valid}
    config = ml_collections.ConfigDict({"smpl_path": "", "model": pchmr.default_config()})
    config.model.update(w_vertex=2.0, w_lift=3.0)

    @jax.jit
    def run(batch):  # one program: the terms and the ground truth of the naive form
        gt_vertices = smpl.forward(body, shape, geometry.pose72_to_rotmats(pose))[0]
        vertices = gt_vertices + noise
        outputs = {"vertices": vertices, "lifted": lifted}
        gt_rel = lifter_lib.lifter_targets(body, pose, shape)
        return models.extra_losses(config, outputs, batch), vertices, gt_vertices, gt_rel

    terms, vertices, gt_vertices, gt_rel = jax.device_get(run(batch))
    vertex_errors, lift_errors = [], []
    for i in range(b):
        for j in range(t):
            if has_smpl[i, j] and valid[i, j]:
                vertex_errors.append(np.abs(vertices[i, j] - gt_vertices[i, j]).mean())
                lift_errors.append(((lifted[i, j] - gt_rel[i, j]) ** 2).sum(-1).mean())
    assert len(vertex_errors) == 3
    np.testing.assert_allclose(terms["vertex"], 2.0 * np.mean(vertex_errors), rtol=1e-5)
    np.testing.assert_allclose(terms["lift"], 3.0 * np.mean(lift_errors), rtol=1e-5)
    assert "lift" not in jax.eval_shape(lambda o, b: models.extra_losses(config, o, b),
                                        {"vertices": vertices}, batch)  # fmt: skip


def _message(fn):
    with pytest.raises(ValueError) as error:
        fn()
    text = str(error.value)
    assert "\n" not in text and text.endswith(".")
    return text


def test_bad_runs_and_fields_are_one_sentence(runs, tmp_path):
    body = smpl.procedural(0)
    build = lambda **f: models.build_model(models.complete_model_config(
        dict(name="pchmr", **f)), body)  # fmt: skip
    assert _message(build).startswith("model.base_run is '', expected the --workdir of a "
                                      "trained regressor run")  # fmt: skip
    missing = str(tmp_path / "nowhere")
    assert _message(lambda: build(base_run=missing)).startswith(
        f"model.base_run is '{missing}', which holds no checkpoints"
    )
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    empty = str(tmp_path / "empty")
    assert _message(lambda: build(base_run=empty)).startswith(
        f"model.base_run is '{empty}', which holds no checkpoint with a saved model config"
    )
    assert _message(lambda: build(base_run=runs[0])).startswith(
        "model.lifter_run is '', expected the --workdir of a trained pose lifter"
    )
    assert _message(lambda: build(base_run=runs[0], lifter_run=missing)).startswith(
        f"model.lifter_run is '{missing}', which holds no lifter"
    )
    assert _message(lambda: build(base_run=runs[0], target="lifted")) == (
        "model.target is 'lifted', expected one of ('serial', 'parallel', 'gt')."
    )
    assert _message(lambda: build(base_run=runs[0], target="gt", freeze_base=1)) == (
        "model.freeze_base is 1, expected True or False."
    )
    assert build(base_run=runs[0], target="gt").lifter is None  # no lifter needed
    parallel = build(base_run=runs[0], lifter_run=runs[2], target="parallel")
    assert parallel.evaluation_inputs == ("kp2d",) == parallel.training_inputs
    assert _message(lambda: calibrated.trained_calibration(parallel, {}, "RUN")) == (
        "RUN is a PC-HMR run with model.target 'parallel', which needs the video's keypoints "
        "or labels; expected a 'serial' run for prediction."
    )
    features = tmp_path / "f.npz"
    np.savez(features, features=np.zeros((3, FEATURES), np.float32))
    for wrong, sentence in (
        (missing, "holds neither a pose lifter"),
        (runs[0], "is a run of model 'hmr', expected a pose lifter run"),
    ):
        assert sentence in _message(lambda w=wrong: predict.run(
            runs[0], input_path=str(features), calibration=w))  # fmt: skip
    # A good pair of runs: params['base'] and params['lifter'] are theirs.
    model = build(base_run=runs[0], lifter_run=runs[2])
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, FEATURES)))
    whole = ml_collections.ConfigDict({"model": models.complete_model_config(
        dict(name="pchmr", base_run=runs[0], lifter_run=runs[2]))})  # fmt: skip
    loaded = models.initial_params(whole, shapes["params"], checkpoints.read_run)
    assert _max_change(loaded["base"], runs[1]) == 0 and _max_change(loaded["lifter"], runs[3]) == 0
    assert isinstance(loaded["calibration"]["w"], jax.ShapeDtypeStruct)  # left as it was
    config = ml_collections.ConfigDict({"model": models.complete_model_config(
        dict(name="pchmr", base_run=empty, lifter_run=runs[2]))})  # fmt: skip
    assert _message(lambda: models.initial_params(config, {"base": {}}, checkpoints.read_run)
                    ).startswith(f"model.base_run is '{empty}', which holds no readable "
                                 "checkpoint")  # fmt: skip

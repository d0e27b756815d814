"""Inference: window stitching, streaming = batch, the predict command, its files and errors."""

import functools
import os

import jax
import numpy as np
import pytest

from lmr_jax import evaluate, predict, predict_io, train
from tests.models.small_models import body_model, built, features, small_config
from tests.runs import smoke_config
from tests.test_main import run_main

D = 64  # feature width of synthetic_motion/tiny


@pytest.mark.parametrize("n,window,overlap", [(17, 16, 8), (40, 16, 8), (100, 16, 4),
                                              (33, 8, 0), (50, 16, 15)])  # fmt: skip
def test_stitch_plan_covers_every_frame_once_and_blends_overlaps(n, window, overlap):
    starts, weights = predict.stitch_plan(n, window, overlap)
    total = np.zeros(n)
    seen = np.zeros(n, int)
    for s, w in zip(starts, weights, strict=True):
        assert 0 <= s and s + window <= n
        total[s : s + window] += w
        seen[s : s + window] += 1
    np.testing.assert_allclose(total, 1.0, atol=1e-12)  # every frame's weights add up to 1
    assert starts[0] == 0 and starts[-1] == n - window
    single = seen == 1
    assert single.any()
    for s, w in zip(starts, weights, strict=True):  # a frame one window sees takes it whole
        np.testing.assert_array_equal(w[single[s : s + window]], 1.0)
    if overlap:  # shared frames are blended, with weights strictly between 0 and 1
        shared = [w[seen[s : s + window] > 1] for s, w in zip(starts, weights, strict=True)]
        values = np.concatenate(shared)
        assert len(values) and (values > 0).all() and (values < 1).all()
    else:
        assert (seen[: starts[-1]] == 1).all()


def test_stitch_plan_refuses_a_bad_overlap():
    with pytest.raises(predict.PredictError, match="overlap is 16"):
        predict.stitch_plan(40, 16, 16)


def test_nearest_rotation_projects_blends_back_onto_rotations():
    rng = np.random.default_rng(0)
    a, b = (np.linalg.qr(rng.normal(size=(5, 3, 3)))[0] for _ in range(2))
    a[:, :, 0] *= np.sign(np.linalg.det(a))[:, None]
    b[:, :, 0] *= np.sign(np.linalg.det(b))[:, None]
    r = predict.nearest_rotation(0.5 * a + 0.5 * b)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape),
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(predict.nearest_rotation(a), a, atol=1e-12)


def _small(name, **overrides):
    """A small model, its params and its outputs on `features(0)` (jitted once per session)."""
    model, params, outputs, _ = built(name, tuple(sorted(overrides.items())))
    return model, params, jax.device_get(outputs)


def test_one_window_equals_a_single_pass_and_long_videos_stitch():
    model, params, single = _small("lmr")
    x = np.asarray(features(0)[0])  # 8 frames: one window of 8 is one pass
    out = predict.predict_sequence(model, params, body_model(), x, window=8)
    np.testing.assert_allclose(out["rotmats"], single["rotmats"][0], atol=1e-6)
    np.testing.assert_allclose(out["vertices"], single["vertices"][0], atol=1e-5)
    np.testing.assert_allclose(out["kp2d"], single["kp2d"][0], atol=1e-5)
    np.testing.assert_allclose(out["joints_vibe49"], single["joints3d"][0], atol=1e-5)
    # Windows of 4 with overlap 2 start at 0, 2, 4: frames 0-1 come from window 0 alone,
    # frames 2-3 blend windows 0 and 1.
    stitched = predict.predict_sequence(model, params, body_model(), x, window=4, overlap=2)
    starts, _ = predict.stitch_plan(8, 4, 2)
    windows = np.stack([x[s : s + 4] for s in starts])
    apply = functools.partial(predict._apply_fn(model), params)
    first = evaluate.run_windows(apply, windows)["rotmats"][0]
    np.testing.assert_allclose(stitched["rotmats"][:2], first[:2], atol=1e-5)
    assert not np.allclose(stitched["rotmats"][2:4], first[2:4], atol=1e-4)
    shapes = {"pose": (8, 72), "betas": (8, 10), "cam": (8, 3), "vertices": (8, 6890, 3),
              "joints_common14": (8, 14, 3)}  # fmt: skip
    for k, shape in shapes.items():
        assert stitched[k].shape == shape and np.isfinite(stitched[k]).all()


@pytest.mark.parametrize(
    "name,overrides,chunk",
    [("lmr", {}, 1), ("lmr", {"camera": "dense", "gru_layers": 2}, 4),
     ("lmr", {"single_rnn": True}, 4), ("vibe", {}, 4), ("hmr", {}, 2)],
)  # fmt: skip
def test_streaming_gives_the_outputs_of_one_pass(name, overrides, chunk):
    model, params, whole = _small(name, **overrides)
    x = np.asarray(features(0)[0])  # 8 frames
    stream = predict.Stream(model, params)
    pieces = [stream.push(x[i] if chunk == 1 else x[i : i + chunk]) for i in range(0, 8, chunk)]
    assert stream.frames_seen == 8
    for k in ("rotmats", "betas", "cam", "vertices", "kp2d"):
        got = np.concatenate([p[k] for p in pieces])
        np.testing.assert_allclose(got, whole[k][0], atol=2e-5, err_msg=k)
    piece = (lambda i: x[i]) if chunk == 1 else (lambda i: x[i * chunk : (i + 1) * chunk])
    stream.reset()  # a new sequence starts from zero states
    np.testing.assert_allclose(stream.push(piece(0))["rotmats"], pieces[0]["rotmats"], atol=2e-5)
    stream.reset()  # the second piece without the first: only a per-frame model is unchanged
    alone = stream.push(piece(1))["rotmats"]
    assert np.allclose(alone, pieces[1]["rotmats"], atol=1e-5) == (name == "hmr")


def test_streaming_refuses_bidirectional_models_and_bad_frames():
    model, params, _ = _small("lmr")
    stream = predict.Stream(model, params)
    with pytest.raises(predict.PredictError, match=r"expected \[16\] or \[n, 16\]"):
        stream.push(np.zeros((2, 5)))
    from lmr_jax.models import build_model

    bidirectional = build_model(small_config("lmr", bidirectional=True), body_model())
    with pytest.raises(predict.PredictError, match="bidirectional model cannot stream"):
        predict.Stream(bidirectional, params)


def test_streaming_refuses_non_finite_frames_and_keeps_its_state():
    model, params, _ = _small("lmr")
    x = np.asarray(features(0)[0])  # 8 frames
    stream, clean = predict.Stream(model, params), predict.Stream(model, params)
    for stream_ in (stream, clean):
        stream_.push(x[:3])
    bad = x[3:5].copy()
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"frame 4 \(row 1 of this call\) holds NaN or infinite"):
        stream.push(bad)
    with pytest.raises(predict.PredictError, match="frame 3 .*expected finite values"):
        stream.push(np.full(stream.width, np.inf))
    assert stream.frames_seen == 3
    for chunk in (x[3:4], x[4:8]):  # the later frames as if the bad pushes never happened
        got, want = stream.push(chunk), clean.push(chunk)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert np.isfinite(got["vertices"]).all()


def test_streaming_outputs_carry_the_npz_names_and_values():
    model, params, _ = _small("lmr")
    x = np.asarray(features(0)[0])  # 8 frames: one window of 8 is one pass
    streamed = predict.Stream(model, params).push(x)
    whole = predict.predict_sequence(model, params, body_model(), x, window=8)
    assert set(streamed) == {"rotmats", "pose", "betas", "cam", "vertices", "joints_vibe49",
                             "joints_common14", "kp2d"}  # fmt: skip
    for k, value in streamed.items():
        np.testing.assert_allclose(value, whole[k], atol=2e-5, err_msg=k)


def test_crop_to_image_maps_crop_coordinates_to_pixels():
    cam = np.array([[0.8, 0.1, -0.2]])
    bbox = np.array([[320.0, 240.0, 100.0, 100.0]])
    s, tx, ty = predict.crop_to_image(cam, bbox)[0]
    point = np.array([0.3, -0.5])
    crop = cam[0, 0] * (point + cam[0, 1:])  # in [-1, 1] across the 1.2 x bbox crop
    np.testing.assert_allclose(s * point + [tx, ty], bbox[0, :2] + 60.0 * crop, atol=1e-9)


@pytest.fixture(scope="module")
def run_dir(tiny_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("predict_run")
    train.train(smoke_config(tiny_data_dir, num_steps=1, checkpoint_every=1), str(workdir))
    return str(workdir)


def test_load_run_rebuilds_the_model_and_refuses_another(run_dir, tiny_data_dir):
    model, params, info = predict.load_run(run_dir)
    assert info["step"] == 1 and info["window"] == 8 and predict.feature_width(params) == D
    same = predict.load_run(os.path.join(run_dir, "checkpoints", "1"))
    jax.tree.map(np.testing.assert_array_equal, params, same[1])
    vibe = smoke_config(tiny_data_dir, model="vibe").model
    with pytest.raises(predict.PredictError, match="holds another model.*name was 'lmr'"):
        predict.load_run(run_dir, vibe)
    with pytest.raises(predict.PredictError, match="no checkpoints folder"):
        predict.load_run(os.path.join(run_dir, "plots"))
    with pytest.raises(predict.PredictError, match="no checkpoint 7"):
        predict.load_run(os.path.join(run_dir, "checkpoints", "7"))


def test_params_that_do_not_fit_the_saved_model_are_refused(run_dir):
    from lmr_jax.models import build_model

    _, params, _ = predict.load_run(run_dir)
    other = small_config("lmr", hidden_size=8)
    with pytest.raises(predict.PredictError, match="does not hold the parameters"):
        predict_io._check_params(build_model(other, body_model()), params, 8, "this checkpoint")


def _features_file(path, n=21, **extra):
    rng = np.random.default_rng(0)
    arrays = {"features": rng.normal(size=(n, D)).astype(np.float32), **extra}
    np.savez(path, **arrays)
    return arrays


def test_predict_command_writes_documented_npz_and_meshes(run_dir, tmp_path):
    bbox = np.tile([[300.0, 200.0, 150.0, 150.0]], (21, 1))
    source = _features_file(tmp_path / "clip.npz", bbox=bbox, frame_ids=np.arange(100, 121))
    out = tmp_path / "out" / "pred.npz"
    result = run_main("--mode=predict", f"--workdir={run_dir}", f"--input={tmp_path}/clip.npz",
                      f"--output={out}", f"--obj_dir={tmp_path}/objs",
                      f"--glb={tmp_path}/clip.glb")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    closing = result.stdout.splitlines()[-1]  # names every file and folder written
    assert closing == f"wrote {out}, {tmp_path}/objs, {tmp_path}/clip.glb"
    assert all(os.path.exists(p) for p in closing.removeprefix("wrote ").split(", "))
    got = dict(np.load(out))
    shapes = {"pose": (21, 72), "rotmats": (21, 24, 3, 3), "betas": (21, 10), "cam": (21, 3),
              "vertices": (21, 6890, 3), "faces": (13776, 3), "joints_vibe49": (21, 49, 3),
              "joints_common14": (21, 14, 3), "kp2d": (21, 49, 2), "bbox": (21, 4),
              "cam_image": (21, 3), "kp2d_image": (21, 49, 2), "frame_ids": (21,)}  # fmt: skip
    for k, shape in shapes.items():
        assert got[k].shape == shape, k
    assert str(got["model"]) == "lmr" and int(got["step"]) == 1 and int(got["overlap"]) == 4
    np.testing.assert_array_equal(got["frame_ids"], source["frame_ids"])
    # The same prediction in-process: the file round-trips the arrays.
    model, params, info = predict.load_run(run_dir)
    want = predict.predict_sequence(model, params, info["body_model"], source["features"], 8)
    for k in ("pose", "rotmats", "vertices", "kp2d", "joints_common14"):
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, err_msg=k)  # another process
    # kp2d_image is kp2d carried to pixels through the 1.2 x bbox crop.
    np.testing.assert_allclose(got["kp2d_image"], bbox[:, None, :2] + 90.0 * got["kp2d"],
                               atol=1e-3)  # fmt: skip
    objs = sorted(os.listdir(tmp_path / "objs"))
    assert len(objs) == 21 and objs[0] == "frame_000100.obj"
    assert (tmp_path / "clip.glb").read_bytes()[:4] == b"glTF"


def test_predict_from_a_dataset_video_by_name(run_dir, tiny_data_dir, tmp_path):
    from lmr_jax.data import pipeline

    spec = pipeline.DatasetSpec("synthetic_motion/tiny", "test", tiny_data_dir)
    video = next(pipeline.eval_videos(spec))
    flags = [f"--workdir={run_dir}", "--config=experiments/lmr_synthetic.py:smoke",
             f"--config.data.data_dir={tiny_data_dir}", "--config.eval.name=synthetic_motion/tiny",
             "--config.model.hidden_size=16", "--config.model.num_iterations=2"]  # fmt: skip
    out = tmp_path / "video.npz"
    result = run_main("--mode=predict", *flags, f"--video={video['vid_name']}", f"--output={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.load(out)
    assert got["vertices"].shape == (len(video["features"]), 6890, 3)
    np.testing.assert_array_equal(got["frame_ids"], video["frame_ids"])
    result = run_main("--mode=predict", *flags, "--video=nope", f"--output={out}")
    assert result.returncode != 0 and "has no video 'nope'" in result.stderr


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: np.savez(p, feats=np.zeros((3, D))), "has no 'features' array"),
        (lambda p: np.savez(p, features=np.zeros((3, 5))), r"shape \[3, 5\], expected \[N, 64\]"),
        (lambda p: np.savez(p, features=np.zeros((0, D))), r"expected \[N, 64\] with N >= 1"),
        (lambda p: open(p, "wb").close(), "is not a readable .npz file"),
        (lambda p: np.savez(p, features=np.full((3, D), np.nan)), "NaN"),
        (lambda p: np.savez(p, features=np.zeros((3, D)), bbox=np.zeros((2, 4))),
         r"bbox has shape \[2, 4\], expected \[3, 4\]"),
    ],
)  # fmt: skip
def test_bad_feature_files_are_refused_clearly(tmp_path, make, message):
    path = str(tmp_path / "bad.npz")
    make(path)
    with pytest.raises(predict.PredictError, match=message):
        predict.read_features_file(path, D)


def test_predict_command_errors_are_one_sentence(run_dir, tmp_path):
    np.savez(tmp_path / "narrow.npz", features=np.zeros((4, 7), np.float32))
    result = run_main("--mode=predict", f"--workdir={run_dir}", f"--input={tmp_path}/narrow.npz")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "features has shape [4, 7], expected [N, 64]" in result.stderr
    result = run_main("--mode=predict", f"--workdir={run_dir}")
    assert "exactly one of --input" in result.stderr
    result = run_main("--mode=predict", f"--workdir={run_dir}", "--video=x")
    assert "--video needs --config" in result.stderr

"""Pixels end to end: synthetic_motion/tiny_frames builds and reads back, the pipeline decodes
normalised frames, and experiments/lmr_frames.py:smoke trains under pmap."""

import importlib.util
import io

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from lmr_jax import train
from lmr_jax.data import build, pipeline
from lmr_jax.data.extract import IMAGENET_MEAN, IMAGENET_STD

NAME = "synthetic_motion/tiny_frames"


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    data_dir = str(tmp_path_factory.mktemp("frames"))
    build.build(NAME, data_dir)
    return data_dir


def _decoded(jpeg: bytes) -> np.ndarray:  # the naive reference of the pipeline's decoding
    rgb = np.asarray(Image.open(io.BytesIO(jpeg)), np.float64) / 255.0
    return (rgb - IMAGENET_MEAN) / IMAGENET_STD


def test_frames_config_holds_tinys_videos_with_their_frames(frames_dir, tiny_data_dir):
    info = tfds.builder(NAME, data_dir=frames_dir).info
    assert info.metadata["image_size"] == 64 and info.metadata["frames_format"] == "jpeg"
    for split in ("train", "validation"):
        frames = tfds.data_source(NAME, split=split, data_dir=frames_dir)
        features = tfds.data_source("synthetic_motion/tiny", split=split, data_dir=tiny_data_dir)
        for i in (0, len(frames) - 1):
            a, b = frames[i], features[i]
            assert set(a) == set(b) | {"frames"}
            for field in set(b) - {"vid_name"}:
                np.testing.assert_array_equal(a[field], b[field], err_msg=field)
            assert a["vid_name"].decode() == f"synthetic_motion/tiny_frames/{split}/{i:05d}"
            assert a["frames"].dtype == object and len(a["frames"]) == len(a["kp2d"])
            image = np.asarray(Image.open(io.BytesIO(a["frames"][-1])))
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 10


def test_pipeline_yields_normalised_frames(frames_dir, tiny_data_dir):
    spec = pipeline.DatasetSpec(NAME, data_dir=frames_dir, stride=4, inputs="frames")
    example = pipeline.open_dataset(spec).read(0)
    num = len(example["frames"])
    window = pipeline.cut_window(example, num - 3, 8, "frames")
    assert window["features"].shape == (8, 64, 64, 3) and window["features"].dtype == np.float32
    for t in range(3):
        expected = _decoded(example["frames"][num - 3 + t])
        np.testing.assert_allclose(window["features"][t], expected, atol=1e-5)
    assert not window["features"][3:].any()  # padded frames are zeros
    np.testing.assert_array_equal(window["valid"], [1, 1, 1, 0, 0, 0, 0, 0])
    batch = next(iter(pipeline.train_dataset([spec], window=8, global_batch_size=8,
                                             num_local_devices=4, seed=0)))  # fmt: skip
    assert batch["features"].shape == (4, 2, 8, 64, 64, 3)
    assert batch["kp2d"].shape == (4, 2, 8, 49, 3)
    assert -2.2 < batch["features"].min() and batch["features"].max() < 2.7
    video = next(pipeline.eval_videos(spec))
    assert video["features"].shape == (num, 64, 64, 3)
    np.testing.assert_allclose(video["features"][5], _decoded(example["frames"][5]), atol=1e-5)
    with pytest.raises(pipeline.DatasetError, match="has no 'frames' field"):
        spec = pipeline.DatasetSpec(
            "synthetic_motion/tiny", data_dir=tiny_data_dir, inputs="frames"
        )
        next(pipeline.eval_videos(spec))


def _experiment():
    spec = importlib.util.spec_from_file_location("lmr_frames", "experiments/lmr_frames.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants():
    module = _experiment()
    full, cpu = module.get_config(""), module.get_config("cpu")
    assert (full.model.backbone.depth, full.data.image_size, full.model.hidden_size) == (
        50,
        224,
        512,
    )
    assert (cpu.model.backbone.depth, cpu.data.image_size, cpu.data.inputs) == (18, 0, "frames")
    assert cpu.data.train.synthetic.name == "synthetic_motion/frames"


@pytest.mark.slow  # init and the step's compile (~50 s on 2 cores)
def test_smoke_run_trains_from_pixels_under_pmap(frames_dir, tmp_path, monkeypatch):
    config = _experiment().get_config("smoke")
    config.data.data_dir = frames_dir
    config.train.checkpoint_every = 0
    config.eval.split = ""  # evaluation from pixels: FromPixels' tests and the pipeline's above
    initial = []  # the initial parameters, copied to the host before the donated step runs
    init_state = train.init_state

    def recording_init_state(*args, **kwargs):
        state = init_state(*args, **kwargs)
        initial.append(jax.device_get(state.params))
        return state

    monkeypatch.setattr(train, "init_state", recording_init_state)
    result = train.train(config, str(tmp_path))
    assert jax.local_device_count() == 8 and config.train.batch_size == 8  # 1 window a device
    assert int(result.state.step) == 2 and np.isfinite(result.last_metrics["loss"])
    assert result.last_metrics["finite"] == 1.0
    (start,) = initial
    for part in ("backbone", "inner"):  # the fine-tuned backbone trains too
        moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                             start[part], result.state.params[part])  # fmt: skip
        assert max(jax.tree.leaves(moved)) > 1e-6, part
    stats = jax.tree.map(lambda a, b: np.array_equal(a, b), start["backbone_stats"],
                         result.state.params["backbone_stats"])  # fmt: skip
    assert all(jax.tree.leaves(stats))  # frozen BatchNorm statistics stay

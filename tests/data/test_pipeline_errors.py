"""Bad input to the pipeline: one DatasetError naming the dataset, the video and the field."""

import numpy as np
import pytest

from lmr_jax.data.pipeline import DatasetSpec, eval_videos, train_dataset
from lmr_jax.data.schema import DatasetError
from tests.data.datasets import make_video, write_dataset


def _first_batch(spec, **kwargs):
    kwargs = {"global_batch_size": 2, "num_local_devices": 1, "seed": 0, **kwargs}
    return next(iter(train_dataset([spec], **kwargs)))


def test_missing_dataset_says_how_to_build_it(tmp_path):
    spec = DatasetSpec("synthetic_motion/small", data_dir=str(tmp_path))
    with pytest.raises(DatasetError) as info:
        _first_batch(spec)
    assert str(info.value) == (
        f"dataset 'synthetic_motion/small' is not built in {tmp_path}; build it with: "
        f"python -m lmr_jax.data.build synthetic_motion/small --data_dir={tmp_path}"
    )
    with pytest.raises(DatasetError, match="build it with"):
        list(eval_videos(DatasetSpec("nothing_here/x", data_dir=str(tmp_path))))


def test_unknown_split(tmp_path):
    write_dataset(tmp_path, "good_data/a", {"train": [make_video(20)]})
    spec = DatasetSpec("good_data/a", "tset", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match=r"has no split 'tset', expected one of \['train'\]"):
        _first_batch(spec)


def test_nan_features_are_refused_at_read_time(tmp_path):
    bad = make_video(20, name="clip_7")
    bad["features"][12, 3] = np.nan
    write_dataset(tmp_path, "nan_data/a", {"train": [bad]})
    spec = DatasetSpec("nan_data/a", data_dir=str(tmp_path))
    message = (
        r"dataset 'nan_data/a:train', video 'clip_7': field 'features' holds NaN or inf "
        r"\(first at frame 12\)"
    )
    with pytest.raises(DatasetError, match=message):
        _first_batch(spec)
    with pytest.raises(DatasetError, match=message):
        list(eval_videos(spec))


def test_wrong_joint_layout_is_refused(tmp_path):
    write_dataset(tmp_path, "j24_data/a", {"train": [make_video(20, joints=24, name="v0")]})
    spec = DatasetSpec("j24_data/a", data_dir=str(tmp_path))
    with pytest.raises(
        DatasetError,
        match=r"video 'v0': field 'kp2d' has shape \[20, 24, 3\], "
        r"expected \[20, 49, 3\] \(layout vibe49 has 49 joints\)",
    ):
        _first_batch(spec)
    write_dataset(
        tmp_path, "smpl_layout/a", {"train": [make_video(20)]}, metadata={"layout": "smpl24"}
    )
    with pytest.raises(
        DatasetError, match="declares joint layout 'smpl24' in its metadata, expected 'vibe49'"
    ):
        _first_batch(DatasetSpec("smpl_layout/a", data_dir=str(tmp_path)))


def test_mixture_of_different_feature_sizes_is_refused(tmp_path):
    write_dataset(tmp_path, "dim_a/a", {"train": [make_video(20, dim=8)]})
    write_dataset(tmp_path, "dim_b/a", {"train": [make_video(20, dim=16)]})
    specs = [
        DatasetSpec("dim_a/a", data_dir=str(tmp_path)),
        DatasetSpec("dim_b/a", data_dir=str(tmp_path)),
    ]
    with pytest.raises(DatasetError, match="share a feature size.*'dim_a/a:train': 8.*: 16"):
        train_dataset(specs, global_batch_size=2, num_local_devices=1, seed=0)


def test_bad_arguments(tmp_path):
    write_dataset(tmp_path, "args_data/a", {"train": [make_video(20)]})
    spec = DatasetSpec("args_data/a", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="must split evenly over 2 process"):
        _first_batch(spec, global_batch_size=6, num_local_devices=2, process_count=2)
    with pytest.raises(ValueError, match="process_index 2 is not in"):
        _first_batch(spec, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="weights must be positive"):
        train_dataset(
            [spec, DatasetSpec("args_data/a", data_dir=str(tmp_path), weight=0)],
            global_batch_size=2,
            num_local_devices=1,
            seed=0,
        )
    with pytest.raises(ValueError, match="same window"):
        train_dataset(
            [spec, DatasetSpec("args_data/a", data_dir=str(tmp_path), window=8)],
            global_batch_size=2,
            num_local_devices=1,
            seed=0,
        )


def test_unknown_config_of_a_known_builder(tmp_path):
    import tfds_builders.synthetic_motion  # noqa: F401  (registers the builder with TFDS)

    spec = DatasetSpec("synthetic_motion/huge", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="dataset 'synthetic_motion/huge' cannot be opened: "):
        _first_batch(spec)

"""The sequence schema's validation: a good example passes, each kind of bad input is named."""

import numpy as np
import pytest

from lmr_jax.data import schema
from tests.data.datasets import make_video


def test_valid_example_passes():
    schema.validate_example(make_video(7, dim=16), "ds", feature_dim=16)


def test_empty_labels_are_zero_with_flags_off():
    labels = schema.empty_labels(5)
    assert labels["kp3d"].shape == (5, 49, 4) and labels["pose"].shape == (5, 72)
    assert not labels["has_smpl"].any() and not labels["has_kp3d"].any()
    np.testing.assert_array_equal(labels["frame_ids"], np.arange(5))


def _broken(field, value):
    example = make_video(6, dim=8, name="clip_3")
    example[field] = value
    return example


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("kp2d", np.zeros((6, 24, 3), np.float32), r"shape \[6, 24, 3\], expected \[6, 49, 3\]"),
        ("kp3d", np.zeros((6, 49, 3), np.float32), r"expected \[6, 49, 4\]"),
        ("pose", np.zeros((5, 72), np.float32), r"shape \[5, 72\], expected \[6, 72\]"),
        ("shape", np.zeros((6, 10), np.float64), "dtype float64, expected float32"),
        ("frame_ids", np.zeros(6, np.float32), "dtype float32, expected int32"),
        ("features", np.full((6, 8), np.nan, np.float32), r"NaN or inf \(first at frame 0\)"),
        ("cam", np.array([[0, 0, 0]] * 5 + [[np.inf, 0, 0]], np.float32), "frame 5"),
        ("has_smpl", np.full(6, 0.5, np.float32), "other than 0 and 1"),
        ("features", np.zeros((0, 8), np.float32), "N >= 1"),
        ("vid_name", 7, "expected text"),
    ],
)
def test_bad_field_is_named(field, value, problem):
    with pytest.raises(schema.DatasetError, match=problem) as info:
        schema.validate_example(_broken(field, value), "my_data/cfg:train")
    message = str(info.value)
    assert "dataset 'my_data/cfg:train'" in message
    assert f"field '{field}'" in message
    if field != "vid_name":
        assert "video 'clip_3'" in message


def test_missing_field_and_bad_confidence_and_feature_dim():
    example = make_video(4)
    del example["has_kp3d"]
    with pytest.raises(schema.DatasetError, match="field 'has_kp3d' is missing"):
        schema.validate_example(example, "ds")
    example = make_video(4)
    example["kp2d"][0, 0, 2] = 2.0
    with pytest.raises(schema.DatasetError, match="kp2d' has confidences outside"):
        schema.validate_example(example, "ds")
    with pytest.raises(
        schema.DatasetError, match=r"features' has shape \[4, 8\], expected \[4, 16"
    ):
        schema.validate_example(make_video(4, dim=8), "ds", feature_dim=16)


def test_dataset_error_is_a_value_error():
    assert issubclass(schema.DatasetError, ValueError)


def test_tfds_features_match_the_schema():
    features = schema.tfds_features(32)
    assert set(features.keys()) == set(schema.FIELDS) | {"vid_name"}
    assert features["kp3d"].shape == (None, 49, 4)
    assert features["features"].shape == (None, 32)
    assert features["frame_ids"].np_dtype == np.int32

"""The synthetic_motion builder: build `tiny` into a temp dir and read it back without TF."""

import dataclasses
import sys

import numpy as np
import tensorflow_datasets as tfds

from lmr_jax import smpl
from lmr_jax.data import build, featurize, schema, synthetic
from tfds_builders.synthetic_motion import Builder


def test_round_trip(tiny_data_dir):
    sources = tfds.data_source("synthetic_motion/tiny", data_dir=tiny_data_dir)
    assert {k: len(v) for k, v in sources.items()} == {"train": 6, "validation": 2, "test": 2}
    info = tfds.builder("synthetic_motion/tiny", data_dir=tiny_data_dir).info
    assert info.metadata["layout"] == "vibe49" and info.metadata["feature_dim"] == 64
    assert info.metadata["body"] == "procedural"
    for split, source in sources.items():
        for i in range(len(source)):
            example = source[i]
            schema.validate_example(example, f"tiny:{split}", feature_dim=64)
            assert example["vid_name"].decode() == f"synthetic_motion/tiny/{split}/{i:05d}"
            assert info.metadata["num_frames"][split][i] == len(example["features"])
            assert 24 <= len(example["features"]) <= 48
            assert example["has_smpl"].all() and example["has_kp3d"].all()
    assert "tensorflow" not in sys.modules


def test_examples_are_the_seeded_videos(tiny_data_dir):
    example = tfds.data_source("synthetic_motion/tiny", split="validation", data_dir=tiny_data_dir)[
        1
    ]
    config = synthetic.MotionConfig(num_frames=(24, 48))
    video = synthetic.generate_video((0, 1, 1), config)  # seed (config seed, split, index)
    np.testing.assert_array_equal(example["kp2d"], video["kp2d"])
    np.testing.assert_array_equal(example["pose"], video["pose"])
    expected = featurize.featurize(video["kp2d"], video["facing_cue"], dim=64, seed=0)
    np.testing.assert_array_equal(example["features"], expected)


def test_splits_and_variants_hold_different_videos(tiny_data_dir):
    seen = []
    for name in ("synthetic_motion/tiny", "synthetic_motion/tiny_2d"):
        for split, source in tfds.data_source(name, data_dir=tiny_data_dir).items():
            seen += [source[i]["kp2d"][0].tobytes() for i in range(len(source))]
    assert len(set(seen)) == len(seen) == 20


def test_two_d_variant_masks_labels(tiny_data_dir):
    source = tfds.data_source("synthetic_motion/tiny_2d", split="train", data_dir=tiny_data_dir)
    for i in range(len(source)):
        example = source[i]
        assert not example["has_smpl"].any() and not example["has_kp3d"].any()
        assert not example["pose"].any() and not example["kp3d"].any()
        assert not example["cam"].any() and example["kp2d"][..., 2].any()


def test_configs():
    names = {c.name: c for c in Builder.BUILDER_CONFIGS}
    assert {"tiny", "small", "standard", "small_2d", "standard_2d"} <= set(names)
    assert names["small"].feature_dim == 2048 and names["standard"].num_videos == (600, 60, 60)
    assert names["small_2d"].seed != names["small"].seed
    # The distribution-shift test set: test videos only, of the coordinated motion family.
    shift = names["shift"]
    assert shift.num_videos == (0, 0, 60) and shift.family == "coordinated"
    assert len({c.seed for c in names.values()}) == 3 and names["standard"].family == "parts"


def test_a_config_builds_only_its_splits_with_videos(tmp_path, monkeypatch):
    from tfds_builders.synthetic_motion import synthetic_motion_dataset_builder as module

    tiny_shift = dataclasses.replace(
        next(c for c in Builder.BUILDER_CONFIGS if c.name == "shift"),
        name="shift_tiny", num_videos=(0, 0, 2), num_frames=(20, 24), feature_dim=64,
    )  # fmt: skip
    builder = module.Builder(config=tiny_shift, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    assert set(builder.info.splits) == {"test"} and builder.info.splits["test"].num_examples == 2
    video = next(iter(builder.as_data_source("test")))
    expected = synthetic.generate_video((2, 2, 0), synthetic.MotionConfig(num_frames=(20, 24),
                                        family="coordinated"))  # fmt: skip
    np.testing.assert_allclose(video["pose"], expected["pose"], atol=1e-6)


def test_command_line(tmp_path, capsys):
    assert build.main(["synthetic_motion/tiny", f"--data_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "train 6, validation 2, test 2 videos" in out and "MiB" in out
    assert build.main(["synthetic_motion/huge", f"--data_dir={tmp_path}"]) == 2
    assert "unknown config 'huge'" in capsys.readouterr().err
    assert build.main(["no_such_data/x", f"--data_dir={tmp_path}"]) == 2
    assert "no tfds_builders/no_such_data builder" in capsys.readouterr().err


def test_builder_uses_a_given_smpl_file(tmp_path, tiny_data_dir, capsys):
    path = str(tmp_path / "body.npz")
    smpl.save_official(smpl.procedural(0), path)  # the procedural body, as a user's file
    build.build("synthetic_motion/tiny", str(tmp_path / "data"), smpl_path=path)
    info = tfds.builder("synthetic_motion/tiny", data_dir=str(tmp_path / "data")).info
    assert info.metadata["body"] == path
    ours = tfds.data_source("synthetic_motion/tiny", split="test", data_dir=str(tmp_path / "data"))
    default = tfds.data_source("synthetic_motion/tiny", split="test", data_dir=tiny_data_dir)
    np.testing.assert_allclose(ours[0]["kp3d"], default[0]["kp3d"], atol=1e-5)
    missing = str(tmp_path / "missing.pkl")
    assert (
        build.main(
            ["synthetic_motion/tiny", f"--data_dir={tmp_path}/other", f"--smpl_path={missing}"]
        )
        == 2
    )
    assert f"SMPL model file {missing} does not exist" in capsys.readouterr().err

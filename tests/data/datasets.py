"""Test helpers: schema examples built by hand and a TFDS writer that does not validate them.

`write_dataset` writes any examples (also malformed ones) in the sequence schema to array_record
through a builder that is not registered with TFDS, so the pipeline reads them back exactly
as it reads a real dataset: from files, through `tfds.data_source`.
"""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lmr_jax.data import schema
from lmr_jax.data.build import tensorflow_free_writing


def make_video(num_frames, dim=8, name="video", value=None, joints=49):
    """A valid example whose features encode (video value, frame) for easy bookkeeping."""
    example = schema.empty_labels(num_frames)
    value = float(num_frames if value is None else value)
    example["features"] = np.zeros((num_frames, dim), np.float32)
    example["features"][:, 0] = value
    example["features"][:, 1] = np.arange(num_frames)
    example["kp2d"] = np.zeros((num_frames, joints, 3), np.float32)
    example["kp2d"][..., 2] = 1.0
    example["kp3d"] = np.zeros((num_frames, joints, 4), np.float32)
    example["vid_name"] = name
    return example


class _HandWritten(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the examples it is given, as they are."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, examples, metadata, feature_dim, **kwargs):
        self._examples = examples
        self._extra_metadata = metadata
        self._feature_dim = feature_dim
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)

    def _info(self):
        features = schema.tfds_features(self._feature_dim)
        if self._examples["train"] and self._examples["train"][0]["kp2d"].shape[1] != 49:
            joints = self._examples["train"][0]["kp2d"].shape[1]
            features = tfds.features.FeaturesDict(
                {
                    **{k: v for k, v in features.items() if k not in ("kp2d", "kp3d")},
                    "kp2d": tfds.features.Tensor(shape=(None, joints, 3), dtype=np.float32),
                    "kp3d": tfds.features.Tensor(shape=(None, joints, 4), dtype=np.float32),
                }
            )
        return tfds.core.DatasetInfo(
            builder=self,
            features=features,
            metadata=tfds.core.MetadataDict(self._extra_metadata),
            disable_shuffling=True,
        )

    def _download_and_prepare(self, dl_manager, download_config=None):
        with tensorflow_free_writing():
            return super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self._examples}

    def _generate_examples(self, split):
        yield from enumerate(self._examples[split])


def write_dataset(data_dir, name, splits, *, metadata=None, feature_dim=None):
    """Writes {split: [examples]} as dataset `name` ('dataset/config') under data_dir.

    Returns:
      The name, for DatasetSpec.
    """
    dataset, config = name.split("/")
    if feature_dim is None:
        feature_dim = next(iter(splits.values()))[0]["features"].shape[1]
    metadata = {"layout": "vibe49", **(metadata or {})}
    cls = type(dataset, (_HandWritten,), {"name": dataset, "__module__": __name__})
    builder = cls(
        examples=splits,
        metadata=metadata,
        feature_dim=feature_dim,
        data_dir=str(data_dir),
        config=tfds.core.BuilderConfig(name=config),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return name

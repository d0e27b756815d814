"""TFDS builder of synthetic_motion: seeded synthetic videos in lmr_jax's sequence schema.

Build (no TensorFlow needed; array_record files):

    python -m lmr_jax.data.build synthetic_motion/small --data_dir=data

Configs: `tiny` (tests), `small` (fast; `make demo` and the tests of the pipeline), `standard`
(the benchmark for model comparisons), each with a `_2d` twin whose 3D and SMPL labels are
masked (VIBE's mixture of 2D-only and 3D datasets); `shift` (another motion family, a test set).

Pixels: `frames` holds `small`'s 72 videos (the same seeds, so the same labels and features)
rendered to 128 x 128 images (lmr_jax/data/render.py: a shaded body over a textured
background, occluders over the hidden keypoints), one JPEG per frame in the field `frames`
([N] bytes, decoded by the pipeline with Pillow), and the same 2048-d features as `small`:
6,971 frames, built in 154 s on a contended 2-core CPU (rendering about 12 ms a frame), 102 MiB
on disk (features 54 MiB, JPEGs about 5 KB a frame); `tiny_frames` does the same for `tiny`'s 10
videos at 64 x 64 pixels (the tests' end-to-end run). Rendering draws from its own seed stream,
so every other config's data is what it was before frames existed.

Splits train / validation / test come from disjoint seeds: video i of split s is
`generate_video((config.seed, s, i))`; the `_2d` twins use another seed, so they hold other
videos.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lmr_jax import smpl
from lmr_jax.data import featurize, render, schema, synthetic
from lmr_jax.data.build import tensorflow_free_writing

SPLITS = ("train", "validation", "test")
FEATURIZER_SEED = 0  # one featurizer for every config, so that configs can be mixed


@dataclasses.dataclass
class SyntheticMotionConfig(tfds.core.BuilderConfig):
    """A size of the synthetic dataset.

    Attributes:
      num_videos: videos in (train, validation, test).
      num_frames: (min, max) frames per video.
      feature_dim: D of the features.
      with_3d: False masks the 3D and SMPL labels (the 2D-only variant).
      seed: base seed of the videos.
      family: the motion model (`lmr_jax.data.synthetic.MotionConfig.family`).
      image_size: side in pixels of the rendered frames stored as JPEG in `frames`; 0 (every
        feature config) stores none.

    A split with 0 videos is left out of the dataset.
    """

    num_videos: tuple[int, int, int] = (48, 12, 12)
    num_frames: tuple[int, int] = (64, 128)
    feature_dim: int = featurize.DEFAULT_DIM
    with_3d: bool = True
    seed: int = 0
    family: str = "parts"
    image_size: int = 0


def _configs() -> list[SyntheticMotionConfig]:
    sizes = {
        "tiny": dict(num_videos=(6, 2, 2), num_frames=(24, 48), feature_dim=64),
        "small": dict(num_videos=(48, 12, 12), num_frames=(64, 128)),
        "standard": dict(num_videos=(600, 60, 60), num_frames=(120, 300)),
    }
    out = []
    for name, size in sizes.items():
        for with_3d in (True, False):
            out.append(
                SyntheticMotionConfig(
                    name=name if with_3d else f"{name}_2d",
                    description=(
                        f"{sum(size['num_videos'])} videos of {size['num_frames'][0]}-"
                        f"{size['num_frames'][1]} frames"
                        + ("" if with_3d else "; 3D and SMPL labels masked (2D-only)")
                    ),
                    with_3d=with_3d,
                    seed=0 if with_3d else 1,
                    **size,
                )
            )
    out.append(
        SyntheticMotionConfig(
            name="shift",
            description="60 test videos of 120-300 frames of whole-body coordinated routines "
            "(lmr_jax/data/coordinated.py), another motion family than the other configs': "
            "the distribution-shift test set of the benchmark",
            num_videos=(0, 0, 60),
            num_frames=(120, 300),
            seed=2,
            family="coordinated",
        )
    )
    for name, size, pixels in (("frames", sizes["small"], 128), ("tiny_frames", sizes["tiny"], 64)):
        out.append(
            SyntheticMotionConfig(
                name=name,
                description=(
                    f"the {sum(size['num_videos'])} videos of "
                    f"{name.replace('frames', '').strip('_') or 'small'}, with every frame "
                    f"rendered to a {pixels} x {pixels} JPEG (field `frames`)"
                ),
                image_size=pixels,
                **size,
            )
        )
    return out


class Builder(tfds.core.GeneratorBasedBuilder):
    """synthetic_motion: videos of an SMPL-format body, features from noisy 2D keypoints."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = _configs()

    def __init__(self, *, smpl_path: str | None = None, **kwargs):
        """Args: smpl_path: an SMPL model file to use instead of the procedural body."""
        self._smpl_path = smpl_path
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.x's own lookup needs the `importlib_resources` backport on Python >= 3.11.
        return epath.Path(__file__)

    def _download_and_prepare(self, dl_manager, download_config=None):
        with tensorflow_free_writing():
            return super()._download_and_prepare(dl_manager, download_config)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        features = schema.tfds_features(config.feature_dim)
        metadata = dict(
            layout=schema.LAYOUT,
            feature_dim=config.feature_dim,
            featurizer="lmr_jax.data.featurize.featurize",
            featurizer_seed=FEATURIZER_SEED,
            fps=synthetic.MotionConfig.fps,
            with_3d=config.with_3d,
            body=self._smpl_path or "procedural",
        )
        if config.image_size:  # [N] JPEG bytes: read back as a numpy object array, no TF
            frames = tfds.features.Tensor(shape=(None,), dtype=np.object_)
            features = tfds.features.FeaturesDict({**features, "frames": frames})
            metadata.update(image_size=config.image_size, frames_format="jpeg")
        return self.dataset_info_from_configs(
            features=features,
            metadata=tfds.core.MetadataDict(metadata),
            homepage="https://github.com/lmr-jax/lmr_jax",
            # Example i of a split is video i: the order follows the seeds (and video names),
            # and `num_frames` in the metadata lines up with the examples.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        model = smpl.procedural(0) if self._smpl_path is None else smpl.load(self._smpl_path)
        return {
            split: self._generate_examples(split, index, model)
            for index, split in enumerate(SPLITS)
            if self.builder_config.num_videos[index]
        }

    @classmethod
    def regenerate_video(cls, config_name: str, split: str, index: int, model) -> dict:
        """Video `index` of `split` of config `config_name` exactly as the builder generates it
        (`synthetic.generate_video` from its seeds), with the fields the dataset does not store
        (the facing cue, the camera of a 2D-only twin); the occlusion evaluation
        (lmr_jax/data/occlusion.py) re-featurizes occluded observations with its cue.

        Raises:
          ValueError: no config or split of that name.
        """
        configs = {c.name: c for c in cls.BUILDER_CONFIGS}
        if config_name not in configs or split not in SPLITS:
            raise ValueError(f"synthetic_motion has no config '{config_name}' with split "
                             f"'{split}', expected a config of {sorted(configs)} and a split "
                             f"of {SPLITS}.")  # fmt: skip
        return cls.config_video(configs[config_name], split, index, model)

    @staticmethod
    def config_video(config: SyntheticMotionConfig, split: str, index: int, model) -> dict:
        """Video `index` of `split` of the builder config `config` (see `regenerate_video`)."""
        motion = synthetic.MotionConfig(num_frames=config.num_frames, family=config.family)
        return synthetic.generate_video((config.seed, SPLITS.index(split), index), motion, model)

    def _generate_examples(self, split: str, split_index: int, model):
        config = self.builder_config
        dataset_name = f"{self.name}/{config.name}:{split}"
        lengths = []
        for i in range(config.num_videos[split_index]):
            video = self.config_video(config, split, i, model)
            features = featurize.featurize(
                video["kp2d"], video["facing_cue"], dim=config.feature_dim, seed=FEATURIZER_SEED
            )
            name = f"{self.name}/{config.name}/{split}/{i:05d}"
            example = synthetic.make_example(video, features, name, with_3d=config.with_3d)
            schema.validate_example(example, dataset_name, feature_dim=config.feature_dim)
            if config.image_size:
                seed = (config.seed, split_index, i)
                frames = render.render_video(video, model, config.image_size, seed)
                example["frames"] = render.encode_jpeg(frames)
            lengths.append(int(features.shape[0]))
            yield i, example
        # Readers cut windows without decoding every video first (saved with the metadata).
        self.info.metadata.setdefault("num_frames", {})[split] = lengths

"""The shared TFDS builder of the datasets VIBE and TCMR preprocess (see VIBE_FORMAT.md).

A dataset's builder subclasses `VibeFormatBuilder` and declares its splits as
`lmr_jax.data.vibe_format.SplitSource`s, its `MANUAL_DOWNLOAD_INSTRUCTIONS` and homepage; this
class finds the files in the manual dir, streams them video by video
(`vibe_format.iter_videos`) and writes one example per video without TensorFlow, in memory that
does not grow with the file (`build.tensorflow_free_writing`). The dataset metadata records the
joint layout (`vibe49`), the feature size, the keypoint crop, the file each split came from and
the frames of every video (read by lmr_jax.data.pipeline instead of scanning).

Build one with `python -m lmr_jax.data.build NAME --data_dir=DATA --manual_dir=FILES`.
"""

from __future__ import annotations

import os
import sys

import tensorflow_datasets as tfds
from etils import epath

from lmr_jax.data import schema, vibe_format
from lmr_jax.data.build import tensorflow_free_writing


class VibeFormatBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a dataset from VIBE/TCMR `*_db.pt` (joblib) or InstaVariety `.h5` files.

    Subclasses set `SOURCES` (one `SplitSource` per split), `MANUAL_DOWNLOAD_INSTRUCTIONS` and
    `HOMEPAGE`; the description and citation come from the package's README.md and
    CITATIONS.bib. A split whose file is absent is left out (at least one must be there).
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "has_kp3d / has_smpl no longer masked by the file's valid flags; the flags "
        "are kept as the fields valid and valid_i (metadata file_flags: which the file had).",
    }
    SOURCES: tuple[vibe_format.SplitSource, ...] = ()
    HOMEPAGE = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # The subclass's own file (TFDS 4.9.x's lookup needs `importlib_resources` on 3.11+).
        return epath.Path(sys.modules[cls.__module__].__file__)

    def _download_and_prepare(self, dl_manager, download_config=None):
        with tensorflow_free_writing():
            return super()._download_and_prepare(dl_manager, download_config)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=schema.tfds_features(vibe_format.FEATURE_DIM, file_flags=True),
            metadata=tfds.core.MetadataDict(
                layout=schema.LAYOUT,
                feature_dim=vibe_format.FEATURE_DIM,
                keypoint_crop=(
                    f"bbox x {vibe_format.KEYPOINT_CROP_SCALE} (VIBE's transfrom_keypoints + "
                    "normalize_2d_kp); InstaVariety: 224-crop pixels / 112 - 1"
                ),
                source_format="VIBE/TCMR preprocessed files (tfds_builders/VIBE_FORMAT.md)",
            ),
            homepage=self.HOMEPAGE,
            # Example i of a split is the i-th video of its file; `num_frames` lines up.
            disable_shuffling=True,
        )

    def _manual_dir(self, dl_manager) -> str:
        try:
            return os.fspath(dl_manager.manual_dir)
        except AssertionError:  # TFDS: "does not exist or is empty"
            folder = getattr(dl_manager, "_manual_dir", None) or "(not given)"
            wanted = "; ".join(f"{s.split}: {' or '.join(s.files)}" for s in self.SOURCES)
            raise schema.DatasetError(
                f"dataset '{self.name}': manual_dir '{folder}' does not exist or is empty; "
                f"put the preprocessed files there (expected {wanted}) and pass --manual_dir."
            ) from None

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        found = vibe_format.find_files(self._manual_dir(dl_manager), self.SOURCES, self.name)
        self.info.metadata["source_files"] = {
            split: os.path.basename(path) for split, (path, _) in found.items()
        }
        return {
            split: self._generate_examples(path, source) for split, (path, source) in found.items()
        }

    def _generate_examples(self, path: str, source: vibe_format.SplitSource):
        label = f"{self.name}:{source.split} ({os.path.basename(path)})"
        lengths, flags = [], []
        for index, example in enumerate(vibe_format.iter_videos(path, source, label, flags)):
            lengths.append(int(example["features"].shape[0]))
            yield index, example
        # Readers cut windows without decoding every video first.
        self.info.metadata.setdefault("num_frames", {})[source.split] = lengths
        # The flags the file really had (the fields hold ones for the others).
        self.info.metadata.setdefault("file_flags", {})[source.split] = flags

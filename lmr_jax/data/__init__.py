"""Data: the sequence schema, the synthetic motion generator and featurizer, the input pipeline.

- `schema`: the fields of one video example, `validate_example`, `DatasetError`.
- `synthetic`: the seeded synthetic motion generator (the embedded default dataset).
- `featurize`: the fixed map from noisy 2D keypoints (+ facing cue) to per-frame features.
- `pipeline`: `DatasetSpec`, `train_dataset` (grain, windows, mixture, pmap batches),
  `eval_videos` (whole videos).
- `build`: `python -m lmr_jax.data.build synthetic_motion/small --data_dir=DIR`.
- `boxes`, `extract`: person boxes (track files, 2D keypoints) and backbone features of a
  video's person crops (`lmr-extract-features`).

(The featurizer function is `lmr_jax.data.featurize.featurize`; it is not re-exported here, where
the name would hide its module.)
"""

from lmr_jax.data.pipeline import DatasetSpec, eval_videos, train_dataset, window_index
from lmr_jax.data.schema import DatasetError, validate_example

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "eval_videos",
    "train_dataset",
    "validate_example",
    "window_index",
]

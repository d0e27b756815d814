"""synthetic_motion: the embedded default dataset of lmr_jax (see README.md)."""

from tfds_builders.synthetic_motion.synthetic_motion_dataset_builder import (
    Builder,
    SyntheticMotionConfig,
)

__all__ = ["Builder", "SyntheticMotionConfig"]

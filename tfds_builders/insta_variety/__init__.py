"""insta_variety: InstaVariety from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.insta_variety.insta_variety_dataset_builder import Builder

__all__ = ["Builder"]

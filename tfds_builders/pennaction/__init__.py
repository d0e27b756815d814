"""pennaction: PennAction from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.pennaction.pennaction_dataset_builder import Builder

__all__ = ["Builder"]

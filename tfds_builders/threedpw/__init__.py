"""threedpw: 3DPW from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.threedpw.threedpw_dataset_builder import Builder

__all__ = ["Builder"]

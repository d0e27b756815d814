"""human36m: Human3.6M from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.human36m.human36m_dataset_builder import Builder

__all__ = ["Builder"]

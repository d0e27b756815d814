"""posetrack: PoseTrack from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.posetrack.posetrack_dataset_builder import Builder

__all__ = ["Builder"]

"""TFDS builder of posetrack: PoseTrack person tracks (2D keypoints only) from VIBE's files.

    python -m lmr_jax.data.build posetrack --data_dir=DATA --manual_dir=DIR

Split: train. One example is one person track of one PoseTrack video (VIBE names it
'<annotation file>_<track id>'). Labels: 2D keypoints, already in VIBE's 49-joint order in the
file (VIBE's posetrack_utils.py converts PoseTrack's 17 joints), mapped one to one. No 3D or
SMPL labels. See tfds_builders/VIBE_FORMAT.md.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VIBE's preprocessed PoseTrack file in --manual_dir:

  posetrack_train_db.pt   (or TCMR's posetrack_train_occ_db.pt)

It is written by VIBE's lib/data_utils/posetrack_utils.py (into data/vibe_db) from the PoseTrack
2018 annotations and images (https://posetrack.net) and SPIN features, or comes with TCMR's
preprocessed data (README of github.com/hongsukchoi/TCMR_RELEASE).
"""


class Builder(VibeFormatBuilder):
    """posetrack: PoseTrack (multi-person videos with tracked 2D keypoints)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://posetrack.net"
    SOURCES = (
        vf.SplitSource(
            split="train",
            files=("posetrack_train_db.pt", "posetrack_train_occ_db.pt"),
            joints2d={49: vf.SPIN49_TO_VIBE49},
        ),
    )

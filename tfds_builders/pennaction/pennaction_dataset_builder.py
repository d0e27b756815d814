"""TFDS builder of pennaction: PennAction videos (2D keypoints only) from VIBE's files.

    python -m lmr_jax.data.build pennaction --data_dir=DATA --manual_dir=DIR

Split: train. Labels: 2D keypoints of the 13 annotated joints, stored by VIBE in the 14
common-joint order (neck at confidence 0), in vibe49 slots 25..38. No 3D or SMPL labels.

The file's order is the one VIBE's penn_action_utils.py writes (common order); VIBE's and TCMR's
training loaders read it again as if it were PennAction's own order (`convert_kps(...,
src='pennaction')`, VIBE issues #94 and #256); we follow the file. See
tfds_builders/VIBE_FORMAT.md.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VIBE's preprocessed PennAction file in --manual_dir:

  pennaction_train_db.pt   (or TCMR's pennaction_train_scale12_db.pt)

It is written by VIBE's lib/data_utils/penn_action_utils.py (into data/vibe_db) from the dataset
of http://dreamdragon.github.io/PennAction and SPIN features, or comes with TCMR's preprocessed
data (README of github.com/hongsukchoi/TCMR_RELEASE).
"""


class Builder(VibeFormatBuilder):
    """pennaction: PennAction (sports videos with 2D keypoints)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "http://dreamdragon.github.io/PennAction"
    SOURCES = (
        vf.SplitSource(
            split="train",
            files=("pennaction_train_db.pt", "pennaction_train_scale12_db.pt"),
            joints2d={14: vf.COMMON14_TO_VIBE49},
        ),
    )

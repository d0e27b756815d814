"""TFDS builder of insta_variety: InstaVariety videos (2D keypoints only) from VIBE's HDF5 file.

    python -m lmr_jax.data.build insta_variety --data_dir=DATA --manual_dir=DIR

Split: train. Labels: 2D keypoints (25 per frame, OpenPose detections of Temporal HMR's
preprocessing) given in pixels of the 224 x 224 crop the features were computed on, so they are
normalised as x / 112 - 1 without a bounding box, and placed in the vibe49 slots VIBE's
`convert_kps(src='insta', dst='spin')` gives them (by joint name). No 3D or SMPL labels. See
tfds_builders/VIBE_FORMAT.md.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VIBE's preprocessed InstaVariety file in --manual_dir:

  insta_train_db.h5   (18 GB)

VIBE's doc/train.md links it (owncloud.tuebingen.mpg.de, md5
8ec335d1d48bd54687ad5c9a6eeb2999); TCMR uses the same file. VIBE's
lib/data_utils/insta_utils.py writes it from Temporal HMR's InstaVariety tfrecords.
"""


class Builder(VibeFormatBuilder):
    """insta_variety: InstaVariety (Instagram videos with detected 2D keypoints)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://github.com/akanazawa/human_dynamics"
    SOURCES = (
        vf.SplitSource(
            split="train",
            files=("insta_train_db.h5",),
            joints2d={25: vf.INSTA25_TO_VIBE49},
            keypoints="crop224",
        ),
    )

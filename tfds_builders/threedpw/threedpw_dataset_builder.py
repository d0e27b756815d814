"""TFDS builder of threedpw: 3DPW videos from VIBE's / TCMR's preprocessed files.

    python -m lmr_jax.data.build threedpw --data_dir=DATA --manual_dir=DIR

Splits: train, validation, test (each built when its file is in DIR). Labels: 2D keypoints (the
14 common joints), 3D joints (14 through J_regressor_h36m in the validation and test files, 49
SMPL-derived joints in train), SMPL pose (global orientation in the camera frame) and shape;
every frame is labelled (has_kp3d = has_smpl = 1, as VIBE trains); the file's `valid` flag
(camera pose valid) is kept as the field `valid`, which the 'tcmr' protocol uses. See
tfds_builders/VIBE_FORMAT.md for the key table and its sources.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VIBE's (or TCMR's) preprocessed 3DPW files in --manual_dir:

  3dpw_train_db.pt   3dpw_val_db.pt   3dpw_test_db.pt

They are written by VIBE's lib/data_utils/threedpw_utils.py (into data/vibe_db, from the 3DPW
dataset of https://virtualhumans.mpi-inf.mpg.de/3DPW and SPIN features) or downloaded with
TCMR's preprocessed data (README of github.com/hongsukchoi/TCMR_RELEASE: data/preprocessed_data).
Note: VIBE's script writes 3dpw_val_db.pt from the 3DPW *test* sequences; TCMR's from the
validation sequences. TCMR's occlusion-augmented 3dpw_train_occ_db.pt is used when
3dpw_train_db.pt is absent.
"""


def _split(split: str, files: tuple[str, ...]) -> vf.SplitSource:
    return vf.SplitSource(
        split=split,
        files=files,
        joints2d={14: vf.COMMON14_TO_VIBE49},
        joints3d={14: vf.COMMON14_TO_VIBE49, 49: vf.SPIN49_TO_VIBE49},
        smpl="required",
        valid_key="valid",
    )


class Builder(VibeFormatBuilder):
    """threedpw: 3DPW (outdoor videos with IMU-fitted SMPL) in the sequence schema."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://virtualhumans.mpi-inf.mpg.de/3DPW"
    SOURCES = (
        _split("train", ("3dpw_train_db.pt", "3dpw_train_occ_db.pt")),
        _split("validation", ("3dpw_val_db.pt",)),
        _split("test", ("3dpw_test_db.pt",)),
    )

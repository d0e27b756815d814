"""TFDS builder of mpi_inf_3dhp: MPI-INF-3DHP videos from VIBE's / TCMR's preprocessed files.

    python -m lmr_jax.data.build mpi_inf_3dhp --data_dir=DATA --manual_dir=DIR

Splits: train (subjects S1-S8) and validation (the test set TS1-TS6, which VIBE and TCMR
evaluate on). Labels: 2D and 3D joints of the 17 motion-capture joints in the vibe49 layout
(3D in metres, centred on the MPII pelvis, slot 39); no SMPL. Every frame is labelled
(has_kp3d = 1); the validation file's `valid_i` is kept as the field `valid_i`, which the
'tcmr' protocol scores by (a file without it is warned about). See tfds_builders/VIBE_FORMAT.md.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VIBE's (or TCMR's) preprocessed MPI-INF-3DHP files in --manual_dir:

  mpii3d_train_db.pt   mpii3d_val_db.pt          (VIBE's names)
  mpii3d_train_scale12_db.pt   mpii3d_val_scale12_db.pt   (TCMR's names, used when VIBE's
                                                             are absent)

They are written by lib/data_utils/mpii3d_utils.py of VIBE (data/vibe_db) or TCMR (whose
preprocessed data, README of github.com/hongsukchoi/TCMR_RELEASE, holds them), from the dataset
of https://vcai.mpi-inf.mpg.de/3dhp-dataset and SPIN features.
"""


class Builder(VibeFormatBuilder):
    """mpi_inf_3dhp: MPI-INF-3DHP (multi-view studio and outdoor, markerless mocap)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://vcai.mpi-inf.mpg.de/3dhp-dataset"
    SOURCES = (
        vf.SplitSource(
            split="train",
            files=(
                "mpii3d_train_db.pt",
                "mpii3d_train_scale12_db.pt",
                "mpii3d_train_scale12_occ_db.pt",
            ),
            joints2d={49: vf.SPIN49_TO_VIBE49},
            joints3d={49: vf.MOCAP49_TO_VIBE49},
        ),
        vf.SplitSource(
            split="validation",
            files=("mpii3d_val_db.pt", "mpii3d_val_scale12_db.pt"),
            joints2d={49: vf.SPIN49_TO_VIBE49},
            joints3d={49: vf.MOCAP49_TO_VIBE49},
            valid_key="valid_i",
        ),
    )

"""TFDS builder of human36m: Human3.6M videos (25 fps) from TCMR's preprocessed files.

    python -m lmr_jax.data.build human36m --data_dir=DATA --manual_dir=DIR

Splits: train (subjects S1, S5, S6, S7, S8) and test (S9, S11). Labels: 2D and 3D joints of the
17 motion-capture joints in the vibe49 layout (3D in metres, centred on the MPII pelvis, slot
39); SMPL pose and shape where the file holds non-zero ones (TCMR's NeuralAnnot fits), else
has_smpl = 0. See tfds_builders/VIBE_FORMAT.md.
"""

from __future__ import annotations

from lmr_jax.data import vibe_format as vf
from tfds_builders._vibe_common import VibeFormatBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put TCMR's preprocessed Human3.6M files in --manual_dir (the first name found is used):

  train: h36m_train_25fps_db.pt, h36m_train_25fps_occ_db.pt or h36m_train_25fps_tight_db.pt
  test:  h36m_test_25fps_nosmpl_db.pt, h36m_test_front_25fps_tight_nosmpl_db.pt or
         h36m_test_25fps_tight_db.pt

They come with TCMR's preprocessed data (README of github.com/hongsukchoi/TCMR_RELEASE:
data/preprocessed_data) or are written by its lib/data_utils/h36m_utils.py from the dataset of
http://vision.imar.ro/human3.6m and SPIN features. VIBE ships no Human3.6M files.
"""

# TCMR's names (lib/dataset/_dataset_3d.py, evaluate.py), in order of preference.
TRAIN_FILES = ("h36m_train_25fps_db.pt", "h36m_train_25fps_occ_db.pt",
               "h36m_train_25fps_tight_db.pt")  # fmt: skip
TEST_FILES = ("h36m_test_25fps_nosmpl_db.pt", "h36m_test_front_25fps_tight_nosmpl_db.pt",
              "h36m_test_25fps_tight_db.pt")  # fmt: skip


def _split(split: str, files: tuple[str, ...]) -> vf.SplitSource:
    return vf.SplitSource(
        split=split,
        files=files,
        joints2d={49: vf.SPIN49_TO_VIBE49},
        joints3d={49: vf.MOCAP49_TO_VIBE49},
        smpl="optional",
    )


class Builder(VibeFormatBuilder):
    """human36m: Human3.6M (indoor studio, marker-based motion capture) at 25 fps."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "http://vision.imar.ro/human3.6m"
    SOURCES = (_split("train", TRAIN_FILES), _split("test", TEST_FILES))

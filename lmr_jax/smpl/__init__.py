"""The SMPL body model: loading official files, a procedural body, the forward pass, layouts."""

from lmr_jax.smpl.layouts import (
    COMMON14_PELVIS,
    LAYOUTS,
    PARTS,
    VIBE49_TO_COMMON14,
    JointLayout,
    get_layout,
    joint_model,
    layout_joints,
    layout_support,
    validate_parts,
)
from lmr_jax.smpl.lbs import forward
from lmr_jax.smpl.model import (
    LANDMARK_NAMES,
    SMPL_PARENTS,
    SMPLFileError,
    SMPLModel,
    from_arrays,
    load,
    save_official,
)
from lmr_jax.smpl.procedural import procedural
from lmr_jax.smpl.source import SMPL_DIR_ENV, resolve

__all__ = [
    "COMMON14_PELVIS",
    "LAYOUTS",
    "PARTS",
    "VIBE49_TO_COMMON14",
    "JointLayout",
    "get_layout",
    "joint_model",
    "layout_support",
    "layout_joints",
    "validate_parts",
    "LANDMARK_NAMES",
    "SMPL_DIR_ENV",
    "SMPL_PARENTS",
    "SMPLFileError",
    "SMPLModel",
    "forward",
    "from_arrays",
    "load",
    "procedural",
    "resolve",
    "save_official",
]

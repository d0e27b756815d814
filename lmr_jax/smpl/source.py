"""Which body model a run uses: an SMPL file, $LMR_JAX_SMPL_DIR, or the procedural body.

It sits above both smpl/model.py (loading files) and smpl/procedural.py (which builds its body
with model.py's `from_arrays`), so that neither of those imports the other both ways.
"""

from __future__ import annotations

import os

from lmr_jax.smpl.model import SMPLModel, load
from lmr_jax.smpl.procedural import procedural

SMPL_DIR_ENV = "LMR_JAX_SMPL_DIR"


def resolve(path: str | None = None) -> SMPLModel:
    """The body model a run uses: `path` if given, else $LMR_JAX_SMPL_DIR, else the procedural
    body (seed 0), which needs no download.

    Args:
      path: an SMPL .pkl/.npz file or a folder holding one (e.g. the value of --smpl_path).

    Returns:
      The SMPLModel.
    """
    path = path or os.environ.get(SMPL_DIR_ENV) or None
    if path is None:
        return procedural(0)
    return load(path)

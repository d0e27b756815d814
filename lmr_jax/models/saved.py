"""A small trained model saved beside its fields: FOLDER/params (Orbax) and FOLDER/config.json.

Used by the models trained outside the main loop: HKMR's pose prior (models/pose_prior.py,
models/pose_encoder.py) and PC-HMR's lifter (models/lifter.py).
"""

from __future__ import annotations

import json
import os

import ml_collections
import orbax.checkpoint as ocp


def holds_saved(folder: str) -> bool:
    """Whether `folder` holds a saved model (its config.json and params folder)."""
    return os.path.isfile(os.path.join(folder, "config.json")) and os.path.isdir(
        os.path.join(folder, "params")
    )


def save(folder: str, params, fields: ml_collections.ConfigDict) -> None:
    """Writes `params` (Orbax) and `fields` (JSON) into `folder`, replacing an earlier save."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(folder, "params"), params, force=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(fields.to_dict(), f)


def load(
    folder: str, workdir: str, what: str, writer: str
) -> tuple[dict, ml_collections.ConfigDict]:
    """(params, fields) saved in `folder` (inside the user's `workdir`).

    Raises:
      ValueError: naming the workdir when it holds no saved `what` (written by `writer`).
    """
    if not holds_saved(folder):
        raise ValueError(f"'{workdir}' holds no {what} (expected {folder}/params and "
                         f"config.json, written by {writer}).")  # fmt: skip
    with open(os.path.join(folder, "config.json")) as f:
        fields = ml_collections.ConfigDict(json.load(f))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(folder, "params"))
    return params, fields

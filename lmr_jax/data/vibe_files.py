"""Imports VIBE's auxiliary files beside the SMPL model file, after checking them.

    python -m lmr_jax.data.vibe_files --vibe_data=VIBE/data/vibe_data --smpl_dir=DIR

VIBE's `data/vibe_data` folder (from VIBE's `scripts/prepare_data.sh`; TCMR ships the same files
in `data/base_data`) holds, next to `SMPL_NEUTRAL.pkl`:

- `J_regressor_extra.npy` [9, 6890]: the extra joints of the vibe49 layout;
- `J_regressor_h36m.npy` [17, 6890]: the Human3.6M joints used by the evaluation;
- `smpl_mean_params.npz`: `pose` [144] (24 joints x 6D), `shape` [10], `cam` [3].

`lmr_jax.smpl.load` reads the two regressors from the folder of the model file, so they are
copied into `--smpl_dir` (the folder of the SMPL `.pkl`, or the file itself); the mean
parameters are copied there too and are used through `--config.model.mean_params=PATH`. All
three are checked before anything is copied; an existing file with other contents is never
replaced unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys

import numpy as np

from lmr_jax.models.params import load_mean_params
from lmr_jax.smpl import SMPLFileError

NUM_VERTICES = 6890
REGRESSORS = {"J_regressor_extra.npy": 9, "J_regressor_h36m.npy": 17}
MEAN_PARAMS = "smpl_mean_params.npz"
FILES = (*REGRESSORS, MEAN_PARAMS)
_WHERE = "VIBE's data/vibe_data (scripts/prepare_data.sh) or TCMR's data/base_data"


def check_regressor(path: str, rows: int) -> np.ndarray:
    """Loads a joint regressor `.npy` and checks it is a finite [rows, 6890] array.

    Raises:
      SMPLFileError: the file is missing, not an .npy array, or has another shape or NaNs.
    """
    if not os.path.isfile(path):
        raise SMPLFileError(f"regressor file '{path}' does not exist (it comes from {_WHERE}).")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SMPLFileError(f"'{path}' is not a numpy .npy array ({e}).") from None
    if array.shape != (rows, NUM_VERTICES):
        raise SMPLFileError(
            f"'{path}' has shape {list(array.shape)}, expected [{rows}, {NUM_VERTICES}]."
        )
    if not np.all(np.isfinite(array)):
        raise SMPLFileError(f"'{path}' holds NaN or inf.")
    return array


def check_mean_params(path: str) -> None:
    """Checks `smpl_mean_params.npz`: keys pose [144], shape [10], cam [3], finite.

    Raises:
      SMPLFileError: missing file, missing key, wrong shape or non-finite values.
    """
    if not os.path.isfile(path):
        raise SMPLFileError(f"mean parameters file '{path}' does not exist (it comes from "
                            f"{_WHERE}).")  # fmt: skip
    try:
        params = load_mean_params(path)
    except ValueError as e:
        raise SMPLFileError(str(e)) from None
    if not np.all(np.isfinite([*params.pose6d, *params.shape, *params.cam])):
        raise SMPLFileError(f"'{path}' holds NaN or inf.")


def _target_dir(smpl_dir: str) -> str:
    smpl_dir = os.path.expanduser(smpl_dir)
    if os.path.isfile(smpl_dir):  # the model file itself: use its folder
        return os.path.dirname(os.path.abspath(smpl_dir))
    if not os.path.isdir(smpl_dir):
        raise SMPLFileError(
            f"SMPL folder '{smpl_dir}' does not exist; pass the folder of the SMPL model file "
            "(the regressors must sit beside it)."
        )
    return smpl_dir


def import_vibe_files(vibe_data: str, smpl_dir: str, *, overwrite: bool = False) -> dict:
    """Checks VIBE's auxiliary files in `vibe_data` and copies them into `smpl_dir`.

    Args:
      vibe_data: the folder holding J_regressor_extra.npy, J_regressor_h36m.npy and
        smpl_mean_params.npz.
      smpl_dir: the folder of the SMPL model file (or the model file).
      overwrite: replace existing files whose contents differ.

    Returns:
      {file name: (destination path, 'copied' | 'unchanged' | 'replaced')}.

    Raises:
      SMPLFileError: a source file is missing or malformed (nothing is copied then), or a
        destination holds a different file and `overwrite` is False.
    """
    vibe_data = os.path.expanduser(vibe_data)
    if not os.path.isdir(vibe_data):
        raise SMPLFileError(f"folder '{vibe_data}' does not exist (expected {_WHERE}).")
    target = _target_dir(smpl_dir)
    for name, rows in REGRESSORS.items():
        check_regressor(os.path.join(vibe_data, name), rows)
    check_mean_params(os.path.join(vibe_data, MEAN_PARAMS))
    plan = {}
    for name in FILES:
        source, dest = os.path.join(vibe_data, name), os.path.join(target, name)
        if not os.path.exists(dest):
            plan[name] = (source, dest, "copied")
        elif filecmp.cmp(source, dest, shallow=False):
            plan[name] = (source, dest, "unchanged")
        elif overwrite:
            plan[name] = (source, dest, "replaced")
        else:
            raise SMPLFileError(
                f"'{dest}' exists and differs from '{source}'; nothing was copied (pass "
                "--overwrite to replace it)."
            )
    for source, dest, status in plan.values():
        if status != "unchanged":
            partial = dest + ".partial"
            shutil.copyfile(source, partial)
            os.replace(partial, dest)  # never a half-written file under the final name
    return {name: (dest, status) for name, (_, dest, status) in plan.items()}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vibe_data", required=True, help="VIBE's data/vibe_data folder")
    parser.add_argument("--smpl_dir", required=True, help="folder of the SMPL model file")
    parser.add_argument("--overwrite", action="store_true", help="replace differing files")
    args = parser.parse_args(argv)
    try:
        result = import_vibe_files(args.vibe_data, args.smpl_dir, overwrite=args.overwrite)
    except SMPLFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, (dest, status) in result.items():
        print(f"{name}: {status} ({dest})")
    folder = os.path.dirname(result[MEAN_PARAMS][0])
    if not any(n.endswith((".pkl", ".npz")) and n != MEAN_PARAMS for n in os.listdir(folder)):
        print(f"note: no SMPL model file in {folder} yet; lmr_jax.smpl.load reads the "
              "regressors from the folder of the model file.")  # fmt: skip
    print(f"mean parameters: --config.model.mean_params={result[MEAN_PARAMS][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

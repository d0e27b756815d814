"""Checkpoints of a training run: one Orbax CheckpointManager in workdir/checkpoints holding
the train state, the grain iterator state and the config fields a checkpoint must match; the
params of any step restore on any topology (number of processes and devices). The parameters
of the best validation so far are kept in workdir/best (`BestCheckpoint`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lmr_jax import models

if TYPE_CHECKING:
    from lmr_jax.train import TrainState


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


def replicate_on_local_devices(tree: Any) -> Any:
    """Places arrays as the pmapped step returns its unreplicated outputs (replicated over this
    process's devices), so that the first step is traced and compiled like every later one."""
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


# Config fields whose change makes a checkpoint unusable (parameter shapes or data layout).
_COMPAT_FIELDS = ("model", "data.window")


def json_view(node: Any) -> Any:
    """A config node as saved in a checkpoint's metadata (JSON types: tuples become lists)."""
    value = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
    return json.loads(json.dumps(value, default=str))


def compat_view(config: ml_collections.ConfigDict) -> dict:
    flat = {}
    for path in _COMPAT_FIELDS:
        node = config
        for key in path.split("."):
            node = node[key]
        flat[path] = json_view(node)
    return flat


def first_mismatch(saved: Any, current: Any, path: str) -> str | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = first_mismatch(saved.get(key), current.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    return None if saved == current else f"{path} was {saved!r}, now {current!r}"


def checkpoint_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
    """The run's one CheckpointManager: train state, data iterator state and config."""
    import grain  # noqa: F401 (registers grain's checkpoint handler with orbax)

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def as_global(tree: Any) -> Any:
    """A tree of the pmapped step's unreplicated outputs as orbax saves it: in a run of several
    processes these are host-local arrays, which become global ones (each process takes part in
    the save)."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(ocp.utils.fully_replicated_host_local_array_to_global_array, tree)


def save_checkpoint(mngr, state: TrainState, data_iter, config) -> None:
    import grain

    step = int(state.step)
    state = as_global(state)
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave({"compat": compat_view(config), "step": step}),
        ),
    )


def _on_this_host(metadata) -> Any:
    """Restore targets for saved arrays: same shapes and dtypes, on this process's first device
    (so that a checkpoint saved by any number of processes restores anywhere)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = metadata.tree if hasattr(metadata, "tree") else metadata
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)


def restore_saved_state(workdir: str, step: int | None = None) -> Any:
    """The train state of a run's checkpoint (the latest by default) as saved (a tree of step,
    params and opt_state, its containers as orbax restores them), whatever topology saved it.

    Raises:
      TrainingError: the workdir has no checkpoint.
    """
    import grain

    # A handler for every saved item, though only the state is read: orbax warns about items it
    # has no handler for.
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler()}  # fmt: skip
    mngr = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), item_handlers=handlers
    )
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise TrainingError(f"no checkpoint in {mngr.directory}; train first (--mode=train).")
    target = _on_this_host(mngr.item_metadata(step)["state"])
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]


def restore_params(workdir: str, step: int | None = None) -> Any:
    """The parameters of a run's checkpoint (the latest by default), whatever topology saved them.

    Raises:
      TrainingError: the workdir has no checkpoint.
    """
    return restore_saved_state(workdir, step)["params"]


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The JSON saved beside a checkpoint: {'compat': the config fields it must match, 'step'}.

    Model fields added to lmr_jax after the checkpoint was saved are filled with their defaults
    (e.g. `single_rnn_hidden_size`), so older checkpoints stay compatible with configs that
    leave the new fields at their defaults.
    """
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    saved = meta.get("compat", {}).get("model")
    if isinstance(saved, dict) and saved.get("name") in models.MODEL_NAMES:
        defaults = json_view(models.default_model_config(saved["name"]))
        meta["compat"]["model"] = {**defaults, **saved}
    return meta


def check_compatible(mngr: ocp.CheckpointManager, step: int, config) -> None:
    """Raises TrainingError naming the first config field that differs from the checkpoint's."""
    mismatch = first_mismatch(read_meta(mngr, step)["compat"], compat_view(config), "config")
    if mismatch:
        raise TrainingError(
            f"the checkpoint at step {step} in {mngr.directory} comes from an incompatible "
            f"config ({mismatch}); use another --workdir or the original config."
        )


def restore_checkpoint(mngr, state: TrainState, data_iter, config) -> TrainState:
    """Restores the latest checkpoint into `state` and `data_iter`, after a compatibility check."""
    import grain

    step = mngr.latest_step()
    check_compatible(mngr, step, config)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        ),
        state,
    )
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data=grain.checkpoint.CheckpointRestore(data_iter),
        ),
    )
    return replicate_on_local_devices(restored["state"])


class BestCheckpoint:
    """Keeps the parameters with the lowest validation PA-MPJPE in workdir/best (every process
    calls `update` with the same value, as every process validates the same parameters)."""

    def __init__(self, workdir: str):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_PA-MPJPE"], best_mode="min", create=True
        )
        self.mngr = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), "best"), options=options
        )

    def update(self, step: int, value: float, params) -> None:
        if np.isfinite(value):
            self.mngr.save(
                step,
                args=ocp.args.StandardSave(as_global(params)),
                metrics={"val_PA-MPJPE": float(value)},
            )
            self.mngr.wait_until_finished()

"""Checkpoints of a training run: one Orbax CheckpointManager in workdir/checkpoints holding
the train state, the grain iterator state and the config fields a checkpoint must match; the
params of any step restore on any topology (number of processes and devices). The parameters
of the best validation so far are kept in workdir/best (`BestCheckpoint`).

A damaged checkpoint (a file cut short, e.g. by a full disk) is told apart from other restore
errors by reading it as saved (`checkpoint_damage`): a resumed run sets damaged steps aside as
`checkpoints/STEP.damaged` (Orbax ignores folders whose names are not steps) and goes on from
the newest intact one; evaluation and prediction refuse, naming the damaged and intact steps.
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from lmr_jax import models
from lmr_jax.train_state import TrainState


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


class DamagedCheckpointError(TrainingError):
    """A checkpoint's files do not read (cut short or missing); the message names the intact
    ones."""


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
    """The training run's one CheckpointManager: train state, data iterator state and config
    (creates workdir/checkpoints)."""
    import grain  # noqa: F401 (registers grain's checkpoint handler with orbax)

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def open_checkpoints(workdir: str) -> ocp.CheckpointManager:
    """The checkpoints of a run, to read: evaluation and prediction create and delete nothing.

    Raises:
      TrainingError: the workdir has no checkpoints folder.
    """
    import grain

    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise TrainingError(f"no checkpoint in {directory}; train first (--mode=train).")
    # Nothing is saved or deleted through it; orbax's read_only option would say the same in a
    # warning at every open.
    options = ocp.CheckpointManagerOptions(create=False)
    # A handler for every saved item, though few are read: orbax warns about items it has no
    # handler for.
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler()}  # fmt: skip
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


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


def _restore_as_saved(mngr: ocp.CheckpointManager, step: int) -> Any:
    target = _on_this_host(mngr.item_metadata(step)["state"])
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]


def _step_or_latest(mngr, step: int | None) -> int:
    """`step`, or the latest step of the checkpoints of `mngr`; TrainingError if it has none."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise TrainingError(f"no checkpoint in {mngr.directory}; train first (--mode=train).")
    return step


def restore_saved_state(workdir: str, step: int | None = None) -> Any:
    """The train state of a run's checkpoint (the latest by default) as saved (a tree of step,
    params and opt_state, its containers as orbax restores them), whatever topology saved it.

    Raises:
      TrainingError: the workdir has no checkpoint.
      DamagedCheckpointError: the checkpoint's files do not read.
    """
    mngr = open_checkpoints(workdir)
    step = _step_or_latest(mngr, step)
    with damage_named(mngr, step):
        return _restore_as_saved(mngr, step)


def restore_params(workdir: str, step: int | None = None) -> Any:
    """The parameters of a run's checkpoint (the latest by default), whatever topology saved them.

    Raises:
      TrainingError: the workdir has no checkpoint.
      DamagedCheckpointError: the checkpoint's files do not read.
    """
    return restore_saved_state(workdir, step)["params"]


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a checkpoint of a run (a resume); creates nothing."""
    if not os.path.isdir(os.path.join(os.path.abspath(workdir), "checkpoints")):
        return False
    return open_checkpoints(workdir).latest_step() is not None


def read_run(workdir: str, step: int | None = None) -> tuple[Any, Any]:
    """(the model config saved with a run's checkpoint, read as `read_meta` reads it; its
    parameters) of the latest checkpoint of `workdir` (or of `step`), whatever topology saved
    it: what a system's `initial_params` hook reads another run through (models.initial_params).

    Raises:
      TrainingError: the workdir has no checkpoint.
      DamagedCheckpointError: the checkpoint's files do not read.
    """
    mngr = open_checkpoints(workdir)
    step = _step_or_latest(mngr, step)
    meta, params = read_checkpoint(mngr, step)
    return meta.get("compat", {}).get("model"), params


def read_checkpoint(mngr: ocp.CheckpointManager, step: int) -> tuple[dict, Any]:
    """The metadata (see `read_meta`) and the parameters of the checkpoint at `step`.

    Raises:
      DamagedCheckpointError: the checkpoint's files do not read.
    """
    with damage_named(mngr, step):
        return read_meta(mngr, step), _restore_as_saved(mngr, step)["params"]


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The JSON saved beside a checkpoint: {'compat': the config fields it must match, 'step'}.

    The saved model config is read as `saved_model_view` reads it: in its system's fields,
    with model fields added to lmr_jax after the checkpoint was saved at their defaults.
    """
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    saved = meta.get("compat", {}).get("model")
    if saved is not None:
        meta["compat"]["model"] = saved_model_view(saved)
    return meta


def saved_model_view(saved: Any) -> Any:
    """A model config saved with a checkpoint as today's config of its system would be saved.

    Checkpoints saved before each system owned its config hold one flat model config with the
    fields of every system: the fields of other systems are dropped (the model never read
    them), renamed fields take their new names (models.saved_model_config), and fields added
    to lmr_jax since (e.g. `single_rnn_hidden_size`) take their defaults, so that older
    checkpoints stay compatible with configs that leave the new fields at their defaults. A
    config of an unknown model is returned as saved.
    """
    if not (isinstance(saved, dict) and saved.get("name") in models.SYSTEMS):
        return saved
    defaults = json_view(models.default_model_config(saved["name"]))
    return {**defaults, **models.saved_model_config(saved)}


def check_compatible(
    mngr: ocp.CheckpointManager, step: int, config, meta: dict | None = None
) -> None:
    """Raises TrainingError naming the first config field that differs from the checkpoint's
    (`meta`: the checkpoint's metadata when it has been read already)."""
    meta = read_meta(mngr, step) if meta is None else meta
    mismatch = first_mismatch(meta["compat"], compat_view(config), "config")
    if mismatch:
        raise TrainingError(
            f"the checkpoint at step {step} in {mngr.directory} comes from an incompatible "
            f"config ({mismatch}); use another --workdir or the original config."
        )


def _restore_into(mngr, step: int, state: TrainState, data_iter) -> TrainState:
    import grain

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


def restore_checkpoint(mngr, state: TrainState, data_iter, config) -> TrainState:
    """Restores the newest intact checkpoint into `state` and `data_iter`, after a
    compatibility check; newer damaged ones are set aside (renamed) with a warning.

    Raises:
      TrainingError: the checkpoint comes from an incompatible config.
      DamagedCheckpointError: no checkpoint is intact (none is set aside then).
    """
    damaged = {}
    for step in reversed(mngr.all_steps()):
        try:
            check_compatible(mngr, step, config)
            restored = _restore_into(mngr, step, state, data_iter)
        except TrainingError:
            raise
        except Exception:  # damage, or an error of ours: told apart below
            problem = checkpoint_damage(mngr, step)
            if problem is None:
                raise
            damaged[step] = problem
            continue
        for bad, problem in damaged.items():
            logging.warning("the checkpoint at step %d in %s is damaged (%s); set aside as %s, "
                            "resuming from step %d", bad, mngr.directory, problem,
                            _set_aside_name(mngr, bad), step)  # fmt: skip
        _set_aside(mngr, list(damaged))
        return restored
    problems = "; ".join(f"step {step}: {problem}" for step, problem in damaged.items())
    raise DamagedCheckpointError(
        f"no checkpoint in {mngr.directory} is intact ({problems}); move them out of the way "
        "to train from step 0, or use another --workdir."
    )


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints
# ---------------------------------------------------------------------------------------------

# The JSON files of a step folder orbax and grain read; the arrays are read through TensorStore.
_JSON_FILES = ("meta/metadata", "data/*.json", "state/_METADATA", "state/_sharding",
               "state/array_metadatas/*")  # fmt: skip


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _read_error(error: BaseException, folder: epath.Path) -> str:
    """A TensorStore or orbax read error in a few words: TensorStore's status code and the
    array it was reading when it names them (its messages are long JSON specs)."""
    text = str(_root_cause(error)).replace(f"{folder}/", "")
    first = text.splitlines()[0] if text.strip() else type(_root_cause(error)).__name__
    code, key = re.match(r"([A-Z][A-Z_]+): ", first), re.search(r'reading "([^"]+)"', first)
    if code and key:
        return f"{code.group(1)} reading {key.group(1)}"
    return textwrap.shorten(first, 100)


_ABANDONED_READ = "_read_array_index_and_device_put"  # orbax's coroutine reading one array


def _hide_abandoned_reads() -> None:
    """Keeps the reads a failed restore leaves behind from printing, at any later time,
    hundreds of lines per damaged checkpoint: the pending read coroutines turn the GeneratorExit
    of their closing into an Exception (an `except BaseException` around orbax's read), their
    finished tasks' errors are never retrieved, and TensorStore's reads still in flight find
    orbax's event loop closed. Python reports the first and last as unraisable exceptions,
    asyncio logs the second as an error."""
    hook = sys.unraisablehook
    if not getattr(hook, "hides_abandoned_reads", False):

        def hide(unraisable):
            code = getattr(unraisable.object, "cr_code", None)
            closed = code is not None and code.co_name == _ABANDONED_READ
            late = unraisable.object is None and str(unraisable.exc_value) == "Event loop is closed"
            if not (closed or late):
                hook(unraisable)

        hide.hides_abandoned_reads = True
        sys.unraisablehook = hide
    asyncio_logger = std_logging.getLogger("asyncio")
    if _not_an_abandoned_read not in asyncio_logger.filters:
        asyncio_logger.addFilter(_not_an_abandoned_read)


def _not_an_abandoned_read(record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    # A task of orbax's read coroutine, or a task or bare future of TensorStore's read of one
    # array (its message names the OCDBT store or prints the array's TensorStore spec).
    tensorstore = any(mark in message.lower() for mark in ("ocdbt", "kvstore", "'driver'"))
    abandoned = "exception was never retrieved" in message and tensorstore
    return _ABANDONED_READ not in message and not abandoned


def checkpoint_damage(mngr: ocp.CheckpointManager, step: int) -> str | None:
    """What is damaged in the checkpoint at `step` (a JSON file cut short, arrays that do not
    read), or None when it reads whole as saved (an error restoring it is then not damage).

    Called after every failed restore, so it also hides what the failed reads print later.
    """
    _hide_abandoned_reads()
    folder = epath.Path(mngr.directory) / str(step)
    for pattern in _JSON_FILES:
        for path in sorted(folder.glob(pattern)):
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as e:
                return f"{path.relative_to(folder)} is not valid JSON: {e}"
    try:
        read_meta(mngr, step)
        _restore_as_saved(mngr, step)
    except Exception as e:  # orbax and TensorStore raise many kinds on bad files
        return f"its arrays do not read: {_read_error(e, folder)}"
    return None


@contextlib.contextmanager
def damage_named(mngr: ocp.CheckpointManager, step: int) -> Iterator[None]:
    """Turns an error reading the checkpoint at `step` into a DamagedCheckpointError naming what
    is damaged and which checkpoints are intact, when its files are damaged; other errors pass
    unchanged."""
    try:
        yield
    except TrainingError:
        raise
    except Exception as error:  # damage or not: told apart by checkpoint_damage
        problem = checkpoint_damage(mngr, step)
        if problem is None:
            raise
        intact = [s for s in mngr.all_steps() if s != step and checkpoint_damage(mngr, s) is None]
        if intact:
            named = (f"ones are steps {', '.join(map(str, intact))}" if len(intact) > 1
                     else f"one is step {intact[0]}")  # fmt: skip
            hint = (f"the intact {named} (--mode=train sets step {step} aside and resumes from "
                    f"step {intact[-1]}; predict reads {mngr.directory}/{intact[-1]})")  # fmt: skip
        else:
            hint = "no other checkpoint there is intact"
        raise DamagedCheckpointError(
            f"the checkpoint at step {step} in {mngr.directory} is damaged ({problem}); {hint}."
        ) from error


def _set_aside_name(mngr: ocp.CheckpointManager, step: int) -> str:
    """STEP.damaged (STEP.damaged.2, ... when that exists): not a step name, so orbax neither
    lists nor deletes it."""
    directory = epath.Path(mngr.directory)
    names = (f"{step}.damaged" + (f".{n}" if n > 1 else "") for n in range(1, 1000))
    return next(name for name in names if not (directory / name).exists())


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
    """Renames the folders of damaged `steps` (process 0; the others wait) and reloads `mngr`."""
    if not steps:
        return
    if jax.process_index() == 0:
        directory = epath.Path(mngr.directory)
        for step in steps:
            (directory / str(step)).rename(directory / _set_aside_name(mngr, step))
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes("lmr_jax_set_aside_damaged_checkpoints")
    mngr.reload()


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

"""Training: the train state, the pmapped train step, checkpoints, metric logging and the loop.

Data parallelism follows the JAX pmap migration guide: the train state is NOT replicated
(`in_axes=None`, `out_axes=None`), only the batch carries a leading local-device axis, and
gradients are averaged with `lax.pmean`. The same code runs on CPU, GPU and TPU and on several
hosts (each process reads its own shard; `jax.distributed.initialize` is called by main.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from lmr_jax import config as config_lib
from lmr_jax import losses, models, smpl
from lmr_jax.data import pipeline


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; no RNG (it is derived from the step)."""

    step: jnp.ndarray
    params: Any
    opt_state: Any


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup, then constant or cosine decay to zero at `num_steps`."""
    if optim.schedule == "cosine":
        decay = optax.cosine_decay_schedule(optim.lr, max(num_steps - optim.warmup_steps, 1))
    else:
        decay = optax.constant_schedule(optim.lr)
    if optim.warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, optim.lr, optim.warmup_steps)
    return optax.join_schedules([warmup, decay], [optim.warmup_steps])


def make_optimizer(
    optim: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    """Adam (AdamW when weight decay is set) with gradient clipping by global norm."""
    schedule = learning_rate_schedule(optim, num_steps)
    parts = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
    if optim.weight_decay > 0:
        parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay))
    else:
        parts.append(optax.adam(schedule))
    return optax.chain(*parts)


def train_step(
    state: TrainState,
    batch: dict[str, jnp.ndarray],
    base_rng: jnp.ndarray,
    *,
    model,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_config: ml_collections.ConfigDict,
    body_model: smpl.SMPLModel,
    skip_nonfinite: bool,
) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One optimisation step on one device's share of the batch (run under pmap 'data').

    Args:
      state: the unreplicated train state.
      batch: this device's batch, e.g. features [B, T, D], kp2d [B, T, J, 3].
      base_rng: the run's base key; the step's key is fold_in(base, step), then per device.
      model, optimizer, schedule, loss_config, body_model: bound with functools.partial.
      skip_nonfinite: keep the old parameters when the loss or gradients are not finite.

    Returns:
      The new state and this device's metrics (the loss terms are already averaged).
    """
    rng = jax.random.fold_in(jax.random.fold_in(base_rng, state.step), 0)
    dropout_rng = jax.random.fold_in(rng, jax.lax.axis_index("data"))

    def loss_fn(params):
        outputs = model.apply(
            {"params": params}, batch["features"], train=True, rngs={"dropout": dropout_rng}
        )
        return losses.compute_losses(outputs, batch, loss_config, body_model, axis_name="data")

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name="data")
    loss, terms = jax.lax.pmean((loss, terms), axis_name="data")
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step), "finite": finite}
    metrics.update({f"loss_{k}": v for k, v in terms.items()})
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_pmapped_step(config, model, body_model, optimizer, schedule) -> Callable:
    """The train step bound to its model and config, pmapped over local devices."""
    step = functools.partial(
        train_step,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        loss_config=config.loss,
        body_model=body_model,
        skip_nonfinite=config.train.nonfinite == "skip",
    )
    # State unreplicated in and out; the state's buffers are donated to the new state.
    return jax.pmap(
        step, axis_name="data", in_axes=(None, 0, None), out_axes=(None, 0), donate_argnums=(0,)
    )


def init_state(config, model, optimizer, features_shape: tuple[int, ...]) -> TrainState:
    """Initialises parameters from the seed for features of shape [B, T, D]."""
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    dummy = jnp.zeros((1, *features_shape[-2:]), jnp.float32)
    params = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"])(rng)
    state = TrainState(
        step=jnp.asarray(0, jnp.int32), params=params, opt_state=optimizer.init(params)
    )
    return replicate_on_local_devices(state)


def replicate_on_local_devices(tree: Any) -> Any:
    """Places arrays as the pmapped step returns its unreplicated outputs (replicated over this
    process's devices), so that the first step is traced and compiled like every later one."""
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

# Config fields whose change makes a checkpoint unusable (parameter shapes or data layout).
_COMPAT_FIELDS = ("model", "data.window")


def json_view(node: Any) -> Any:
    """A config node as saved in a checkpoint's metadata (JSON types: tuples become lists)."""
    value = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
    return json.loads(json.dumps(value, default=str))


def _compat_view(config: ml_collections.ConfigDict) -> dict:
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


def save_checkpoint(mngr, state: TrainState, data_iter, config) -> None:
    import grain

    step = int(state.step)
    if jax.process_count() > 1:  # pmap's unreplicated outputs are host-local arrays
        state = jax.tree.map(ocp.utils.fully_replicated_host_local_array_to_global_array, state)
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave({"compat": _compat_view(config), "step": step}),
        ),
    )


def _on_this_host(metadata) -> Any:
    """Restore targets for saved arrays: same shapes and dtypes, on this process's first device
    (so that a checkpoint saved by any number of processes restores anywhere)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = metadata.tree if hasattr(metadata, "tree") else metadata
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)


def restore_params(workdir: str, step: int | None = None) -> Any:
    """The parameters of a run's checkpoint (the latest by default), whatever topology saved them.

    Raises:
      TrainingError: the workdir has no checkpoint.
    """
    mngr = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        item_handlers={"state": ocp.StandardCheckpointHandler()},
    )
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise TrainingError(f"no checkpoint in {mngr.directory}; train first (--mode=train).")
    target = _on_this_host(mngr.item_metadata(step)["state"])
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]["params"]


def restore_checkpoint(mngr, state: TrainState, data_iter, config) -> TrainState:
    """Restores the latest checkpoint into `state` and `data_iter`, after a compatibility check."""
    import grain

    step = mngr.latest_step()
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    mismatch = first_mismatch(meta["compat"], _compat_view(config), "config")
    if mismatch:
        raise TrainingError(
            f"the checkpoint at step {step} in {mngr.directory} comes from an incompatible "
            f"config ({mismatch}); use another --workdir or the original config."
        )
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


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


class MetricLog:
    """Appends metrics to workdir/metrics.jsonl (process 0 only) and keeps them for plots."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = jax.process_index() == 0

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: list[dict], path: str) -> None:
    """Training losses and validation errors against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        pts = [(r["step"], r[key]) for r in train if key in r]
        axes[0].plot(*zip(*pts, strict=True), label=key)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    axes[0].legend(fontsize=7)
    for key in sorted({k for r in val for k in r if k.startswith("val_")}):
        pts = [(r["step"], r[key]) for r in val if key in r]
        axes[1].plot(*zip(*pts, strict=True), marker="o", label=key)
    axes[1].set(xlabel="step", ylabel="mm", title="validation")
    if val:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def itstime(step: int, every: int, total: int) -> bool:
    """True every `every` steps (counting completed steps) and at the last one."""
    return step == total or (every > 0 and step % every == 0)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def dataset_specs(config: ml_collections.ConfigDict) -> list[pipeline.DatasetSpec]:
    """The training mixture of the config as pipeline specs."""
    return [
        pipeline.DatasetSpec(
            name=d.name, split=d.split, data_dir=config.data.data_dir, weight=d.weight,
            stride=d.stride, window=config.data.window,
        )
        for d in config.data.train.values()
    ]  # fmt: skip


def eval_spec(config: ml_collections.ConfigDict, name: str, split: str) -> pipeline.DatasetSpec:
    return pipeline.DatasetSpec(
        name=name, split=split, data_dir=config.data.data_dir, window=config.data.window
    )


def make_apply_fn(model) -> Callable:
    """Jitted inference: features [W, T, D] -> the per-frame outputs evaluation needs."""

    @jax.jit
    def apply(params, features):
        out = model.apply({"params": params}, features, train=False)
        keys = ("joints3d", "vertices", "pose", "betas", "cam", "kp2d")
        return {k: out[k] for k in keys}

    return apply


def validate(config, model, params, body_model, split="validation", max_videos=None) -> dict:
    """Errors on whole videos of the validation (or another) split."""
    from lmr_jax import evaluate

    source = config.data.validation if split == "validation" else config.eval
    spec = eval_spec(config, source.name, split)
    apply = make_apply_fn(model)
    return evaluate.evaluate_videos(
        functools.partial(apply, params),
        pipeline.eval_videos(spec),
        body_model,
        window=config.data.window,
        protocol=config.eval.protocol,
        max_videos=config.data.eval_max_videos if max_videos is None else max_videos,
    )


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    model: Any
    body_model: smpl.SMPLModel
    last_metrics: dict


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """Trains (or resumes training) according to `config`, writing everything to `workdir`."""
    config_lib.check(config)
    os.makedirs(workdir, exist_ok=True)
    num_steps = config.train.num_steps
    local_devices = jax.local_device_count()
    logging.info("process %d/%d, %d local devices of %d", jax.process_index(),
                 jax.process_count(), local_devices, jax.device_count())  # fmt: skip

    # --- Body model, model, data ---------------------------------------------------------
    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    dataset = pipeline.train_dataset(
        dataset_specs(config), window=config.data.window,
        global_batch_size=config.train.batch_size, num_local_devices=local_devices,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    data_iter = iter(dataset)
    start_state = data_iter.get_state()
    features_shape = next(data_iter)["features"].shape
    data_iter.set_state(start_state)

    # --- State, optimizer, checkpoints -----------------------------------------------------
    schedule = learning_rate_schedule(config.optim, num_steps)
    optimizer = make_optimizer(config.optim, num_steps)
    state = init_state(config, model, optimizer, features_shape)
    mngr = checkpoint_manager(workdir, config.train.max_to_keep)
    if mngr.latest_step() is not None:
        state = restore_checkpoint(mngr, state, data_iter, config)
        logging.info("resumed from step %d", int(state.step))
        print(f"resumed from the checkpoint at step {int(state.step)}", flush=True)
    best = BestCheckpoint(workdir)
    p_step = make_pmapped_step(config, model, body_model, optimizer, schedule)
    base_rng = jax.random.PRNGKey(config.seed)
    log = MetricLog(workdir)

    # --- Steps -----------------------------------------------------------------------------
    step = int(state.step)
    stop = config.train.nonfinite == "stop"
    pending, last = None, {}
    timer = (time.perf_counter(), step)
    while step < num_steps:
        batch = next(data_iter)
        state, metrics = p_step(state, batch, base_rng)
        if pending is not None:  # look at the previous step's flag: no sync on this step
            _check_finite(pending, step, mngr, stop)
        pending = metrics
        step += 1
        if itstime(step, config.train.log_every, num_steps):
            last = {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            rate = (step - timer[1]) / max(now - timer[0], 1e-9)
            timer = (now, step)
            eta = (num_steps - step) / max(rate, 1e-9)
            log.write(step, {**{k: v for k, v in last.items() if k != "finite"},
                             "steps_per_s": rate})  # fmt: skip
            print(f"step {step}/{num_steps}  loss {last['loss']:.4f}  {rate:.2f} steps/s  "
                  f"ETA {eta / 60:.1f} min", flush=True)  # fmt: skip
        if config.train.eval_every and itstime(step, config.train.eval_every, num_steps):
            _check_finite(metrics, step, mngr, stop)
            results = validate(config, model, state.params, body_model)
            values = {f"val_{k}": v for k, v in results["overall"].items()}
            log.write(step, values)
            print("  validation " + "  ".join(f"{k} {v:.1f}" for k, v in values.items()))
            best.update(step, values.get("val_PA-MPJPE", np.nan), state.params)
        if itstime(step, config.train.checkpoint_every, num_steps):
            _check_finite(metrics, step, mngr, stop)
            save_checkpoint(mngr, state, data_iter, config)
    if pending is not None:
        _check_finite(pending, step, mngr, stop)
    mngr.wait_until_finished()
    if jax.process_index() == 0:
        plot_curves(log.read(), os.path.join(workdir, "plots", "curves.png"))
    return TrainResult(state=state, model=model, body_model=body_model, last_metrics=last)


def _check_finite(metrics: dict, step: int, mngr, stop: bool) -> None:
    """Stops the run when the loss of `step` was not finite ('stop' mode), else logs the skip."""
    finite = np.asarray(jax.device_get(metrics["finite"]))
    if not finite.all() and not stop:
        logging.warning("non-finite loss or gradient at step %d: update skipped", step)
    elif not finite.all():
        mngr.wait_until_finished()
        kept = mngr.latest_step()
        raise TrainingError(
            f"non-finite loss or gradient at step {step}; stopping. The last good checkpoint "
            f"is step {kept} in {mngr.directory}." if kept is not None else
            f"non-finite loss or gradient at step {step}; stopping (no checkpoint yet)."
        )  # fmt: skip


class BestCheckpoint:
    """Keeps the parameters with the lowest validation PA-MPJPE in workdir/best."""

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
                step, args=ocp.args.StandardSave(params), metrics={"val_PA-MPJPE": value}
            )
            self.mngr.wait_until_finished()


def run_label(config: ml_collections.ConfigDict) -> str:
    """The model's name in result tables, with the ablation switched on, if any."""
    switches = [k for k in ("single_rnn", "no_root_dependency") if config.model.get(k)]
    return config.model.name + "".join(f" ({k})" for k in switches)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, then evaluates on the test split; writes workdir/eval/<split>.{json,md}."""
    from lmr_jax import evaluate

    result = train(config, workdir)
    if not config.eval.split:  # evaluation switched off (--config.eval.split=)
        return {}
    results = validate(config, result.model, result.state.params, result.body_model,
                       split=config.eval.split, max_videos=0)  # fmt: skip
    if jax.process_index() == 0:
        table = evaluate.write_results(results, workdir, config.eval.split, run_label(config))
        print(table, flush=True)
    return results


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the latest checkpoint of `workdir` on config.eval's split."""
    from lmr_jax import evaluate

    config_lib.check(config)
    mngr = checkpoint_manager(workdir, config.train.max_to_keep)
    step = mngr.latest_step()
    if step is None:
        raise TrainingError(f"no checkpoint in {mngr.directory}; train first (--mode=train).")
    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    mismatch = first_mismatch(meta["compat"], _compat_view(config), "config")
    if mismatch:
        raise TrainingError(f"the checkpoint at step {step} in {mngr.directory} comes from an "
                            f"incompatible config ({mismatch}).")  # fmt: skip
    params = restore_params(workdir, step)
    results = validate(config, model, params, body_model, split=config.eval.split, max_videos=0)
    table = evaluate.write_results(results, workdir, config.eval.split, run_label(config))
    print(table, flush=True)
    return results

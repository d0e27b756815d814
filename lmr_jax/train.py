"""Training: the pmapped train step, validation, metric logging and the loop.

Data parallelism follows the JAX pmap migration guide: the train state is NOT replicated
(`in_axes=None`, `out_axes=None`), only the batch carries a leading local-device axis, and
gradients are averaged with `lax.pmean`. The same code runs on CPU, GPU and TPU and on several
hosts (each process reads its own shard; `jax.distributed.initialize` is called by main.py).
Checkpoints live in lmr_jax/checkpoints.py, the optimizer and its schedules in lmr_jax/optim.py,
the train state in lmr_jax/train_state.py and the jitted inference (`make_apply_fn`, shared with
evaluation and prediction) in lmr_jax/runner.py; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lmr_jax import config as config_lib
from lmr_jax import losses, models, smpl
from lmr_jax.checkpoints import (
    BestCheckpoint,
    TrainingError,
    check_compatible,
    checkpoint_manager,
    has_checkpoint,
    open_checkpoints,
    read_checkpoint,
    read_run,
    replicate_on_local_devices,
    restore_checkpoint,
    save_checkpoint,
)
from lmr_jax.data import pipeline
from lmr_jax.metric_log import MetricLog, plot_curves
from lmr_jax.optim import learning_rate_schedule, make_optimizer, plateau_state, plateau_update
from lmr_jax.rngs import apply_for_training, dropout_rngs, example_index, init_rng, uses_dropout
from lmr_jax.runner import make_apply_fn  # also lmr_jax.train.make_apply_fn, as before
from lmr_jax.train_state import TrainState  # also lmr_jax.train.TrainState, as before


def _skipped(finite: jnp.ndarray, new: jnp.ndarray, old: jnp.ndarray) -> jnp.ndarray:
    """An optimizer-state leaf after a step that may be skipped: float leaves (moments) keep
    their old value, integer leaves (the step counts that drive the learning-rate schedule)
    advance, so the optimizer's count stays state.step and the logged lr is the applied one.
    PlateauState is left as it is by the step (the host updates it), so it cannot change here."""
    if jnp.issubdtype(new.dtype, jnp.integer):
        return new
    return jnp.where(finite, new, old)


def training_loss(
    outputs: dict,
    batch: dict,
    loss_config,
    body_model: smpl.SMPLModel,
    extra_losses: Callable | None = None,
    axis_name: str | None = None,
) -> tuple[jnp.ndarray, dict]:
    """The training objective: losses.compute_losses plus the system's own terms.

    Args:
      outputs, batch, loss_config, body_model, axis_name: as losses.compute_losses.
      extra_losses: (outputs, batch, axis_name) -> {name: weighted scalar}, the system's terms
        (`functools.partial(models.extra_losses, config)`); None: none.

    Returns:
      (total, terms): the shared terms (unweighted) and the system's (weighted, added to the
      total as they are), all logged as `loss_<name>`.

    Raises:
      ValueError: a system's term has the name of a shared one.
    """
    extra = {} if extra_losses is None else extra_losses(outputs, batch, axis_name)
    shared = losses.resolve(loss_config).weights
    clash = sorted(set(extra) & set(shared))
    if clash:
        raise ValueError(f"the model's extra loss term '{clash[0]}' has the name of a shared "
                         f"loss term; expected names other than {sorted(shared)}.")  # fmt: skip
    total, terms = losses.compute_losses(outputs, batch, loss_config, body_model, axis_name)
    for value in extra.values():
        total = total + jnp.asarray(value, jnp.float32)
    return total, {**terms, **extra}


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
    dropout: bool,
    extra_losses: Callable | None = None,
) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One optimisation step on one device's share of the batch (run under pmap 'data').

    Args:
      state: the unreplicated train state.
      batch: this device's batch, e.g. features [B, T, D], kp2d [B, T, J, 3], and `index` [B]
        (the examples' places in the global batch, see `example_index`).
      base_rng: the run's base key (see `dropout_rngs`).
      model, optimizer, schedule, loss_config, body_model: bound with functools.partial.
      skip_nonfinite: keep the old parameters when the loss or gradients are not finite.
      dropout: whether the model uses dropout (per-example keys, see `apply_for_training`).
      extra_losses: the system's own loss terms (see `training_loss`).

    Returns:
      The new state and this device's metrics (the loss terms are already averaged).
    """
    keys = dropout_rngs(base_rng, state.step, batch["index"]) if dropout else None
    # The batch fields the model reads in training besides its features (DSD's kp2d labels
    # with use_gt_2d): the module's `training_inputs`, none for most models.
    inputs = {name: batch[name] for name in getattr(model, "training_inputs", ())}

    def loss_fn(params):
        outputs = apply_for_training(model, params, batch["features"], keys, inputs)
        return training_loss(outputs, batch, loss_config, body_model, extra_losses, "data")

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name="data")
    loss, terms = jax.lax.pmean((loss, terms), axis_name="data")
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), params, state.params)
        opt_state = jax.tree.map(functools.partial(_skipped, finite), opt_state, state.opt_state)
    plateau = plateau_state(state.opt_state)
    lr = schedule(state.step) * (1.0 if plateau is None else plateau.scale)
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite}
    metrics.update({f"loss_{k}": v for k, v in terms.items()})
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_pmapped_step(
    config, model, body_model, optimizer, schedule, *, donate: bool = True
) -> Callable:
    """The train step bound to its model and config, pmapped over local devices.

    Returns:
      step(state, batch, base_rng) -> (state, metrics); it adds each example's index in the
      global batch (`example_index`) to the batch. With `donate` the state's buffers are
      donated to the new state (the input state is deleted).
    """
    step = functools.partial(
        train_step,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        loss_config=config.loss,
        body_model=body_model,
        skip_nonfinite=config.train.nonfinite == "skip",
        dropout=uses_dropout(model),
        # The system's own terms (HKMR's L_KL), read from the whole config: models.extra_losses.
        extra_losses=functools.partial(models.extra_losses, config),
    )
    # State unreplicated in and out (the pmap migration guide), the batch split over devices.
    p_step = jax.pmap(
        step,
        axis_name="data",
        in_axes=(None, 0, None),
        out_axes=(None, 0),
        donate_argnums=(0,) if donate else (),
    )

    def run(state, batch, base_rng):
        devices, per_device = batch["features"].shape[:2]
        index = example_index(devices, per_device, jax.process_index(), jax.process_count())
        return p_step(state, {**batch, "index": index}, base_rng)

    return run


def init_state(
    config, model, optimizer, features_shape: tuple[int, ...], from_other_runs: bool = True
) -> TrainState:
    """The train state of step 0 for features of shape [B, T, D]: parameters from the seed,
    with the parts the system takes from other runs (models.initial_params: SATN's trained
    DSD) unless `from_other_runs` is False (a resumed run, whose checkpoint replaces them)."""
    rng = init_rng(jax.random.PRNGKey(config.seed))
    rank = getattr(model, "input_ndim", 3)  # [B, T, D]; FromPixels takes [B, T, H, W, 3]
    dummy = jnp.zeros((1, *features_shape[-(rank - 1) :]), jnp.float32)
    params = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"])(rng)
    if from_other_runs and "model" in config:
        params = models.initial_params(config, params, read_run)
    state = TrainState(
        step=jnp.asarray(0, jnp.int32), params=params, opt_state=optimizer.init(params)
    )
    return replicate_on_local_devices(state)


def itstime(step: int, every: int, total: int) -> bool:
    """True every `every` steps (counting completed steps) and at the last one."""
    return step == total or (every > 0 and step % every == 0)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def dataset_specs(config: ml_collections.ConfigDict) -> list[pipeline.DatasetSpec]:
    """The training mixture of the config as pipeline specs (datasets of weight 0 left out).

    When the datasets name groups ('2d', '3d'), the '2d' group gets `data.ratio_2d` of the
    windows and the '3d' group the rest; inside a group a dataset's share is proportional to
    its weight times its number of windows (opens the datasets to count them).

    Raises:
      DatasetError: a grouped dataset is not built or unusable.
      ValueError: no dataset keeps a weight above 0.
    """
    chosen = [d for d in config.data.train.values() if d.weight > 0]
    specs = [
        pipeline.DatasetSpec(
            name=d.name, split=d.split, data_dir=config.data.data_dir, weight=d.weight,
            stride=d.stride, window=config.data.window,
            tail=config.data.get("tail_window", True), **_inputs(config),
        )
        for d in chosen
    ]  # fmt: skip
    groups = [d.get("group", "") for d in chosen]
    if not any(groups):
        return specs
    windows = [
        len(pipeline.window_index(pipeline.open_dataset(s).lengths, s.window, s.stride, s.tail))
        for s in specs
    ]
    share = {"2d": config.data.ratio_2d, "3d": 1.0 - config.data.ratio_2d}
    totals = {}
    for group, spec, count in zip(groups, specs, windows, strict=True):
        totals[group] = totals.get(group, 0.0) + spec.weight * count
    weighted = [
        dataclasses.replace(spec, weight=share[group] * spec.weight * count / totals[group])
        for group, spec, count in zip(groups, specs, windows, strict=True)
    ]
    weighted = [spec for spec in weighted if spec.weight > 0]
    if not weighted:
        raise ValueError(f"config field data.ratio_2d is {config.data.ratio_2d!r}, which leaves "
                         "no dataset of the mixture a share above 0.")  # fmt: skip
    return weighted


def eval_spec(config: ml_collections.ConfigDict, name: str, split: str) -> pipeline.DatasetSpec:
    return pipeline.DatasetSpec(
        name=name, split=split, data_dir=config.data.data_dir, window=config.data.window,
        **_inputs(config),
    )  # fmt: skip


def _inputs(config: ml_collections.ConfigDict) -> dict:
    """What the pipeline feeds the model (.get: configs saved before the fields existed)."""
    data = config.data
    return {"inputs": data.get("inputs", "features"), "image_size": data.get("image_size", 0)}


def evaluate_set(
    config, model, params, body_model, eval_set: config_lib.EvalSet, max_videos: int = 0
) -> dict:
    """Errors on whole videos of one dataset split (see evaluate.evaluate_videos).

    Args:
      config: the run's config (data_dir, window, eval.protocol).
      model, params, body_model: what is evaluated.
      eval_set: the dataset split and its joints.
      max_videos: stop after this many videos (0: all).
    """
    from lmr_jax import evaluate

    spec = eval_spec(config, eval_set.name, eval_set.split)
    apply = make_apply_fn(model)
    # On one device: params replicated over the local devices (as the train step returns them)
    # would make the jitted apply compute the same windows on each of them.
    params = jax.device_put(params, jax.local_devices()[0])
    return evaluate.evaluate_videos(
        functools.partial(apply, params),
        pipeline.eval_videos(spec),
        body_model,
        window=config.data.window,
        protocol=config.eval.protocol,
        max_videos=max_videos,
        joints=eval_set.joints,
        input_fields=tuple(getattr(model, "evaluation_inputs", ())),
    )


def validate(config, model, params, body_model) -> dict:
    """Errors on whole videos of config.data.validation (at most data.eval_max_videos)."""
    source = config.data.validation
    eval_set = config_lib.EvalSet(source.name, source.split, source.get("joints", "vibe49"))
    return evaluate_set(config, model, params, body_model, eval_set,
                        max_videos=config.data.eval_max_videos)  # fmt: skip


def describe_mixture(specs: list[pipeline.DatasetSpec]) -> str:
    """One line naming each dataset of the mixture with its share of the windows."""
    total = sum(spec.weight for spec in specs)
    return ", ".join(f"{spec.label} {spec.weight / total:.1%}" for spec in specs)


def apply_plateau(state: TrainState, value: float, optim: ml_collections.ConfigDict) -> TrainState:
    """The train state after the plateau schedule has seen a validation value (host side)."""
    old = jax.device_get(plateau_state(state.opt_state))
    new = plateau_update(old, value, optim)
    if new.scale != old.scale:
        print(f"  learning rate x{optim.plateau_factor:g}, now {optim.lr * float(new.scale):.3g}: "
              f"validation {optim.plateau_metric} did not improve in "
              f"{optim.plateau_patience + 1} validation(s) in a row", flush=True)  # fmt: skip
    new = replicate_on_local_devices(jax.tree.map(jnp.asarray, new))
    return state.replace(opt_state=(*state.opt_state[:-1], new))


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    model: Any
    body_model: smpl.SMPLModel
    last_metrics: dict


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """Trains (or resumes training) according to `config`, writing everything to `workdir`."""
    config_lib.check(config)
    num_steps = config.train.num_steps
    local_devices = jax.local_device_count()
    logging.info("process %d/%d, %d local devices of %d", jax.process_index(),
                 jax.process_count(), local_devices, jax.device_count())  # fmt: skip

    # --- Body model, model, data ---------------------------------------------------------
    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    specs = dataset_specs(config)
    if jax.process_index() == 0:
        print(f"training mixture: {describe_mixture(specs)}", flush=True)
    dataset = pipeline.train_dataset(
        specs, window=config.data.window,
        global_batch_size=config.train.batch_size, num_local_devices=local_devices,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    data_iter = iter(dataset)
    start_state = data_iter.get_state()
    features_shape = next(data_iter)["features"].shape
    data_iter.set_state(start_state)

    # --- State, optimizer, checkpoints -----------------------------------------------------
    schedule = learning_rate_schedule(config.optim, num_steps)
    optimizer = make_optimizer(config.optim, num_steps, models.learning_rate_scales(config))
    # A resumed run restores its own checkpoint: nothing is read from other runs for it.
    resuming = has_checkpoint(workdir)
    state = init_state(config, model, optimizer, features_shape, from_other_runs=not resuming)
    # Created only now that the body model, the model and the data have loaded: a start that
    # fails on a bad input leaves no workdir behind.
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoint_manager(workdir, config.train.max_to_keep)
    if mngr.latest_step() is not None:
        state = restore_checkpoint(mngr, state, data_iter, config)
        logging.info("resumed from step %d", int(state.step))
        print(f"resumed from the checkpoint at step {int(state.step)}", flush=True)
    best = BestCheckpoint(workdir)
    p_step = make_pmapped_step(config, model, body_model, optimizer, schedule)
    base_rng = jax.random.PRNGKey(config.seed)
    log = MetricLog(workdir)
    log.drop_after(int(state.step))  # no repeated steps after a resume

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
            if plateau_state(state.opt_state) is not None:
                value = results["overall"].get(config.optim.plateau_metric, np.nan)
                state = apply_plateau(state, value, config.optim)
        if itstime(step, config.train.checkpoint_every, num_steps):
            _check_finite(metrics, step, mngr, stop)
            save_checkpoint(mngr, state, data_iter, config)
    if pending is not None:
        _check_finite(pending, step, mngr, stop)
    mngr.wait_until_finished()
    log.close()
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


def run_label(config: ml_collections.ConfigDict) -> str:
    """The model's name in result tables, with the ablation switched on, if any."""
    switches = [k for k in ("single_rnn", "no_root_dependency") if config.model.get(k)]
    return config.model.name + "".join(f" ({k})" for k in switches)


def _evaluate_and_write(config, workdir, model, params, body_model) -> dict:
    """Evaluates `params` on every set of `config_lib.eval_sets(config)`; writes
    workdir/eval/<label>.{json,md} (process 0) and prints the tables."""
    from lmr_jax import evaluate

    out = {}
    for label, eval_set in config_lib.eval_sets(config).items():
        results = evaluate_set(config, model, params, body_model, eval_set)
        results["params"] = models.count_params(params)  # tables show each model's size
        if jax.process_index() == 0:
            table = evaluate.write_results(results, workdir, label, run_label(config))
            print(f"{eval_set.name} {eval_set.split} ({eval_set.joints} joints, "
                  f"{config.eval.protocol} protocol):\n{table}", flush=True)  # fmt: skip
        out[label] = results
    return out


def _as_returned(config, out: dict) -> dict:
    """{set: results} for named sets, else the one split's results ({} for none)."""
    if config.eval.sets.strip():
        return out
    return out.get(config.eval.split, {})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, then evaluates the final parameters (see `config_lib.eval_sets`).

    Returns:
      With `eval.sets`: {set name: results}; without: the results on `eval.split` ({} when
      evaluation is switched off with `--config.eval.split=`).
    """
    result = train(config, workdir)
    out = _evaluate_and_write(config, workdir, result.model, result.state.params,
                              result.body_model)  # fmt: skip
    return _as_returned(config, out)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the latest checkpoint of `workdir` as `train_and_evaluate` does.

    Raises:
      TrainingError: no checkpoint there (nothing is created), or one of another config.
      checkpoints.DamagedCheckpointError: the latest checkpoint is damaged (the message names
        the intact ones).
    """
    config_lib.check(config)
    mngr = open_checkpoints(workdir)  # creates nothing, even for a missing workdir
    step = mngr.latest_step()
    if step is None:
        raise TrainingError(f"no checkpoint in {mngr.directory}; train first (--mode=train).")
    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    meta, params = read_checkpoint(mngr, step)  # a damaged one is refused, naming intact ones
    check_compatible(mngr, step, config, meta)
    if config.eval.get("occlusion", ""):
        return evaluate_occlusion_and_write(config, workdir, model, params, body_model)
    return _as_returned(config, _evaluate_and_write(config, workdir, model, params, body_model))


def evaluate_occlusion_and_write(config, workdir, model, params, body_model) -> dict:
    """Occlusion robustness of `params` on the split of `config_lib.eval_sets` (one, a
    synthetic_motion split; lmr_jax/evaluate_occlusion.py): writes workdir/occlusion/results.json,
    results.md and occlusion.png (process 0), prints the tables, returns the results."""
    from lmr_jax import evaluate, evaluate_occlusion, visualize
    from lmr_jax.data import occlusion

    sets = list(config_lib.eval_sets(config).values())
    if len(sets) != 1:
        raise ValueError(f"config field eval.occlusion needs one evaluation split, not "
                         f"{len(sets)}: set eval.sets='' and eval.split.")  # fmt: skip
    eval_set = sets[0]
    selection = evaluate.get_eval_joints(eval_set.joints)
    keys = ("joints3d", "vertices") if selection.from_vertices else ("joints3d",)
    apply = make_apply_fn(model, keys)
    params = jax.device_put(params, jax.local_devices()[0])  # see evaluate_set
    start = time.time()
    results = evaluate_occlusion.evaluate_occlusion(
        functools.partial(apply, params),
        occlusion.observed_videos(eval_spec(config, eval_set.name, eval_set.split)),
        body_model,
        window=config.data.window,
        protocol=config.eval.protocol,
        kinds=occlusion.parse_kinds(config.eval.occlusion),
        occluded=occlusion.parse_joints(config.eval.get("occlusion_joints", "")),
        max_videos=config.eval.get("occlusion_max_videos", 0),
        joints=eval_set.joints,
        seed=config.eval.get("occlusion_seed", 0),
    )
    results.update(dataset=eval_set.name, split=eval_set.split,
                   seconds=round(time.time() - start, 1))  # fmt: skip
    if jax.process_index() == 0:
        label = run_label(config)
        table = evaluate_occlusion.write_occlusion_results(results, workdir, label)
        visualize.occlusion_figure({label: results},
                                   os.path.join(workdir, "occlusion", "occlusion.png"))  # fmt: skip
        print(f"{eval_set.name} {eval_set.split} under occlusion ({eval_set.joints} joints, "
              f"{config.eval.protocol} protocol, {results['seconds']:.0f} s):\n{table}",
              flush=True)  # fmt: skip
    return results

"""Smoke training configs on the tiny synthetic dataset, shared by the end-to-end tests, and the
pieces the train-step tests build steps from (a cached tiny model, gradients read off SGD)."""

import functools

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmr_jax import checkpoints, models, smpl, train
from lmr_jax import config as config_lib
from lmr_jax import optim as optim_lib


def smoke_config(data_dir, model="lmr", **train_overrides):
    """The smoke variant of `model` on the tiny synthetic dataset (D = 64)."""
    config = config_lib.smoke(config_lib.base_config(model))
    config.data.data_dir = data_dir
    config.data.train.synthetic.name = "synthetic_motion/tiny"
    config.data.validation.name = "synthetic_motion/tiny"
    config.eval.name = "synthetic_motion/tiny"
    config_lib.set_hidden_size(config, 16)
    config.model.num_iterations = 2
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


SMOKE_RUN_STEPS = 3


def smoke_run_config(data_dir):
    """The config of conftest's shared `smoke_run`: checkpoints 1, 2, 3 and a validation at
    step 3."""
    return smoke_config(data_dir, num_steps=SMOKE_RUN_STEPS, eval_every=SMOKE_RUN_STEPS)


def sgd_config(data_dir, lr=1.0, **train_overrides):
    """A smoke config whose step changes the parameters by exactly -lr x gradient: plain SGD, no
    clipping, one iteration (a small program: these configs are compiled for the step tests)."""
    config = smoke_config(data_dir, **train_overrides)
    config.optim.optimizer = "sgd"
    config.optim.lr = lr
    config.optim.grad_clip = 0.0
    config.model.num_iterations = 1
    return config


def step_test_config(data_dir):
    """The config of the train-step tests (test_train_step.py, test_train_parallel.py: one
    program for both, compiled once per device count): plain SGD of lr 1 after a 10-step warmup
    (lr = step / 10, a schedule that changes every step), the plateau schedule with patience 0,
    dropout 0.3, and a non-finite step skipped."""
    config = sgd_config(data_dir, lr=1.0, nonfinite="skip")
    config.optim.schedule = "plateau"
    config.optim.warmup_steps = 10
    config.optim.plateau_patience = 0
    config.model.dropout = 0.3
    return config


def latest_params(workdir):
    mngr = ocp.CheckpointManager(f"{workdir}/checkpoints")
    return mngr.latest_step(), checkpoints.restore_params(str(workdir))


def best_params(workdir):
    """(step, params) kept in workdir/best, or (None, None) without a best checkpoint."""
    mngr = ocp.CheckpointManager(f"{workdir}/best", item_handlers=ocp.StandardCheckpointHandler())
    step = mngr.latest_step()
    if step is None:
        return None, None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), mngr.item_metadata(step)
    )
    return step, mngr.restore(step, args=ocp.args.StandardRestore(target))


@functools.lru_cache
def tiny_model(hidden_size: int, num_iterations: int, dropout: float):
    """(model, body_model): the same objects for the same fields (their jitted functions are
    cached per object)."""
    body_model = smpl.procedural(0)
    config = config_lib.base_config("lmr").model
    config.hidden_size, config.num_iterations, config.dropout = hidden_size, num_iterations, dropout
    return models.build_model(config, body_model), body_model


def step_parts(config):
    """(model, body_model, optimizer, schedule, initial state) of `config` for features D = 64."""
    model, body_model = tiny_model(
        config.model.hidden_size, config.model.num_iterations, config.model.dropout
    )
    schedule = optim_lib.learning_rate_schedule(config.optim, config.train.num_steps)
    optimizer = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    state = train.init_state(config, model, optimizer, (1, config.data.window, 64))
    return model, body_model, optimizer, schedule, state


def sgd_gradient(before, after, lr):
    """The gradient an SGD step of learning rate `lr` applied: (before - after) / lr."""
    return jax.tree.map(lambda b, a: (np.asarray(b) - np.asarray(a)) / lr, before, after)

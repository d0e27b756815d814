"""Smoke training configs on the tiny synthetic dataset, shared by the end-to-end tests."""

import orbax.checkpoint as ocp

from lmr_jax import checkpoints
from lmr_jax import config as config_lib


def smoke_config(data_dir, model="lmr", **train_overrides):
    """The smoke variant of `model` on the tiny synthetic dataset (D = 64)."""
    config = config_lib.smoke(config_lib.base_config(model))
    config.data.data_dir = data_dir
    config.data.train.synthetic.name = "synthetic_motion/tiny"
    config.data.validation.name = "synthetic_motion/tiny"
    config.eval.name = "synthetic_motion/tiny"
    config.model.hidden_size = 16
    config.model.num_iterations = 2
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def latest_params(workdir):
    mngr = ocp.CheckpointManager(f"{workdir}/checkpoints")
    return mngr.latest_step(), checkpoints.restore_params(str(workdir))

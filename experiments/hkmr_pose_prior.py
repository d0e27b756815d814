""".venv/bin/python -m lmr_jax.models.pose_prior --config=experiments/hkmr_pose_prior.py \\
    --workdir=workdirs/hkmr_pose_prior

HKMR's VAE pose prior (paper section 3.2, lmr_jax/models/pose_prior.py), trained on its own on
the body poses of the training data; the HKMR experiment reads its encoder from the workdir
for the L_KL term. MoSh's poses (the paper's) are not available: by default the prior learns
the poses of synthetic_motion's train split; add AMASS-style files with
`--config.data.pose_files=a.npz,b.npz` (or leave the datasets out with `--config.data.datasets=`).

Variants (`--config=experiments/hkmr_pose_prior.py:<variant>`):
- default: VPoser's widths (512, latent 32), Adam 1e-3, batch 256, 20k steps on
  synthetic_motion/standard.
- `cpu`: synthetic_motion/small, hidden 256, 2k steps (minutes on a 2-core CPU).
- `smoke`: synthetic_motion/small, hidden 16, 5 steps; for the tests.
"""

from lmr_jax import config as config_lib
from lmr_jax.models import pose_prior


def cpu(config):
    config.data.datasets = "synthetic_motion/small"
    config.model.hidden_size = 256
    config.optim.num_steps = 2_000
    config.log_every = 200
    return config


def smoke(config):
    config.data.datasets = "synthetic_motion/small"
    config.model.update(hidden_size=16, latent_size=4)
    config.optim.update(batch_size=16, num_steps=5)
    config.log_every = 1
    return config


VARIANTS = {"": lambda c: c, "cpu": cpu, "smoke": smoke}


def get_config(arg: str | None = None):
    return config_lib.apply_variant(pose_prior.default_config(), arg, VARIANTS)

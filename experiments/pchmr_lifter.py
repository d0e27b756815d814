""".venv/bin/python -m lmr_jax.models.lifter --config=experiments/pchmr_lifter.py \\
    --workdir=workdirs/pchmr_lifter

PC-HMR's 2D-to-3D pose lifter (stage 1; Martinez et al.'s residual MLP, lmr_jax/models/lifter.py),
trained on its own on the training split: the dataset's noisy, occluded 2D keypoints (the 14
common vibe49 joints, as a 2D detector would give them) -> the pelvis-relative h36m17 joints of
the ground-truth meshes. The calibrated evaluation (lmr_jax/calibrated.py) reads it from the
workdir.

Variants (`--config=experiments/pchmr_lifter.py:<variant>`):
- default: Martinez et al.'s widths (1024, 2 residual blocks, dropout 0.5), Adam 1e-3 decayed
  0.96 per 1k steps, batch 256, 20k steps on synthetic_motion/standard.
- `cpu`: synthetic_motion/small, hidden 512, dropout 0.1 (its 4.7k training frames of 48 videos
  overfit either way: dropout 0.5 at hidden 256 for 1.5k steps gave 105.6 mm validation MPJPE,
  this 92.7 mm, at 49 mm on the training batches), 5k steps (a few minutes on a 2-core CPU).
- `cpu_standard`: `cpu` on synthetic_motion/standard (every 2nd frame: 62k training frames of
  600 videos), 5k steps: 69.9 mm validation MPJPE (69.7 on the training batches: no longer
  overfitting, capacity- and step-bound), about 5 minutes on a loaded 2-core CPU.
- `smoke`: synthetic_motion/small, hidden 16, 5 steps; for the tests.
"""

from lmr_jax import config as config_lib
from lmr_jax.models import lifter


def cpu(config):
    config.data.name = "synthetic_motion/small"
    config.model.update(hidden_size=512, dropout=0.1)
    config.optim.update(num_steps=5_000, decay_steps=500)
    config.log_every = 500
    return config


def cpu_standard(config):
    config = cpu(config)
    config.data.name = "synthetic_motion/standard"
    config.data.stride = 2
    return config


def smoke(config):
    config.data.name = "synthetic_motion/small"
    config.data.stride = 8
    config.model.hidden_size = 16
    config.optim.update(batch_size=16, num_steps=5)
    config.log_every = 1
    return config


VARIANTS = {"": lambda c: c, "cpu": cpu, "cpu_standard": cpu_standard, "smoke": smoke}


def get_config(arg: str | None = None):
    return config_lib.apply_variant(lifter.default_config(), arg, VARIANTS)

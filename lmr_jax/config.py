"""The experiment configuration: defaults shared by every file in experiments/, and checks.

An experiment file (`experiments/<name>.py`) calls `base_config(model_name)` and changes a few
fields. Fields (all overridable on the command line as `--config.optim.lr=3e-4`):

- `seed`, `smpl_path` ('' = $LMR_JAX_SMPL_DIR, else the procedural body);
- `data`: `data_dir`, `window` (T), `train` (a dict of datasets: name, split, weight, stride),
  `eval` (name, split), `eval_max_videos`;
- `model`: see `lmr_jax.models.default_model_config`; `loss`: see `lmr_jax.losses`;
- `optim`: Adam learning rate, schedule, warmup, gradient clipping, weight decay;
- `train`: global batch size, steps, logging/eval/checkpoint periods, checkpoints kept, what a
  non-finite loss does ('stop' or 'skip');
- `eval`: protocol ('vibe' or 'tcmr') and the split evaluated after training ('' = none).

Hyperparameters follow VIBE's setting (Adam 5e-5, batch 32, T = 16) unless a file says why not.
"""

from __future__ import annotations

import ml_collections

from lmr_jax import losses, models


def dataset_config(name: str, split: str = "train", weight: float = 1.0, stride: int = 4):
    """One training dataset of a mixture (a TFDS name such as 'synthetic_motion/small')."""
    return ml_collections.ConfigDict(
        {"name": name, "split": split, "weight": weight, "stride": stride}
    )


def base_config(model_name: str = "lmr") -> ml_collections.ConfigDict:
    """Defaults for training `model_name` ('lmr', 'vibe' or 'hmr') on synthetic_motion."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.smpl_path = ""

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "data"
    c.data.window = 16
    c.data.train = ml_collections.ConfigDict(
        {"synthetic": dataset_config("synthetic_motion/standard")}
    )
    c.data.validation = ml_collections.ConfigDict(
        {"name": "synthetic_motion/standard", "split": "validation"}
    )
    c.data.eval_max_videos = 0  # 0 = all videos

    c.model = models.default_model_config(model_name)
    c.loss = losses.default_loss_config()

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5
    c.optim.schedule = "constant"  # 'constant' | 'cosine'
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 1.0  # global norm; 0 disables
    c.optim.weight_decay = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global, split over all devices of all processes
    c.train.num_steps = 15_000
    c.train.log_every = 50
    c.train.eval_every = 1_000
    c.train.checkpoint_every = 1_000
    c.train.max_to_keep = 3
    c.train.nonfinite = "stop"  # 'stop' | 'skip'

    c.eval = ml_collections.ConfigDict()
    c.eval.name = "synthetic_motion/standard"
    c.eval.split = "test"
    c.eval.protocol = "vibe"  # 'vibe' (all windows, stride T) | 'tcmr' (middle frames)
    return c


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns a config into its tiny 'smoke' variant: small model, a few steps, tiny data."""
    config.data.train = ml_collections.ConfigDict(
        {"synthetic": dataset_config("synthetic_motion/small", stride=8)}
    )
    config.data.validation.name = "synthetic_motion/small"
    config.eval.name = "synthetic_motion/small"
    config.data.eval_max_videos = 2
    config.data.window = 8
    config.model.hidden_size = 32
    config.train.batch_size = 8
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.checkpoint_every = 1
    config.optim.lr = 1e-3
    return config


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one sentence naming the first invalid field."""
    choices = {
        "optim.schedule": ("constant", "cosine"),
        "train.nonfinite": ("stop", "skip"),
        "eval.protocol": ("vibe", "tcmr"),
    }
    for path, allowed in choices.items():
        section, field = path.split(".")
        value = config[section][field]
        if value not in allowed:
            raise ValueError(f"config field {path} is {value!r}, expected one of {allowed}.")
    positive = ("train.batch_size", "train.num_steps", "data.window", "optim.lr")
    for path in positive:
        section, field = path.split(".")
        if not config[section][field] > 0:
            raise ValueError(f"config field {path} is {config[section][field]!r}, expected > 0.")
    if not config.data.train:
        raise ValueError("config field data.train is empty, expected at least one dataset.")


def cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Scales a config for a 2-core CPU: hidden 256, lr 1e-3 with cosine decay, 400 steps on
    synthetic_motion/small (what `make demo` runs); see experiments/lmr_synthetic.py."""
    config.data.train.synthetic.name = "synthetic_motion/small"
    config.data.validation.name = "synthetic_motion/small"
    config.eval.name = "synthetic_motion/small"
    config.data.eval_max_videos = 4
    config.model.hidden_size = 256
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.train.num_steps = 400
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    return config


VARIANTS = {"": lambda c: c, "cpu": cpu, "smoke": smoke}


def apply_variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the named variant of an experiment file (`--config=file.py:variant`)."""
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"unknown config variant '{arg}', expected one of {sorted(VARIANTS)}.")
    return VARIANTS[arg](config)

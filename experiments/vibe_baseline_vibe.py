"""python -m lmr_jax.main --config=experiments/vibe_baseline_vibe.py --workdir=workdirs/vibe_vibe

The VIBE-style baseline (a 2-layer GRU temporal encoder of 1024 with a residual connection, then
an HMR iterative regressor per frame) in the paper's real-data setting; data, optimiser,
schedule, losses, evaluation and the variants (default, `vibe_w_3dpw`, `smoke`) are LMR's
(experiments/lmr_vibe.py). VIBE's motion discriminator is not part of it.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.vibe_setting(config_lib.base_config("vibe"))
    return config_lib.apply_variant(config, arg, config_lib.VIBE_VARIANTS)

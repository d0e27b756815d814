"""python -m lmr_jax.main --config=experiments/vibe_baseline.py --workdir=workdirs/vibe

The VIBE-style baseline: a 2-layer GRU temporal encoder (1024) with a residual connection,
then an HMR iterative regressor per frame (3 iterations, 6D pose). Data, optimiser and the
variants (default, `cpu`, `smoke`) are the same as LMR's.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    return config_lib.apply_variant(config_lib.base_config("vibe"), arg)

"""python -m lmr_jax.main --config=experiments/hmr_framewise.py --workdir=workdirs/hmr

The per-frame HMR regressor alone (no temporal model): the image-based reference. Data,
optimiser and the variants (default, `cpu`, `smoke`) are the same as LMR's.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    return config_lib.apply_variant(config_lib.base_config("hmr"), arg)

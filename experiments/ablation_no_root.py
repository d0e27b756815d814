"""python -m lmr_jax.main --config=experiments/ablation_no_root.py --workdir=workdirs/no_root

The paper's 'LMR no root dependencies' ablation (Table 1): the five child parts do not see the
root part's output. Everything else, including the variants (default, `cpu`, `smoke`), is LMR's.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config("lmr")
    config.model.no_root_dependency = True
    return config_lib.apply_variant(config, arg)

"""lmr-train --config=experiments/ablation_no_root_vibe.py --workdir=workdirs/no_root_vibe

The paper's 'LMR no root dependencies' ablation (Table 1: the five child parts do not see the
root part's output) in the real-data setting; everything else, including the variants
(default, `vibe_w_3dpw`, `smoke`), is experiments/lmr_vibe.py.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.vibe_setting(config_lib.base_config("lmr"))
    config.model.no_root_dependency = True
    return config_lib.apply_variant(config, arg, config_lib.VIBE_VARIANTS)

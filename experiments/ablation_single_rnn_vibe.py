"""lmr-train --config=experiments/ablation_single_rnn_vibe.py --workdir=workdirs/single_rnn_vibe

The paper's 'Single RNN' ablation (Table 1: one GRU predicts all 24 joints) in the real-data
setting; everything else, including the variants (default, `vibe_w_3dpw`, `smoke`), is
experiments/lmr_vibe.py.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.vibe_setting(config_lib.base_config("lmr"))
    config.model.single_rnn = True
    return config_lib.apply_variant(config, arg, config_lib.VIBE_VARIANTS)

"""lmr-train --config=experiments/ablation_single_rnn_vibe.py --workdir=workdirs/single_rnn_vibe

The paper's 'Single RNN' ablation (Table 1: one GRU predicts all 24 joints) in the real-data
setting; everything else, including the variants (default, `vibe_w_3dpw`, `smoke`), is
experiments/lmr_vibe.py.

`matched`: the default with the one pose GRU widened until the model has LMR's parameter count
(experiments/ablation_single_rnn.py explains why; at equal width, the default, it holds a third).
"""

from lmr_jax import config as config_lib
from lmr_jax import models
from lmr_jax.data import vibe_format


def matched(config):
    """Sets the single RNN's width to the one that matches LMR's parameter count on VIBE's
    2048-d SPIN features (a constant: loading the config opens no dataset)."""
    config.model.single_rnn_hidden_size = models.matched_single_rnn_width(
        config.model, vibe_format.FEATURE_DIM
    )
    return config


VARIANTS = {**config_lib.VIBE_VARIANTS, "matched": matched}


def get_config(arg: str | None = None):
    config = config_lib.vibe_setting(config_lib.base_config("lmr"))
    config.model.single_rnn = True
    return config_lib.apply_variant(config, arg, VARIANTS)

"""python -m lmr_jax.main --config=experiments/ablation_single_rnn.py --workdir=workdirs/single

The paper's 'Single RNN' ablation (Table 1): one GRU predicts all 24 joints instead of six part
recurrences. Everything else, including the variants (default, `cpu`, `smoke`), is LMR's.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config("lmr")
    config.model.single_rnn = True
    return config_lib.apply_variant(config, arg)

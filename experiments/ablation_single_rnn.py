"""python -m lmr_jax.main --config=experiments/ablation_single_rnn.py --workdir=workdirs/single

The paper's 'Single RNN' ablation (Table 1): one GRU predicts all 24 joints instead of six part
recurrences. Everything else, including the variants (default, `cpu`, `smoke`), is LMR's.

At equal width the ablation holds a third of LMR's parameters (9.6M vs 29.6M at hidden 512,
D = 2048): LMR's six part GRUs each project the features. The capacity-matched rows widen the
one pose GRU until the whole model has LMR's parameter count (the shape and camera modules keep
LMR's width):
- `matched`: the default at matched width (model.single_rnn_hidden_size, found by
  models.matched_single_rnn_width; a few seconds of abstract tracing when the config loads);
- `cpu_matched`: the `cpu` variant at matched width;
- `bench_matched`: the `bench` variant (experiments/benchmarks/accuracy.py) at matched width.
The width is computed when the config loads; `--config.model.*` overrides apply after it and
do not recompute it (pass `--config.model.single_rnn_hidden_size` too).
"""

from lmr_jax import config as config_lib
from lmr_jax import models
from lmr_jax.data import featurize

# synthetic_motion's 'small' and 'standard' features (the datasets these variants train on);
# a constant, so that loading the config opens no dataset.
FEATURE_DIM = featurize.DEFAULT_DIM


def matched(config):
    """Sets the single RNN's width to the one that matches LMR's parameter count."""
    config.model.single_rnn_hidden_size = models.matched_single_rnn_width(config.model, FEATURE_DIM)
    return config


VARIANTS = {
    **config_lib.VARIANTS,
    "matched": matched,
    "cpu_matched": lambda c: matched(config_lib.cpu(c)),  # after cpu: it sets hidden_size
    "bench_matched": lambda c: matched(config_lib.bench(c)),
}


def get_config(arg: str | None = None):
    config = config_lib.base_config("lmr")
    config.model.single_rnn = True
    return config_lib.apply_variant(config, arg, VARIANTS)

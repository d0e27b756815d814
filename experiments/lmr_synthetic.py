""".venv/bin/python -m lmr_jax.main --config=experiments/lmr_synthetic.py --workdir=workdirs/lmr

LMR (six part recurrences conditioned on the root, V = 3 shared-weight iterations) trained on
the embedded synthetic_motion dataset (build it first: `.venv/bin/python -m lmr_jax.data.build
synthetic_motion/standard --data_dir=data`).

Variants (`--config=experiments/lmr_synthetic.py:<variant>`):
- default: VIBE's setting (Adam 5e-5, batch 32, T = 16, hidden 1024), 15k steps; a GPU run.
- `cpu`: scaled for a 2-core CPU (hidden 256, lr 1e-3 with cosine decay, 400 steps on
  synthetic_motion/small): the setting `make demo` uses. The smaller model trains in minutes
  and the higher learning rate compensates for the short schedule. The demo's runs of it
  (README.md, VIBE's protocol) gave test MPJPE 95.3 mm for LMR and 99.6 mm for the single RNN:
  one seed each, far from converged.
- `smoke`: tiny, 2 steps; used by the tests.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    return config_lib.apply_variant(config_lib.base_config("lmr"), arg)

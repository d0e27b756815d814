"""python -m lmr_jax.main --config=experiments/dsd.py:cpu --workdir=out/dsd

DSD (Sun et al., ICCV 2019, sec. 3.2; lmr_jax/models/dsd.py): the skeleton-disentangled
per-frame regressor, stage 1 of DSD-SATN. Trained with the paper's eq. 5 (losses preset
'dsd_paper': L_pm, L_3D, L_2D) plus its skeleton term L_2DJ (dsd.extra_losses, logged as
`loss_skeleton2d`). Stage 2 trains SATN on this run's DSD (experiments/satn.py):

    python -m lmr_jax.main --config=experiments/dsd.py:cpu --workdir=out/dsd
    python -m lmr_jax.main --config=experiments/satn.py:cpu --config.model.dsd_run=out/dsd \\
        --workdir=out/satn

SATN's stage 2 reads this run's latest checkpoint: its DSD fields (skeleton_hidden,
detail_width, bilinear_width, mean_params) must be the SATN config's, so train both stages
with the same variant (the `smoke` variants of both files are tiny alike).

Data, optimiser and the shared variants are LMR's (lmr_jax.config): default (the paper's
widths: skeleton 512, detail 512, bilinear 512), `cpu`, `bench` (the accuracy benchmark's,
experiments/benchmarks/accuracy.py) keep DSD's widths (DSD has no GRU: the variants' width is a
GRU width), `smoke` (tiny, 2 steps; widths 32).
"""

from lmr_jax import config as config_lib
from lmr_jax import losses

SMOKE_WIDTHS = dict(skeleton_hidden=32, detail_width=32, bilinear_width=32)


def smoke(config):
    config = config_lib.smoke(config)
    config.model.update(SMOKE_WIDTHS)
    return config


VARIANTS = {**config_lib.VARIANTS, "smoke": smoke}


def get_config(arg: str | None = None):
    config = config_lib.base_config("dsd")
    config.loss = losses.default_loss_config("dsd_paper")
    return config_lib.apply_variant(config, arg, VARIANTS)

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
widths: skeleton 512, detail 512, bilinear 512), `cpu` keeps DSD's widths (DSD has no GRU: the
variants' width is a GRU width), `bench` (the accuracy benchmark's,
experiments/benchmarks/accuracy.py) sets DSD's three widths to the benchmark's width 128
(`BENCH_WIDTHS`, as every GRU there: the bilinear map is 128 x 28 x 128), `smoke` (tiny,
2 steps; widths 32). Forward+backward at the benchmark's batch (32 x 16 frames, D = 2048),
`experiments/benchmarks/model_step.py --settings=bench --models=lmr,dsd,dsd_128,satn,satn_128`
on a shared 2-core CPU (load 4-6): DSD at 512 752 ms (9.5M parameters), at 128 176 ms (1.0M),
LMR 708 ms.
"""

from lmr_jax import config as config_lib
from lmr_jax import losses

SMOKE_WIDTHS = dict(skeleton_hidden=32, detail_width=32, bilinear_width=32)
BENCH_WIDTHS = dict(skeleton_hidden=128, detail_width=128, bilinear_width=128)


def smoke(config):
    config = config_lib.smoke(config)
    config.model.update(SMOKE_WIDTHS)
    return config


def bench(config):
    config = config_lib.bench(config)
    config.model.update(BENCH_WIDTHS)
    return config


VARIANTS = {**config_lib.VARIANTS, "bench": bench, "smoke": smoke}


def get_config(arg: str | None = None):
    config = config_lib.base_config("dsd")
    config.loss = losses.default_loss_config("dsd_paper")
    return config_lib.apply_variant(config, arg, VARIANTS)

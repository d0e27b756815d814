"""python -m lmr_jax.main --config=experiments/satn.py:cpu --config.model.dsd_run=out/dsd \
--workdir=out/satn

SATN (Sun et al., ICCV 2019, sec. 3.3; lmr_jax/models/satn.py): the self-attention temporal
network with shuffle-and-sort on a trained DSD, stage 2 of DSD-SATN. Stage 1 first:

    python -m lmr_jax.main --config=experiments/dsd.py:cpu --workdir=out/dsd
    python -m lmr_jax.main --config=experiments/satn.py:cpu --config.model.dsd_run=out/dsd \\
        --workdir=out/satn

`model.dsd_run` (a DSD --workdir): a new run's params['dsd'] are that run's latest checkpoint's
(satn.initial_params; a resumed SATN run restores its own checkpoint instead), frozen unless
`--config.model.finetune_dsd=True`; a run with other DSD fields is refused naming the field.
Without dsd_run (the default '') DSD starts from the seed, and stays random unless fine-tuned.
Loss: eq. 5 (losses preset 'dsd_paper') plus the sort term (`loss_sort`, w_sort) and, with
finetune_dsd, DSD's skeleton term (`loss_skeleton2d`).

Variants (the shared ones of lmr_jax.config; the variants' width sets SATN's tcn_width, DSD
keeps its widths so that it matches experiments/dsd.py's same variant):
- default: the paper's SATN (8 heads of 64, FFN 2048, TCN 1024);
- `cpu`: TCN 256 and FFN 512 (the paper's FFN is 4x the 512-d tokens; 1x here), stage 2 of
  experiments/dsd.py:cpu; measured on a shared 2-core CPU (load ~8) at 0.3 steps/s (DSD's
  `cpu` at 1 step/s), so its 400 steps take about 25 minutes;
- `bench` (experiments/benchmarks/accuracy.py): the benchmark's width 128 throughout: DSD's
  widths as experiments/dsd.py:bench (128), 8 heads of 16 (128-d keys and values), FFN 512,
  TCN 128, and DSD trained jointly from the seed (finetune_dsd, dsd_run ''): the benchmark's
  rows are independent runs, so SATN's row cannot start from the DSD row's run. At DSD's 512
  widths and 8 heads of 64 a step is too slow for the benchmark's budget: forward+backward at
  its batch (32 x 16 frames, D = 2048; `experiments/benchmarks/model_step.py --settings=bench
  --models=lmr,dsd,dsd_128,satn,satn_128`, a shared 2-core CPU at load 4-6) 5.7 s (16.1M
  parameters; FFN 2048, DSD frozen) against 0.93 s at these widths (1.5M), LMR 0.71 s;
- `smoke`: tiny (DSD widths 32 as experiments/dsd.py:smoke, 2 heads of 8, FFN 32, TCN 32).
"""

from lmr_jax import config as config_lib
from lmr_jax import losses

SMOKE_WIDTHS = dict(skeleton_hidden=32, detail_width=32, bilinear_width=32, num_heads=2,
                    head_dim=8, ffn_width=32)  # fmt: skip


def smoke(config):
    config = config_lib.smoke(config)
    config.model.update(SMOKE_WIDTHS)
    return config


def cpu(config):
    config = config_lib.cpu(config)
    config.model.ffn_width = 512
    return config


def bench(config):
    config = config_lib.bench(config)
    # DSD's widths as experiments/dsd.py:bench's BENCH_WIDTHS.
    config.model.update(skeleton_hidden=128, detail_width=128, bilinear_width=128, head_dim=16,
                        ffn_width=512, finetune_dsd=True, dsd_run="")  # fmt: skip
    return config


VARIANTS = {**config_lib.VARIANTS, "cpu": cpu, "bench": bench, "smoke": smoke}


def get_config(arg: str | None = None):
    config = config_lib.base_config("satn")
    config.loss = losses.default_loss_config("dsd_paper")
    return config_lib.apply_variant(config, arg, VARIANTS)

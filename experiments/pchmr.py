"""python -m lmr_jax.main --config=experiments/pchmr.py:cpu --config.model.base_run=out/hmr \
--config.model.lifter_run=out/lifter --workdir=out/pchmr

PC-HMR (Luan et al., AAAI 2021; lmr_jax/models/pchmr.py), stage 2: a trained regressor run, the
stage-1 pose lifter and the pose calibration fine-tuned end to end with the lifter's 3D pose
loss (`loss_lift`) and the calibrated mesh's vertex loss (`loss_vertex`), beside the shared
terms. The stages:

    python -m lmr_jax.main --config=experiments/hmr_framewise.py:cpu --workdir=out/hmr
    python -m lmr_jax.models.lifter --config=experiments/pchmr_lifter.py:cpu --workdir=out/lifter
    python -m lmr_jax.main --config=experiments/pchmr.py:cpu --config.model.base_run=out/hmr \\
        --config.model.lifter_run=out/lifter --workdir=out/pchmr

Any regressor run is a base (hmr_framewise, vibe_baseline, lmr_synthetic, hkmr, ...), on the
dataset it was trained on (this file's data are the shared defaults: keep them the base's).
The evaluation after training scores the calibrated mesh; `python -m lmr_jax.calibrated_eval
--run=out/pchmr ...` puts it beside the uncalibrated one, and `lmr-predict --workdir=out/pchmr`
(or `--workdir=out/hmr --calibration=out/pchmr`) writes the calibrated mesh of a serial run.

Learning rates: optim.lr = 1e-3 is the calibration module's, the base and the lifter move at
model.base_lr_scale = 0.01 of it (1e-5), the paper's (sec. 4).

Variants (each also as `cpu_<name>` and `smoke_<name>`):
- default: serial PC-HMR (the lifter reads the base's own projected joints), the shared
  training defaults; `cpu`: synthetic_motion/small, 400 steps, cosine decay (lmr_jax.config.cpu)
  at lr 1e-3; `smoke`: the tests' tiny run (2 steps);
- `parallel`: the lifter reads the video's observed 2D keypoints (kp2d; evaluation passes
  them too);
- the paper's Table 3 (on the parallel framework, as the paper's study):
  `no_nonrigid` (W = 0, "w/o Non-Rigid"); `no_finetune` ("w/o Fine-Tune": the base regressor
  is not fine-tuned, model.freeze_base, so only the calibration's W, A and the lifter learn;
  the row with nothing fine-tuned at all, W0 / A0 and the stage-1 lifter, is what
  `python -m lmr_jax.calibrated_eval --base=... --lifter=...` reports, without training);
  `template` ("PC-Template": the template mesh calibrated instead of the regressed one);
  `gt_target` ("GT 3D Pose": the ground-truth mesh's joints as the target, no lifter; the
  upper bound).

Measured (a short pipeline on a 2-core CPU shared with a benchmark, private data dir D): the
base `hmr_framewise.py:cpu` with --config.train.num_steps=200, the lifter
`pchmr_lifter.py:cpu` with --config.optim.num_steps=2000 (93.9 mm validation MPJPE), each
variant `cpu_<name>` with --config.train.num_steps=100 (about 0.6 steps/s), then
`python -m lmr_jax.calibrated_eval --run=RUN --dataset=synthetic_motion/small --split=test`
(h36m14 joints regressed from each mesh, mm, 1,120 frames; "base" is the run's own base,
fine-tuned unless frozen; the untrained rows are `calibrated_eval --base --lifter`):

| synthetic_motion/small test    | base PVE | calibrated MPJPE | PA-MPJPE |   PVE |
|--------------------------------|---------:|-----------------:|---------:|------:|
| untrained W0, A0, serial       |    132.8 |            126.9 |     75.5 | 128.1 |
| untrained W0, A0, parallel     |    132.8 |            109.5 |     69.7 | 116.3 |
| untrained W0, A0, GT 3D pose   |    132.8 |             35.8 |     19.1 |  65.3 |
| serial (default)               |    135.8 |            113.1 |     71.0 | 115.7 |
| parallel                       |    168.3 |            107.0 |     68.3 | 110.1 |
| no_finetune (base frozen)      |    132.8 |            106.3 |     68.3 | 114.1 |
| no_nonrigid                    |    168.4 |            106.9 |     68.2 | 110.0 |
| template                       |    174.2 |            107.4 |     68.5 | 133.9 |
| gt_target                      |    164.7 |             36.4 |     19.4 |  56.4 |

After 100 steps the fine-tuned calibration beats the untrained one in every form (PVE 116.3
-> 110.1 parallel), the template is worse than the regressed mesh (133.9 vs 110.1, as the
paper's PC-Template), and W = 0 is on par here (110.0). The fine-tuned base's own uncalibrated
mesh drifts (PVE 132.8 -> 168.3 in the parallel run): the loss sees it only through the
calibration, whose target comes from the keypoints; the frozen base keeps it exactly.
"""

from lmr_jax import config as config_lib

LR = 1e-3  # the calibration module's (the paper); the rest at model.base_lr_scale x LR

ABLATIONS = {
    "parallel": dict(target="parallel"),
    "no_nonrigid": dict(target="parallel", nonrigid=False),
    "no_finetune": dict(target="parallel", freeze_base=True),
    "template": dict(target="parallel", template=True),
    "gt_target": dict(target="gt"),
}


def _with_lr(variant):
    def apply(config):
        config = variant(config)
        config.optim.lr = LR
        return config

    return apply


BASES = {"": lambda c: c, "cpu": _with_lr(config_lib.cpu), "smoke": _with_lr(config_lib.smoke)}


VARIANTS = config_lib.model_variants(BASES, ABLATIONS)


def get_config(arg: str | None = None):
    config = config_lib.base_config("pchmr")
    config.optim.lr = LR
    return config_lib.apply_variant(config, arg, VARIANTS)

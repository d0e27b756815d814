"""python -m lmr_jax.main --config=experiments/lmr_vibe.py --workdir=workdirs/lmr_vibe

LMR in the paper's real-data setting, "exactly the same settings as" VIBE
(`lmr_jax.config.vibe_setting`): windows of T = 16 of SPIN features from InstaVariety,
PoseTrack and PennAction (60% of each batch) and 3DPW, MPI-INF-3DHP and Human3.6M (40%), Adam
5e-5, batch 32, 30 epochs of 500 iterations, the learning rate times 0.1 when the validation
PA-MPJPE (3DPW, 14 joints through J_regressor_h36m, once per epoch) has not improved for more
than 5 epochs, VIBE's loss weights on squared errors; then evaluation on 3DPW test. Build the
datasets first and import VIBE's regressors (BUILD.md, "Real datasets (VIBE format)"); pass
the real SMPL model with `--smpl_path=DIR` and VIBE's mean parameters with
`--config.model.mean_params=DIR/smpl_mean_params.npz`.

Variants (`--config=experiments/lmr_vibe.py:<variant>`):
- default: the six datasets the paper names; a GPU run (no `cpu` variant: these numbers need
  the whole schedule on real features).
- `vibe_w_3dpw`: the mixture of VIBE's released configs/config_w_3dpw.yaml (InstaVariety;
  3DPW, MPI-INF-3DHP).
- `smoke`: tiny, 2 steps on 3DPW + PennAction with a validation after each; used by the tests.

Evaluate other test sets afterwards with `--mode=eval --config.eval.sets=mpi_inf_3dhp,human36m`.
"""

from lmr_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.vibe_setting(config_lib.base_config("lmr"))
    return config_lib.apply_variant(config, arg, config_lib.VIBE_VARIANTS)

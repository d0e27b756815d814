"""python -m lmr_jax.main --config=experiments/hkmr.py --config.model.pose_prior=P --workdir=W

HKMR (Georgakis et al., ECCV 2020; lmr_jax/models/hkmr.py): the per-frame hierarchical
kinematic regressor trained with the paper's eq. 3, summed over the T = 3 outer iterations:
L_smpl, L_3D, L_2D (losses preset 'hkmr_paper', lmr_jax/losses.py) and L_KL to a VAE pose prior
(model.pose_prior, model.kl_weight; hkmr.extra_losses). The prior is trained first, on its own:

    python -m lmr_jax.models.pose_prior --config=experiments/hkmr_pose_prior.py:cpu \\
        --workdir=out/prior
    python -m lmr_jax.main --config=experiments/hkmr.py:cpu --config.model.pose_prior=out/prior \\
        --workdir=out/hkmr

Without `--config.model.pose_prior` (the default '') the run has no L_KL term; a path that holds
no prior is refused when the config is checked.

Data, optimiser and the shared variants are LMR's (lmr_jax.config):
- default: the paper's model (d = 160, T = 3 outer, P = 4 inner iterations), VIBE's setting;
- `cpu`, `bench` (the accuracy benchmark's: experiments/benchmarks/accuracy.py, which trains
  it without a prior, so its HKMR row has no L_KL), `smoke` (tiny, 2 steps; also d = 32).
  psi's width d stays 160 in `cpu` and `bench`: it is the paper's parameter budget, not a GRU
  width (the variants' 256 / 128 are GRU widths; HMR's regressor keeps its width too).
Ablations (paper Tables 2-3), each also as `cpu_<name>`, `bench_<name>`, `smoke_<name>`:
- `no_hierarchy` (model.hierarchy=False), `previous_only`, `forward_only` (no backward pass);
- `outer1`..`outer4` (T outer iterations), `inner1`..`inner4` (P inner iterations).
"""

from lmr_jax import config as config_lib
from lmr_jax import losses

ABLATIONS = {
    "no_hierarchy": dict(hierarchy=False),
    "previous_only": dict(previous_only=True),
    "forward_only": dict(backward_pass=False),
    **{f"outer{t}": dict(num_iterations=t) for t in range(1, 5)},
    **{f"inner{p}": dict(inner_iterations=p) for p in range(1, 5)},
}


def smoke(config):
    config = config_lib.smoke(config)
    config.model.hidden_size = 32
    return config


BASES = {**config_lib.VARIANTS, "smoke": smoke}


VARIANTS = config_lib.model_variants(BASES, ABLATIONS)


def get_config(arg: str | None = None):
    config = config_lib.base_config("hkmr")
    config.loss = losses.default_loss_config("hkmr_paper")
    return config_lib.apply_variant(config, arg, VARIANTS)

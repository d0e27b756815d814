"""The encoder half of HKMR's pose prior and its checkpoint reader: what L_KL needs.

HKMR's loss (models/hkmr.py `extra_losses`) reads the encoder of a prior trained by
models/pose_prior.py (the VAE, its training data, its command line); this module holds only the
encoder, the KL to N(0, I) and `load_pose_prior`, so that the model imports no training code
(pose_prior.py re-exports every name here).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lmr_jax.models import saved

POSE_DIM = 69  # joints 1..23, axis-angle


class PoseEncoder(nn.Module):
    """[..., 69] pose -> (mu [..., L], log_var [..., L]) of q(z | pose)."""

    hidden_size: int = 512
    num_layers: int = 2
    latent_size: int = 32

    @nn.compact
    def __call__(self, pose69: jnp.ndarray):
        x = pose69
        for i in range(self.num_layers):
            x = nn.leaky_relu(nn.Dense(self.hidden_size, name=f"hidden_{i}")(x), 0.2)
        return nn.Dense(self.latent_size, name="mu")(x), nn.Dense(self.latent_size, name="log_var")(
            x
        )


def gaussian_kl(mu: jnp.ndarray, log_var: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) = 0.5 sum(exp(lv) + mu^2 - 1 - lv): [...]."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mu) - 1.0 - log_var, axis=-1)


def _encoder_for(encoder_params) -> PoseEncoder:
    """The encoder whose widths the parameters have (so `kl_to_prior` needs no config)."""
    layers = sum(1 for name in encoder_params if name.startswith("hidden_"))
    return PoseEncoder(
        hidden_size=int(encoder_params["hidden_0"]["kernel"].shape[-1]),
        num_layers=layers,
        latent_size=int(encoder_params["mu"]["kernel"].shape[-1]),
    )


def kl_to_prior(encoder_params, pose69: jnp.ndarray) -> jnp.ndarray:
    """HKMR's L_KL: KL(q(z | pose) || N(0, I)) of the prior's encoder, differentiable in pose.

    Args:
      encoder_params: the 'encoder' parameters of a trained prior (`load_pose_prior`).
      pose69: [..., 69] body poses (axis-angle of joints 1..23).

    Returns:
      [...] the KL of every pose.
    """
    mu, log_var = _encoder_for(encoder_params).apply({"params": encoder_params}, pose69)
    return gaussian_kl(mu, log_var)


@dataclasses.dataclass(frozen=True)
class PosePrior:
    """A trained prior: params {'encoder', 'decoder'} and the model widths."""

    params: Any
    model: ml_collections.ConfigDict

    def kl(self, pose69: jnp.ndarray) -> jnp.ndarray:
        """[..., 69] -> [...] KL(q(z | pose) || N(0, I)) (`kl_to_prior`)."""
        return kl_to_prior(self.params["encoder"], pose69)


def prior_dir(workdir: str) -> str:
    """WORKDIR/pose_prior, where `train_pose_prior` saves the prior."""
    return os.path.join(os.path.abspath(workdir), "pose_prior")


def has_pose_prior(workdir: str) -> bool:
    """Whether `workdir` holds a saved prior (its config.json and params folder)."""
    return saved.holds_saved(prior_dir(workdir))


def load_pose_prior(workdir: str) -> PosePrior:
    """Reads the prior `train_pose_prior` saved in `workdir`.

    Raises:
      ValueError: naming the folder when it holds no pose prior.
    """
    params, model = saved.load(prior_dir(workdir), workdir, "pose prior",
                               "lmr_jax.models.pose_prior")  # fmt: skip
    return PosePrior(params=params, model=model)

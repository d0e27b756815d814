"""HKMR's pose prior: a VAE over SMPL's 69-D body pose, and the KL term L_KL (paper section 3.2).

The VAE (after Pavlakos et al.'s VPoser, the paper's [43]) encodes the axis-angle of joints
1..23 (no global orientation) to a Gaussian posterior q(z | pose) = N(mu, diag(exp(log_var)))
and decodes a sample (re-parameterisation) back to the 69 numbers. It is trained on its own,
maximising the ELBO; HKMR keeps only the encoder and pushes every outer iteration's predicted
pose towards the prior with L_KL^t = KL(q(z | Theta^t) || N(0, I)) (`kl_to_prior`).

Choices where the paper is silent (it trains on MoSh's ~6M poses, which we do not have):

- Data: the poses of the training datasets (synthetic_motion's train split by default, frames
  with SMPL labels) and any AMASS-style .npz the user gives (`poses` [N, 72] SMPL, or wider
  SMPL-H/SMPL-X rows, of which the 21 body joints are kept and the two SMPL hand joints are
  zero, as the body joints 1..21 are all such files share with SMPL).
- Encoder and decoder: two dense layers of 512 with leaky ReLU (slope 0.2) each, a 32-D
  latent (VPoser's width and latent size), separate linear mu and log_var heads; no batch
  norm or dropout, so the encoder is a pure function of its parameters.
- Loss (the negative ELBO per pose): squared error of the decoded axis-angle (a unit-variance
  Gaussian likelihood up to constants), plus `kl_weight` (0.005, VPoser's) times the KL.
- Optimiser: Adam, lr 1e-3, batch 256, minibatches drawn with replacement from a seeded numpy
  generator.

The encoder, `kl_to_prior` and `load_pose_prior` live in models/pose_encoder.py (what HKMR's loss
imports: no training code, no command line) and are re-exported here.

The checkpoint (`train_pose_prior`, `load_pose_prior`) is a folder `WORKDIR/pose_prior` with
the Orbax-saved parameters {'encoder', 'decoder'} and `config.json` (the model widths).

Run: `python -m lmr_jax.models.pose_prior --config=experiments/hkmr_pose_prior.py:cpu
--workdir=workdirs/hkmr_pose_prior`.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lmr_jax.models import saved
from lmr_jax.models.pose_encoder import (  # noqa: F401  (re-exported: the prior's API)
    POSE_DIM,
    PoseEncoder,
    PosePrior,
    gaussian_kl,
    has_pose_prior,
    kl_to_prior,
    load_pose_prior,
    prior_dir,
)

_BODY_JOINTS = 21  # the body joints every SMPL-family pose file shares (1..21)


class PoseDecoder(nn.Module):
    """[..., L] latent -> [..., 69] pose."""

    hidden_size: int = 512
    num_layers: int = 2

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        x = z
        for i in range(self.num_layers):
            x = nn.leaky_relu(nn.Dense(self.hidden_size, name=f"hidden_{i}")(x), 0.2)
        return nn.Dense(POSE_DIM, name="pose")(x)


class PoseVAE(nn.Module):
    """Encoder and decoder; __call__ reconstructs a pose from one posterior sample."""

    hidden_size: int = 512
    num_layers: int = 2
    latent_size: int = 32

    def setup(self):
        self.encoder = PoseEncoder(self.hidden_size, self.num_layers, self.latent_size)
        self.decoder = PoseDecoder(self.hidden_size, self.num_layers)

    def __call__(self, pose69: jnp.ndarray, rng: jax.Array):
        """[..., 69] poses -> (reconstruction [..., 69], mu [..., L], log_var [..., L])."""
        mu, log_var = self.encoder(pose69)
        z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mu.shape)
        return self.decoder(z), mu, log_var


def negative_elbo(model: PoseVAE, params, pose69: jnp.ndarray, rng: jax.Array, kl_weight: float):
    """The training loss: mean over poses of |pose - decoded|^2 + kl_weight * KL.

    Returns:
      (loss, {'loss', 'reconstruction', 'kl'} means).
    """
    decoded, mu, log_var = model.apply({"params": params}, pose69, rng)
    reconstruction = jnp.mean(jnp.sum(jnp.square(decoded - pose69), axis=-1))
    kl = jnp.mean(gaussian_kl(mu, log_var))
    loss = reconstruction + kl_weight * kl
    return loss, {"loss": loss, "reconstruction": reconstruction, "kl": kl}


# ---------------------------------------------------------------------------------------------
# Training poses
# ---------------------------------------------------------------------------------------------


def validate_poses(poses: Any, source: str) -> np.ndarray:
    """Checks training poses: a finite float array [N >= 1, 69]; returns it as float32."""
    array = np.asarray(poses)
    if array.ndim != 2 or array.shape[1] != POSE_DIM or array.shape[0] < 1:
        raise ValueError(f"poses from {source} have shape {array.shape}, expected [N >= 1, "
                         f"{POSE_DIM}] (axis-angle of joints 1..23).")  # fmt: skip
    if not np.all(np.isfinite(array)):
        raise ValueError(f"poses from {source} hold NaN or infinite values, expected finite "
                         "axis-angle numbers.")  # fmt: skip
    return array.astype(np.float32)


def poses_from_file(path: str) -> np.ndarray:
    """The 69-D body poses of an AMASS-style .npz (`poses` [N, 72] SMPL or [N, > 72] SMPL-H /
    SMPL-X: then joints 1..21 and zero hands, see the module docstring).

    Raises:
      ValueError: naming the file and what is wrong with it.
    """
    if not os.path.isfile(path):
        raise ValueError(f"pose file '{path}' does not exist (expected an .npz with a 'poses' "
                         "array [N, >= 72]).")  # fmt: skip
    try:
        with np.load(path) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except Exception as error:  # not an .npz, truncated, pickled objects
        raise ValueError(f"could not read pose file '{path}' ({error}); expected an .npz with "
                         "a 'poses' array [N, >= 72].") from None  # fmt: skip
    if "poses" not in arrays:
        raise ValueError(f"pose file '{path}' has no 'poses' array (keys: {sorted(arrays)}), "
                         "expected poses [N, >= 72].")  # fmt: skip
    poses = arrays["poses"]
    if poses.ndim != 2 or poses.shape[1] < 72 or not np.issubdtype(poses.dtype, np.number):
        raise ValueError(f"pose file '{path}': 'poses' has shape {poses.shape} and dtype "
                         f"{poses.dtype}, expected numbers [N, >= 72].")  # fmt: skip
    if poses.shape[1] == 72:
        body = poses[:, 3:72]
    else:
        hands = np.zeros((len(poses), POSE_DIM - 3 * _BODY_JOINTS), poses.dtype)
        body = np.concatenate([poses[:, 3 : 3 + 3 * _BODY_JOINTS], hands], axis=1)
    return validate_poses(body, f"'{path}'")


def poses_from_dataset(name: str, split: str, data_dir: str, stride: int = 1) -> np.ndarray:
    """The 69-D body poses of every frame with SMPL labels of a dataset split (`pose` [N, 72]
    of each video, the first 3 numbers dropped), every `stride`-th frame.

    Raises:
      lmr_jax.data.schema.DatasetError: the dataset cannot be opened.
    """
    from lmr_jax.data import pipeline  # models do not depend on data: only this reader does

    source = pipeline.open_dataset(pipeline.DatasetSpec(name, split, data_dir=data_dir or None))
    poses = []
    for index in range(len(source.data_source)):
        video = source.read(index)
        labelled = np.asarray(video["has_smpl"]) > 0
        poses.append(np.asarray(video["pose"])[labelled][::stride, 3:72])
    return validate_poses(np.concatenate(poses), f"dataset '{name}:{split}'")


def collect_poses(data: ml_collections.ConfigDict) -> np.ndarray:
    """All training poses a config's `data` names: its datasets and its pose files."""
    poses = [
        poses_from_dataset(name.strip(), data.split, data.data_dir, int(data.stride))
        for name in data.datasets.split(",")
        if name.strip()
    ]
    poses += [poses_from_file(path.strip()) for path in data.pose_files.split(",") if path.strip()]
    if not poses:
        raise ValueError("config fields data.datasets and data.pose_files are both empty, "
                         "expected at least one source of poses.")  # fmt: skip
    return np.concatenate(poses)


# ---------------------------------------------------------------------------------------------
# Training, checkpoint
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """The prior's experiment fields (experiments/hkmr_pose_prior.py changes a few)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "data"
    c.data.datasets = "synthetic_motion/standard"  # TFDS names, comma-separated ('' = none)
    c.data.split = "train"
    c.data.stride = 1  # every stride-th labelled frame
    c.data.pose_files = ""  # AMASS-style .npz files, comma-separated
    c.model = ml_collections.ConfigDict({"hidden_size": 512, "num_layers": 2, "latent_size": 32})
    c.kl_weight = 0.005
    c.optim = ml_collections.ConfigDict({"lr": 1e-3, "batch_size": 256, "num_steps": 20_000})
    c.log_every = 1_000
    return c


def train_pose_prior(
    poses: np.ndarray, config: ml_collections.ConfigDict, workdir: str
) -> tuple[PosePrior, list[dict]]:
    """Trains the VAE on `poses` and saves it to WORKDIR/pose_prior.

    Args:
      poses: [N, 69] training poses.
      config: fields of `default_config` (model, kl_weight, optim, seed, log_every).
      workdir: where the checkpoint goes (an existing one is replaced).

    Returns:
      (the trained PosePrior, the metrics of every step as floats).
    """
    poses = validate_poses(poses, "the training set")
    model = PoseVAE(**config.model.to_dict())
    base = jax.random.key(config.seed)
    init = jax.jit(model.init)  # one compiled program: eager init is slower on CPU
    params = init(jax.random.fold_in(base, 0), poses[:1], jax.random.fold_in(base, 1))["params"]
    optimizer = optax.adam(config.optim.lr)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, batch, step):
        rng = jax.random.fold_in(jax.random.fold_in(base, 2), step)
        grads, metrics = jax.grad(
            lambda p: negative_elbo(model, p, batch, rng, config.kl_weight), has_aux=True
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    sampler = np.random.default_rng(config.seed)
    history = []
    for step in range(int(config.optim.num_steps)):
        batch = poses[sampler.integers(0, len(poses), int(config.optim.batch_size))]
        params, opt_state, metrics = train_step(params, opt_state, batch, step)
        history.append(metrics)
        if config.log_every and (step + 1) % config.log_every == 0:
            logging.info("pose prior step %d: %s", step + 1,
                         {k: round(float(v), 4) for k, v in metrics.items()})  # fmt: skip
    history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
    prior = PosePrior(params=jax.device_get(params), model=config.model)
    save_pose_prior(prior, workdir)
    return prior, history


def save_pose_prior(prior: PosePrior, workdir: str) -> None:
    """Writes WORKDIR/pose_prior/{params (Orbax), config.json}, replacing an earlier one."""
    saved.save(prior_dir(workdir), prior.params, prior.model)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from lmr_jax.cli import fail, quiet_logs
    from lmr_jax.data.schema import DatasetError

    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiments/hkmr_pose_prior.py[:variant]", lock_config=True
    )
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where the prior's checkpoint goes.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        quiet_logs()
        try:
            poses = collect_poses(_CONFIG.value.data)
            print(f"pose prior: {len(poses)} training poses")
            _, history = train_pose_prior(poses, _CONFIG.value, _WORKDIR.value)
        except (ValueError, DatasetError) as error:
            fail(str(error))
        last = history[-1] if history else {}
        print(f"pose prior saved to {prior_dir(_WORKDIR.value)}; last step: "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))  # fmt: skip

    app.run(main)

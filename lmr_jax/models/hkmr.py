"""HKMR: hierarchical kinematic human mesh recovery (Georgakis et al., ECCV 2020, section 3).

A per-frame regressor (frames of [B, T, D] features are independent). Pose is axis-angle, as
in the paper (12 numbers for the 4-joint root chain), and starts at the mean pose of
params.MeanParams (converted from 6D); it becomes rotation matrices only for smpl_outputs.

One outer iteration t (T = `num_iterations`, default 3, the paper's best):

1. the root chain (pelvis, spine1, spine2, spine3) refines theta_root from [phi, beta, theta_root];
2. the five child chains (head, arms, legs) refine their theta_c from [phi, beta, theta_c,
   theta_root (the root's estimate of step 1)], as ONE stacked computation: every parameter
   has a leading axis of 5 and every chain is padded to the longest one (5 joints, the arms)
   with a mask, so padded joints never change and never feed a real one;
3. the shape network refines beta from [phi, Theta, beta];
4. the camera network predicts the camera from [phi, Theta, beta].

Each chain's refinement is P = `inner_iterations` inner iterations (default 4). One inner
iteration is one forward-backward cycle of Fig. 4 (how we read the paper's "4 inner": four
cycles, i.e. eight residual updates of theta_c, each followed by a new embedding; the paper calls
the forward pass step p and the backward pass step p + 1 of the same cycle):

- psi = E_c([phi, beta, (theta_root,) theta_c]);
- forward (eq. 1): joint i = 0..K_c-1 in kinematic order predicts its residual
  f_i([psi, d_{i-1}, ..., d_0]), the first one from [psi, 0]; theta_c += d;
- psi = E_c(...) again, from the updated theta_c;
- backward (eq. 2): from the chain's last joint K_c-1 down to 0, b_s([psi, d'_{s-1}, ..., d'_0])
  where d'_0 is the last joint's residual (from [psi, 0]), d'_1 the one before it, and so on;
  theta_c += d'. With padding, the "last joint" is each chain's own last real joint: step s
  of chain c is joint K_c-1-s, and the steps s >= K_c are the padding.

Every outer iteration's parameters are returned (eq. 3 sums the losses over them; the losses
read `outputs['iterations']` as for LMR's iterations: losses preset 'hkmr_paper'). L_KL is
HKMR's own term (`extra_losses`, added to the shared terms by the training objective through
models.extra_losses): for every outer iteration t, the 69-D body pose
`geometry.rotmats_to_pose72(outputs['iterations']['rotmats'])[..., 3:]`, its KL to the prior
(pose_prior.kl_to_prior of the encoder of the prior trained into the workdir `pose_prior`),
averaged over the real frames and summed over t, times `kl_weight`; logged as `loss_kl`
(weighted). The encoder's parameters are read once per process and path, as numpy constants of
the train step: they are not in the trained parameters or the optimizer state and take no
gradient. `pose_prior=''` (the default) trains without L_KL. `kl_weight` = 0.01: the paper
names lambda_KL but gives no value; the KL of one pose under a prior with a 32-D latent is of
order 10-100 nats, so 0.01 keeps the term (summed over T = 3) near 1, a regulariser below the
keypoint terms (tens with 'hkmr_paper''s weights) rather than their rival.

The chains' modules (`JointPass`, `ChainRegressor`) and index tables live in
models/hkmr_chain.py; this file holds the hierarchy, the config and L_KL.

Speed: phi's part of every embedding is projected once per forward; the five child chains are
one stacked computation; the P inner iterations are one `nn.scan` (one compiled cycle, weights
broadcast), so the compiled graph does not grow with P; the joints of a pass are a Python loop
(M <= 5 small matmuls) and the T outer iterations too (T <= 4).

Ablations (paper Table 2, Table 3): `hierarchy=False` predicts all joints of a chain at once
from psi (one layer per pass, no joint sees another's residual; the issue's reading of
"no joint hierarchy"); `previous_only` keeps the joint order but feeds each joint only the
residual of the joint just before it (the paper's own wording of that column: "each joint
prediction is dependent on just the immediately preceding joint"); `backward_pass=False`
makes an inner iteration a forward pass only; `num_iterations` and `inner_iterations` sweep
Table 3. The discriminator pose prior of Table 2 is not implemented (the VAE prior is in
models/pose_prior.py).

Choices where the paper is silent:

- E_c is one dense layer with ReLU on [phi, beta, (theta_root,) theta_c] to psi of
  `hidden_size` = 160 numbers (d); phi's part of it is projected once per forward and reused
  by all 2P embeddings of all T outer iterations (layers.FeedForward, DESIGN.md section 6).
- f_i and b_s are one dense layer each (as the paper says) on [psi, the previous residuals
  zero-padded to K-1 slots, most recent first], outputting 3 numbers; their kernels start
  Xavier-uniform with gain 0.01 (HMR's `decpose`, layers.head_init 'small') so the first
  estimates stay near the mean pose.
- Every chain's update is a residual (the paper's theta_{i,p} = theta_{i,p-1} + d), starting
  at theta^{t-1}.
- The shape network is one ReLU layer of `hidden_size` and a small-init linear head; beta
  is a residual update (HMR's iterative feedback; the paper gives its inputs only).
- The camera network is the same on [phi, Theta^t, beta^t] (the paper's inputs, no previous
  camera): cam^t = cam^0 + g(...), a prediction relative to the initial camera.
- Dropout (`dropout`, default 0 as in LMR) on psi and on the two hidden layers.
- Shared by all frames and all outer iterations: the weights (iterative error feedback, as HMR).
- Loss weights and the optimiser are the training config's (the loss wiring is separate).
- d = 160 gives the paper's parameter budget: on D = 2048 features the regressor holds 2.71M
  parameters, the paper's 26.2M less its ResNet-50's 23.5M (HMR's regressor here: 3.47M, the
  paper's 26.8M less 23.5M). A wider psi (256: 4.34M) is a config change.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import geometry, losses
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common
from lmr_jax.models import pose_encoder as pose_prior  # the prior's encoder half
from lmr_jax.models.hkmr_chain import ChainRegressor, PartTable, chain_tables
from lmr_jax.models.layers import FeedForward, StackedDense, head_init
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams, smpl_outputs

# psi's width d (model.hidden_size) is the paper's parameter budget, not a GRU width: the
# shared variants (config.set_hidden_size) leave it alone, as they leave HMR's regressor.
VARIANT_WIDTH_FIELD = None
DEFAULT_PARTS: PartTable = tuple(smpl_lib.PARTS.items())


class HKMRRegressor(nn.Module):
    """The hierarchical kinematic regressor (see the module docstring), without the body model.

    Attributes:
      mean_params: the starting point (its 6D pose is converted to axis-angle).
      hidden_size: d of every psi and the width of the shape and camera hidden layers.
      num_iterations: T.
      inner_iterations: P forward-backward cycles per chain and outer iteration.
      hierarchy, previous_only, backward_pass: the ablations.
      dropout: on psi and the hidden layers (training only).
      parts: the chain table, root first, each chain in kinematic order.
      head_init: 'small' or 'zeros'.
      dtype: compute dtype of the matmuls.
    """

    mean_params: MeanParams = MeanParams()
    hidden_size: int = 160
    num_iterations: int = 3
    inner_iterations: int = 4
    hierarchy: bool = True
    previous_only: bool = False
    backward_pass: bool = True
    dropout: float = 0.0
    parts: PartTable = DEFAULT_PARTS
    head_init: str = "small"
    dtype: Any = jnp.float32

    def _chains(self, lengths, fan_in, name):
        return ChainRegressor(
            lengths=tuple(lengths), embed_size=self.hidden_size, fan_in=fan_in,
            inner_iterations=self.inner_iterations, hierarchy=self.hierarchy,
            previous_only=self.previous_only, backward_pass=self.backward_pass,
            dropout=self.dropout, head_init=self.head_init, dtype=self.dtype, name=name,
        )  # fmt: skip

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False):
        """Regresses SMPL parameters per frame.

        Args:
          features: [..., D] one feature vector per frame.
          train: enables dropout (needs a 'dropout' RNG).

        Returns:
          (pose [T, ..., 24, 3] axis-angle, betas [T, ..., 10], cam [T, ..., 3]), every outer
          iteration.
        """
        tables = chain_tables(self.parts)
        root_ids, child_index = tables["root"], tables["child_index"]
        num_children, width = child_index.shape
        dim = features.shape[-1]
        root_net = self._chains([len(root_ids)], dim + NUM_BETAS + 3 * len(root_ids), "root")
        child_fan_in = dim + NUM_BETAS + 3 * len(root_ids) + 3 * width
        child_net = self._chains(tables["child_lengths"], child_fan_in, "children")
        body_fan_in = dim + 3 * NUM_JOINTS + NUM_BETAS
        shape_net = FeedForward(self.hidden_size, fan_in=body_fan_in, dropout=self.dropout,
                                dtype=self.dtype, name="shape")  # fmt: skip
        camera_net = FeedForward(self.hidden_size, fan_in=body_fan_in, dropout=self.dropout,
                                 dtype=self.dtype, name="camera")  # fmt: skip
        head = functools.partial(StackedDense, kernel_init=head_init(self.head_init),
                                 dtype=self.dtype)  # fmt: skip
        shape_head, camera_head = head(NUM_BETAS, name="shape_head"), head(3, name="camera_head")

        # phi's projections, once per forward for all T x 2P embeddings (DESIGN.md section 6).
        root_static = root_net.project_static(features)
        child_static = child_net.project_static(features)
        shape_static = shape_net.project_static(features)
        camera_static = camera_net.project_static(features)

        batch = features.shape[:-1]
        pose6d, shape, cam0 = self.mean_params.initial(batch)
        pose = geometry.matrix_to_axis_angle(geometry.rot6d_to_matrix(pose6d))  # [*, 24, 3]
        child_mask = tables["child_mask"].reshape(num_children, *([1] * len(batch)), width, 1)
        child_rows = np.flatnonzero(tables["child_mask"])  # real rows of the C * M padded ones
        child_joints = child_index.reshape(-1)[child_rows]
        history = []
        for _ in range(self.num_iterations):
            root = root_net(root_static, pose[None, ..., root_ids, :], shape[None], train=train)
            pose = pose.at[..., root_ids, :].set(root[0])
            # Children: [beta, theta_root (just updated)] + their own joints, stacked first.
            own = jnp.moveaxis(pose[..., child_index, :], -3, 0) * child_mask
            condition = jnp.concatenate([shape, root[0].reshape(*batch, -1)], axis=-1)
            condition = jnp.broadcast_to(condition, (num_children, *condition.shape))
            own = child_net(child_static, own, condition, train=train)
            rows = jnp.moveaxis(own, 0, -3).reshape(*batch, num_children * width, 3)
            pose = pose.at[..., child_joints, :].set(rows[..., child_rows, :])
            body = jnp.concatenate([pose.reshape(*batch, -1), shape], axis=-1)
            shape = shape + shape_head(shape_net(shape_static, body, train=train))
            body = jnp.concatenate([pose.reshape(*batch, -1), shape], axis=-1)
            cam = cam0 + camera_head(camera_net(camera_static, body, train=train))
            history.append((pose, shape, cam))
        return tuple(jnp.stack(values) for values in zip(*history, strict=True))


class HKMR(nn.Module):
    """HKMR on every frame: the regressor, then the body model (the models' output dict).

    Attributes:
      body_model: the SMPL model (constants, not parameters).
      joint_body_model: `smpl.joint_model(body_model, joint_layout)` (None: the full model).
      mean_params, hidden_size, num_iterations, inner_iterations, hierarchy, previous_only,
        backward_pass, dropout, parts, head_init, dtype: see HKMRRegressor.
      joint_layout: layout of the `joints3d` / `kp2d` outputs.
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    hidden_size: int = 160
    num_iterations: int = 3
    inner_iterations: int = 4
    hierarchy: bool = True
    previous_only: bool = False
    backward_pass: bool = True
    dropout: float = 0.0
    parts: PartTable = DEFAULT_PARTS
    head_init: str = "small"
    joint_layout: str = "vibe49"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, features: jnp.ndarray, *, train: bool = False, state=None, return_state=False
    ):
        """[B, T, D] features -> the output dict of params.smpl_outputs (T outer iterations);
        per frame, so its streaming state (`return_state`, see LMR) is empty."""
        del state  # nothing to carry from frame to frame
        fields = ("mean_params", "hidden_size", "num_iterations", "inner_iterations",
                  "hierarchy", "previous_only", "backward_pass", "dropout", "parts",
                  "head_init", "dtype")  # fmt: skip
        regressor = HKMRRegressor(**{f: getattr(self, f) for f in fields}, name="regressor")
        poses, betas, cams = regressor(features, train=train)
        # smpl_outputs takes 6D: the rotation's first two columns, which it turns back into the
        # same matrix (Gram-Schmidt of orthonormal columns, exact to float rounding).
        pose6d = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(poses))
        outputs = smpl_outputs(
            self.body_model, pose6d, betas, cams, self.joint_layout, self.joint_body_model
        )
        return (outputs, ()) if return_state else outputs


# ---------------------------------------------------------------------------------------------
# Registry interface: default_config, check_config, build
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """HKMR's model fields with their defaults: the shared ones (models.common: name 'hkmr',
    num_iterations = T outer iterations, 3; dtype, mean_params, joint_layout, head_init) and
    hidden_size (d of every psi, width of the shape/camera hidden layers); inner_iterations (P,
    4: forward-backward cycles); hierarchy, previous_only, backward_pass (ablations, see the
    module docstring); dropout; parts (the chain table, root first, as (name, joints) pairs in
    kinematic order); pose_prior (the workdir of a trained pose prior, lmr_jax.models.pose_prior;
    '' = no L_KL) and kl_weight (lambda_KL, see the module docstring).
    """
    config = common.shared_config("hkmr")
    config.hidden_size = 160
    config.inner_iterations = 4
    config.hierarchy = True
    config.previous_only = False
    config.backward_pass = True
    config.dropout = 0.0
    config.parts = DEFAULT_PARTS
    config.pose_prior = ""
    config.kl_weight = 0.01
    return config


def _check_chains(parts: dict[str, tuple[int, ...]]) -> None:
    """Every chain must be a path down SMPL's tree: each joint the child of the one before."""
    for name, joints in parts.items():
        for previous, joint in zip(joints[:-1], joints[1:], strict=True):
            if smpl_lib.SMPL_PARENTS[joint] != previous:
                raise ValueError(f"model.parts: chain '{name}' lists joint {joint} after "
                                 f"{previous}, but its parent is "
                                 f"{smpl_lib.SMPL_PARENTS[joint]}; expected each chain in "
                                 "kinematic order.")  # fmt: skip


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad HKMR model config."""
    common.check_shared(config, default_config())
    common.check_positive(config, ("hidden_size", "inner_iterations"))
    common.check_rate(config, ["dropout"])
    if config.previous_only and not config.hierarchy:
        raise ValueError("model.previous_only is True, but with model.hierarchy=False no joint "
                         "sees another: set model.hierarchy=True or leave it False.")  # fmt: skip
    _check_chains(smpl_lib.validate_parts(dict(config.parts)))
    if not config.kl_weight >= 0:
        raise ValueError(f"model.kl_weight is {config.kl_weight!r}, expected >= 0.")
    if config.pose_prior and not pose_prior.has_pose_prior(config.pose_prior):
        raise ValueError(f"model.pose_prior is '{config.pose_prior}', which holds no pose prior "
                         "(expected the --workdir of `python -m lmr_jax.models.pose_prior`; "
                         "'' trains without L_KL).")  # fmt: skip


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> HKMR:
    """The HKMR module that `config` (fields of `default_config`) describes.

    Raises:
      ValueError: naming the bad field, the unreadable mean-parameter file or the bad chains.
    """
    check_config(config)
    return HKMR(
        hidden_size=int(config.hidden_size),
        inner_iterations=int(config.inner_iterations),
        hierarchy=bool(config.hierarchy),
        previous_only=bool(config.previous_only),
        backward_pass=bool(config.backward_pass),
        dropout=float(config.dropout),
        parts=tuple(smpl_lib.validate_parts(dict(config.parts)).items()),
        **common.shared_kwargs(config, body_model),
    )


# ---------------------------------------------------------------------------------------------
# L_KL (eq. 3): the system's own loss term (models.extra_losses)
# ---------------------------------------------------------------------------------------------


def prior_encoder(workdir: str):
    """The encoder parameters of the pose prior in `workdir`, as numpy arrays (constants of
    the traced loss), read once per process, path and checkpoint.

    Raises:
      ValueError: `workdir` holds no pose prior (pose_prior.load_pose_prior).
    """
    if not pose_prior.has_pose_prior(workdir):
        pose_prior.load_pose_prior(workdir)  # raises its one-sentence ValueError
    stamp = os.stat(os.path.join(pose_prior.prior_dir(workdir), "config.json")).st_mtime_ns
    return _prior_encoder(os.path.abspath(workdir), stamp)


@functools.lru_cache(maxsize=4)
def _prior_encoder(workdir: str, stamp: int):
    del stamp  # part of the cache key: a prior trained again at the same path is read again
    try:
        with jax.ensure_compile_time_eval():  # read while a train step is traced: concrete
            params = pose_prior.load_pose_prior(workdir).params["encoder"]
    except ValueError:
        raise
    except Exception as error:  # a damaged checkpoint: Orbax's own errors
        raise ValueError(f"could not read the pose prior in '{workdir}' ({type(error).__name__}"
                         "); expected the --workdir of `python -m lmr_jax.models.pose_prior`."
                         ) from None  # fmt: skip
    return jax.tree.map(np.asarray, params)


def kl_loss(encoder_params, rotmats: jnp.ndarray, frames: jnp.ndarray | None,
            axis_name: str | None = None) -> jnp.ndarray:  # fmt: skip
    """sum over outer iterations t of the mean over real frames of KL(q(z | Theta^t) || N(0, I)).

    Args:
      encoder_params: the prior's encoder (`prior_encoder`).
      rotmats: [T, B, F, 24, 3, 3] every outer iteration's rotations.
      frames: [B, F] 1 on real frames (None: all).
      axis_name: the pmap axis (losses.masked_mean: the mean over the global batch).

    Returns:
      The unweighted scalar.
    """
    pose69 = geometry.rotmats_to_pose72(rotmats.astype(jnp.float32))[..., 3:]
    kl = pose_prior.kl_to_prior(encoder_params, pose69)  # [T, B, F]
    frames = jnp.ones(kl.shape[1:], jnp.float32) if frames is None else frames
    frames = frames.astype(jnp.float32)
    return losses.masked_mean(kl, jnp.broadcast_to(frames, kl.shape), frames, axis_name)


def extra_losses(
    config: ml_collections.ConfigDict, outputs: dict, batch: dict, axis_name: str | None
) -> dict[str, jnp.ndarray]:
    """HKMR's own loss term: {'kl': kl_weight x L_KL} (none without model.pose_prior or with a
    zero weight); see models.extra_losses."""
    model = config.model
    if not model.get("pose_prior") or not model.get("kl_weight"):
        return {}
    encoder = prior_encoder(model.pose_prior)
    kl = kl_loss(encoder, outputs["iterations"]["rotmats"], batch.get("valid"), axis_name)
    return {"kl": float(model.kl_weight) * kl}

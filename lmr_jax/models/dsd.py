"""DSD: the skeleton-disentangled per-frame regressor of DSD-SATN (Sun et al., ICCV 2019, sec. 3.2).

Per frame (the frames of [B, T, D] features are independent):

1. skeleton branch: the 14 common 2D joints x_s (28 numbers, LSP order = smpl's 'common14', in
   the normalised crop frame [-1, 1] of the kp2d labels). On features (what trains now,
   `DSDRegressor`): one ReLU layer of `skeleton_hidden` (512) and a linear layer to 28, squashed
   by tanh into [-1, 1] (the paper's skeleton comes from heatmaps of pixels; on pre-computed
   features a small network is the issue's choice). On pixels: `HeatmapSkeleton` (three
   deconvolutions of 256 channels, kernel 4, stride 2, BN, ReLU; a 1x1 convolution to 14
   heatmaps; soft-argmax, the paper's eq. 2 "DIR"), a separate module on a feature map.
2. detail branch: x_d = W_d phi + b_d, 2048 -> `detail_width` (512), no activation.
3. bilinear transformation (eq. 3): y_k = sum_ij x_s,i A_kij x_d,j, A [512, 28, 512], no bias,
   computed in float32 (`bilinear`). A starts N(0, 1 / (28 * 512)) (variance scaling with fan-in
   28 x 512), so Var(y_k) = mean(x_s^2) mean(x_d^2) <= mean(x_d^2): y starts no larger than the
   detail features (x_s is in [-1, 1]), the scale of a LeCun-initialised linear layer.
4. one linear layer y -> [cam 3, pose 72 (axis-angle), shape 10], one shot (no iterative
   refinement). Choice: the layer predicts a RESIDUAL to the mean parameters (params.MeanParams;
   its 6D mean pose converted to axis-angle, as HKMR does), with HMR's small head init
   (`head_init` 'small': Xavier gain 0.01), so the first predictions are the upright mean body
   rather than a random one; the paper regresses the 85 numbers directly.

Outputs: the dict of params.smpl_outputs (one "iteration": `iterations` has V = 1) plus
`skeleton2d` [B, T, 14, 2] (the predicted x_s, always the prediction) and `bilinear`
[B, T, 512] (y, SATN's input, see models.satn).

Ground-truth skeleton at the bilinear input (`use_gt_2d`, default False): in training, where
the caller passes the batch's `kp2d` [B, T, J, 3] (the model's joint layout, confidence last),
joints with confidence > 0 replace the predicted ones at the bilinear input (never at test
time, when there are no labels). Default False: the paper trains end to end from its predicted
skeleton and says nothing of substituting labels, and a model trained on ground-truth skeletons
meets its own noisier ones only at test time. With the switch on, the module's
`training_inputs` is ('kp2d',), so the training step passes it `kp2d=batch['kp2d']`
(rngs.apply_for_training, models/__init__.py).

Loss terms (`extra_losses`, added to the shared eq. 5 terms by the training loop): L_2DJ, the
skeleton's confidence-weighted L1 against the common-14 joints of the batch's kp2d (losses.
keypoint_2d_loss: mean over all joints and coordinates), weight `w_skeleton2d` (10; the paper
publishes no weight for L_2DJ, so it takes w_2d's). Eq. 5's weights are losses' preset
'dsd_paper'.

BatchNorm (HeatmapSkeleton): `AffineNorm`, a BatchNorm in inference mode with running mean 0
and variance 1, i.e. a learned per-channel scale and bias. The train state carries no
`batch_stats` (see models/pixels.py), so batch statistics cannot be trained here; the paper
trains BN and "discards the hyper-parameters of the batch normalization layers during the
evaluation".

Config (`default_config`, registry name 'dsd'): the shared fields (models.common; num_iterations
must be 1: DSD is one shot) and skeleton_hidden, detail_width, bilinear_width, use_gt_2d,
w_skeleton2d.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmr_jax import geometry, losses
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common
from lmr_jax.models.layers import StackedDense, head_init, linear_init
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams, smpl_outputs

NUM_SKELETON = 14  # the common-14 (LSP) joints
NUM_PARAMS = 3 + 3 * NUM_JOINTS + NUM_BETAS  # [cam 3, pose 72, shape 10]


def bilinear(x_s: jnp.ndarray, x_d: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Eq. 3: y_k = sum_ij x_s[i] A[k, i, j] x_d[j], in float32.

    Args:
      x_s: [..., S] skeleton (S = 28).
      x_d: [..., E] detail features (E = 512).
      kernel: A [K, S, E].

    Returns:
      [..., K].
    """
    f32 = jnp.float32
    return jnp.einsum("...i,kij,...j->...k", x_s.astype(f32), kernel.astype(f32), x_d.astype(f32))


def soft_argmax(logits: jnp.ndarray) -> jnp.ndarray:
    """Integral regression (eq. 2): softmax over each heatmap, the expected pixel coordinate.

    Pixel-centre convention: of a map W pixels wide, pixel x (0-based) has its centre at
    u = (2 x + 1) / W - 1, so the map covers [-1, 1] edge to edge (the crop frame of the kp2d
    labels, where -1 and 1 are the crop's borders); the same for y with H.

    Args:
      logits: [..., H, W, K] unnormalised heatmaps.

    Returns:
      [..., K, 2] coordinates (x, y) in (-1, 1).
    """
    h, w, k = logits.shape[-3:]
    flat = logits.reshape(*logits.shape[:-3], h * w, k).astype(jnp.float32)
    prob = jax.nn.softmax(flat, axis=-2).reshape(logits.shape)
    xs = (2.0 * jnp.arange(w) + 1.0) / w - 1.0
    ys = (2.0 * jnp.arange(h) + 1.0) / h - 1.0
    x = jnp.einsum("...hwk,w->...k", prob, xs)
    y = jnp.einsum("...hwk,h->...k", prob, ys)
    return jnp.stack([x, y], axis=-1)


class AffineNorm(nn.Module):
    """BatchNorm in inference mode with running mean 0 and variance 1: a learned per-channel
    scale (1) and bias (0) on the last axis (see the module docstring for why)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros_init(), (x.shape[-1],))
        return x * scale + bias


class HeatmapSkeleton(nn.Module):
    """The pixels-path skeleton branch: deconvolutions, 14 heatmaps, soft-argmax.

    Attributes:
      num_joints: heatmaps (14).
      channels: width of the three deconvolutions (256).
      num_deconv: deconvolution layers (3), each kernel 4, stride 2 (the map grows 8x).
      dtype: compute dtype of the convolutions.
    """

    num_joints: int = NUM_SKELETON
    channels: int = 256
    num_deconv: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """[N, h, w, C] backbone feature map -> [N, 14, 2] joints in [-1, 1] (soft_argmax)."""
        x = feature_map
        for i in range(self.num_deconv):
            x = nn.ConvTranspose(
                self.channels, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                dtype=self.dtype, name=f"deconv{i}",
            )(x)  # fmt: skip
            x = nn.relu(AffineNorm(name=f"norm{i}")(x))
        logits = nn.Conv(self.num_joints, (1, 1), dtype=self.dtype, name="heatmaps")(x)
        return soft_argmax(logits)


class DSDRegressor(nn.Module):
    """DSD on feature vectors: skeleton, detail, bilinear map, one-shot head (module docstring).

    Attributes:
      mean_params: the parameters the head's residual starts from.
      skeleton_hidden: width of the skeleton network's hidden layer.
      detail_width: width of x_d (512).
      bilinear_width: width of y (512).
      head_init: 'small' or 'zeros' (layers.head_init) for the 85-number head.
      dtype: compute dtype of the dense layers (the bilinear map is float32).
    """

    mean_params: MeanParams = MeanParams()
    skeleton_hidden: int = 512
    detail_width: int = 512
    bilinear_width: int = 512
    head_init: str = "small"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, skeleton_input: jnp.ndarray | None = None) -> dict:
        """Regresses per frame.

        Args:
          features: [..., D].
          skeleton_input: [..., 14, 2] joints to feed the bilinear map instead of the
            predicted skeleton (None: the prediction); see `gt_skeleton`.

        Returns:
          {'skeleton2d' [..., 14, 2] (predicted), 'bilinear' [..., K], 'pose' [..., 24, 3]
          axis-angle, 'betas' [..., 10], 'cam' [..., 3]}.
        """
        dim = features.shape[-1]
        hidden = StackedDense(self.skeleton_hidden, kernel_init=linear_init(dim),
                              bias_init=linear_init(dim), dtype=self.dtype,
                              name="skeleton_hidden")(features)  # fmt: skip
        init = linear_init(self.skeleton_hidden)
        skeleton = StackedDense(2 * NUM_SKELETON, kernel_init=init, bias_init=init,
                                dtype=self.dtype, name="skeleton_out")(nn.relu(hidden))  # fmt: skip
        skeleton = jnp.tanh(skeleton).reshape(*features.shape[:-1], NUM_SKELETON, 2)
        detail = StackedDense(self.detail_width, kernel_init=linear_init(dim),
                              bias_init=linear_init(dim), dtype=self.dtype,
                              name="detail")(features)  # fmt: skip
        x_s = skeleton if skeleton_input is None else skeleton_input
        kernel = self.param(
            "bilinear",
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(1, 2), out_axis=0),
            (self.bilinear_width, 2 * NUM_SKELETON, self.detail_width),
        )
        y = bilinear(x_s.reshape(*x_s.shape[:-2], -1), detail, kernel)
        head = StackedDense(NUM_PARAMS, kernel_init=head_init(self.head_init), dtype=self.dtype,
                            name="head")(y)  # fmt: skip
        return {"skeleton2d": skeleton, "bilinear": y, **residual_params(self.mean_params, head)}


def residual_params(mean_params: MeanParams, head: jnp.ndarray) -> dict:
    """[..., 85] = [cam 3, pose 72, shape 10] residuals -> mean + residual: {'pose' [..., 24, 3]
    axis-angle, 'betas' [..., 10], 'cam' [..., 3]}."""
    pose6d, shape, cam = mean_params.initial(head.shape[:-1])
    pose = geometry.matrix_to_axis_angle(geometry.rot6d_to_matrix(pose6d))
    return {
        "cam": cam + head[..., :3],
        "pose": pose + head[..., 3 : 3 + 3 * NUM_JOINTS].reshape(pose.shape),
        "betas": shape + head[..., 3 + 3 * NUM_JOINTS :],
    }


def body_outputs(module: nn.Module, params: dict) -> dict:
    """smpl_outputs of one shot's {'pose' axis-angle, 'betas', 'cam'} [B, T, ...] (V = 1)."""
    # smpl_outputs takes 6D: the rotation's first two columns, turned back into the same matrix.
    pose6d = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(params["pose"]))
    return smpl_outputs(module.body_model, pose6d[None], params["betas"][None],
                        params["cam"][None], module.joint_layout,
                        module.joint_body_model)  # fmt: skip


def gt_skeleton(predicted: jnp.ndarray, kp2d: jnp.ndarray, joint_layout: str) -> jnp.ndarray:
    """The skeleton with the labelled joints of `kp2d` in place of the predicted ones.

    Args:
      predicted: [..., 14, 2] the predicted common-14 joints.
      kp2d: [..., J, 3] labels in `joint_layout` ('vibe49' or 'common14'), confidence last.
      joint_layout: the labels' layout.

    Returns:
      [..., 14, 2]: label where its confidence is > 0, else the prediction.
    """
    labels = common14_labels(kp2d, joint_layout)
    return jnp.where(labels[..., 2:] > 0, labels[..., :2], predicted)


def common14_labels(kp2d: jnp.ndarray, joint_layout: str) -> jnp.ndarray:
    """[..., J, 3] labels of `joint_layout` -> [..., 14, 3] its common-14 joints."""
    joints, _ = losses.kp3d_selection(joint_layout, "common14")
    return kp2d if joints is None else kp2d[..., list(joints), :]


class DSD(nn.Module):
    """DSD on every frame: the regressor, then the body model (the models' output dict).

    Attributes:
      body_model: the SMPL model (constants, not parameters).
      joint_body_model: `smpl.joint_model(body_model, joint_layout)` (None: the full model).
      mean_params, skeleton_hidden, detail_width, bilinear_width, head_init, dtype: see
        DSDRegressor.
      use_gt_2d: labels replace the skeleton at the bilinear input in training (docstring).
      joint_layout: layout of the `joints3d` / `kp2d` outputs (and of the `kp2d` labels).
      num_iterations: always 1 (one shot; the shared field, checked).
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    skeleton_hidden: int = 512
    detail_width: int = 512
    bilinear_width: int = 512
    use_gt_2d: bool = False
    head_init: str = "small"
    joint_layout: str = "vibe49"
    num_iterations: int = 1
    dtype: Any = jnp.float32

    @property
    def training_inputs(self) -> tuple[str, ...]:
        """The batch fields the training step passes (the labels, with use_gt_2d)."""
        return gt_inputs(self)

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False, kp2d=None, state=None,
                 return_state=False):  # fmt: skip
        """[B, T, D] features (and in training optionally the `kp2d` labels [B, T, J, 3]) ->
        the output dict of params.smpl_outputs with `skeleton2d` and `bilinear`; per frame,
        so its streaming state is empty."""
        del state
        out = dsd_forward(self, features, train=train, kp2d=kp2d)
        outputs = {**body_outputs(self, out), "skeleton2d": out["skeleton2d"],
                   "bilinear": out["bilinear"]}  # fmt: skip
        return (outputs, ()) if return_state else outputs


def gt_inputs(module: nn.Module) -> tuple[str, ...]:
    """DSD's and SATN's `training_inputs`: ('kp2d',) with use_gt_2d, else none."""
    return ("kp2d",) if module.use_gt_2d else ()


def dsd_forward(module: nn.Module, features: jnp.ndarray, *, train: bool, kp2d=None) -> dict:
    """DSDRegressor 'dsd' (from `module`'s attributes) on [B, T, D] features; with
    `module.use_gt_2d` in training and labels `kp2d` given, the labelled joints feed the
    bilinear map (`gt_skeleton`) while `skeleton2d` stays the prediction. Call it from inside
    `module`'s compact __call__ (DSD, SATN)."""
    regressor = dsd_regressor(module)
    out = regressor(features)
    if train and module.use_gt_2d and kp2d is not None:
        skeleton = gt_skeleton(out["skeleton2d"], kp2d, module.joint_layout)
        # The same layers again (shared parameters): XLA computes the branches once.
        out = {**regressor(features, skeleton), "skeleton2d": out["skeleton2d"]}
    return out


def dsd_regressor(module: nn.Module) -> DSDRegressor:
    """The DSDRegressor named 'dsd' configured from `module`'s attributes (DSD's and SATN's,
    so a DSD checkpoint's params['dsd'] is SATN's params['dsd'])."""
    fields = ("mean_params", "skeleton_hidden", "detail_width", "bilinear_width", "head_init",
              "dtype")  # fmt: skip
    return DSDRegressor(**{f: getattr(module, f) for f in fields}, name="dsd")


# ---------------------------------------------------------------------------------------------
# Registry interface: default_config, check_config, build, extra_losses
# ---------------------------------------------------------------------------------------------


def add_dsd_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """DSD's own fields (SATN's config has them too)."""
    config.num_iterations = 1
    config.skeleton_hidden = 512
    config.detail_width = 512
    config.bilinear_width = 512
    config.use_gt_2d = False
    config.w_skeleton2d = 10.0
    return config


def default_config() -> ml_collections.ConfigDict:
    """DSD's model fields with their defaults (the module docstring lists them)."""
    return add_dsd_fields(common.shared_config("dsd"))


def check_dsd_fields(config: ml_collections.ConfigDict) -> None:
    common.check_positive(config, ("skeleton_hidden", "detail_width", "bilinear_width"))
    if int(config.num_iterations) != 1:
        raise ValueError(f"model.num_iterations is {config.num_iterations}, but "
                         f"'{config.name}' regresses in one shot: expected 1.")  # fmt: skip
    if float(config.w_skeleton2d) < 0:
        raise ValueError(f"model.w_skeleton2d is {config.w_skeleton2d}, expected >= 0.")
    losses.kp3d_selection(config.joint_layout, "common14")  # the skeleton's labels exist


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad DSD config."""
    common.check_shared(config, default_config())
    check_dsd_fields(config)


def dsd_kwargs(config: ml_collections.ConfigDict) -> dict:
    return dict(
        skeleton_hidden=int(config.skeleton_hidden),
        detail_width=int(config.detail_width),
        bilinear_width=int(config.bilinear_width),
    )


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> DSD:
    """The DSD module of a checked config (models.build_model checks and completes it)."""
    check_config(config)
    return DSD(**dsd_kwargs(config), use_gt_2d=bool(config.use_gt_2d),
               **common.shared_kwargs(config, body_model))  # fmt: skip


def model_config(config) -> ml_collections.ConfigDict:
    """The model config of `config`, a model config or a whole training config."""
    return config.model if "model" in config else config


def skeleton_loss(outputs: dict, batch: dict, joint_layout: str, axis_name=None) -> jnp.ndarray:
    """L_2DJ (unweighted): confidence-weighted L1 of `skeleton2d` against the common-14 kp2d
    labels, averaged over all joints of all real frames (losses.keypoint_2d_loss)."""
    labels = common14_labels(batch["kp2d"], joint_layout)
    return losses.keypoint_2d_loss(outputs["skeleton2d"], labels, "l1", batch.get("valid"),
                                   axis_name)  # fmt: skip


def extra_losses(config, outputs: dict, batch: dict, axis_name=None) -> dict[str, jnp.ndarray]:
    """DSD's loss terms beyond eq. 5, WEIGHTED: {'skeleton2d': w_skeleton2d * L_2DJ}.

    Args:
      config: the model config (or a training config holding it as `model`).
      outputs: the model's training outputs.
      batch: the batch (kp2d [B, T, J, 3] in the model's joint layout, optional valid [B, T]).
      axis_name: the pmap axis (masked means over the global batch, as losses.py).
    """
    config = model_config(config)
    term = skeleton_loss(outputs, batch, config.joint_layout, axis_name)
    return {"skeleton2d": jnp.asarray(float(config.w_skeleton2d) * term, jnp.float32)}

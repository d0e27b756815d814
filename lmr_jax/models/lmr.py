"""LMR: local recurrent models for human mesh recovery (paper section 3.2, DESIGN.md section 5).

One refinement iteration v (V = 3 by default, weights shared across iterations):

1. the root GRU over time on [phi_t, theta_root, beta] -> residual for the root part's joints;
2. the five child-part GRUs on [phi_t, theta_part, beta, theta_root (just updated)] -> residuals
   for their joints; they run as ONE stacked recurrence (recurrent.GRU with num_stack=5):
   each part's input is padded to the largest part (5 joints x 6D) with zeros, and the padded
   output rows are never read;
3. the shape module, one hidden layer on [phi_t, theta, beta] -> residual for beta, per frame;
4. the camera GRU (or a dense module, `camera='dense'`) on [phi_t, theta, beta, cam] -> residual.

Every update is a residual from the previous estimate, starting at the mean pose (6D, SPIN/VIBE
layout), the mean shape and the initial camera. Each output goes through a linear head
initialised small (Xavier-uniform, gain 0.01, as HMR's `decpose`) or exactly zero.

Hidden state: every GRU restarts from a zero state at every iteration. An iteration is a fresh
pass of the same recurrent model over the whole window given a better estimate (iterative error
feedback); carrying the final state of iteration v into v+1 would make frame 1 of v+1 depend on
frame T of v, which breaks causality of the unidirectional model. For streaming, the state of
each iteration's GRUs after the last frame of a chunk is carried into the same iteration's GRUs
for the next chunk (`return_state`), which gives the outputs of one call over all the frames.

Speed: phi's part of every input projection (7 GRUs and the shape layer) is computed once per
forward and reused by all iterations; each iteration projects only its small dynamic inputs
(layers.FeedForward, recurrent.GRU).

Ablations (paper Table 1): `single_rnn` (one GRU on [phi, theta, beta] predicts all 24 joints)
and `no_root_dependency` (the child parts do not receive theta_root).

Config (`default_config`, the registry's 'lmr'): the shared fields (models.common), the
recurrent ones (hidden_size 512 for each of the seven GRUs, see below; gru_layers 1,
bidirectional, dropout (between GRU layers and on the hidden layers), scan_unroll), and LMR's
own: camera ('rnn' | 'dense'), single_rnn, no_root_dependency (the ablations),
single_rnn_hidden_size (width of the `single_rnn` ablation's one pose GRU, 0 = hidden_size;
the shape and camera modules keep hidden_size; refused unless single_rnn;
`models.matched_single_rnn_width` gives the width at which the ablation holds LMR's parameter
count) and parts (the part table, root first, as (name, joints) pairs).

LMR's width: the paper gives no hidden size. Each of its seven GRUs (root, five parts, camera)
models 2-5 joints or 3 camera numbers, where VIBE's one GRU of 1024 models the whole body; at
1024 each, LMR's recurrences alone cost 7 GRUs x 3 iterations x T steps of h @ W_hh, twice
VIBE's whole forward (experiments/benchmarks/model_step.py, row 'lmr_1024'). At 512 each the
seven GRUs hold 3584 units in all and a training step costs under 2x VIBE's.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common
from lmr_jax.models.layers import FeedForward, StackedDense, head_init
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams, smpl_outputs
from lmr_jax.models.recurrent import GRU, gru_like, run_gru

PartTable = tuple[tuple[str, tuple[int, ...]], ...]
DEFAULT_PARTS: PartTable = tuple(smpl_lib.PARTS.items())


def _expand(delta: jnp.ndarray, source: np.ndarray) -> jnp.ndarray:
    """Places K per-part rows onto the 24 joints: [..., K, 6] -> [..., 24, 6].

    `source[j]` is the row of joint j, or K for joints the rows do not cover (they get zero).
    """
    padded = jnp.concatenate([delta, jnp.zeros_like(delta[..., :1, :])], axis=-2)
    return jnp.take(padded, source, axis=-2)


@functools.lru_cache(maxsize=16)
def part_tables(parts: PartTable):
    """Static index tables of the root and the stacked child parts.

    Returns:
      dict with root [R] joint ids, root_source [24] (into R rows), child_index [P, M] joint
      ids padded with 0, child_mask [P, M] (1 for real joints), child_source [24] (into the
      P * M flattened child rows); M is the size of the largest child part.
    """
    (_, root), *children = parts
    width = max(len(joints) for _, joints in children)
    child_index = np.zeros((len(children), width), np.int32)
    child_mask = np.zeros((len(children), width), np.float32)
    root_source = np.full(NUM_JOINTS, len(root), np.int32)
    child_source = np.full(NUM_JOINTS, len(children) * width, np.int32)
    root_source[list(root)] = np.arange(len(root))
    for p, (_, joints) in enumerate(children):
        child_index[p, : len(joints)] = joints
        child_mask[p, : len(joints)] = 1.0
        child_source[list(joints)] = p * width + np.arange(len(joints))
    return dict(
        root=np.asarray(root, np.int32),
        root_source=root_source,
        child_index=child_index,
        child_mask=child_mask,
        child_source=child_source,
    )


class PartRecurrences(nn.Module):
    """LMR's pose module: the root GRU, then the stacked child-part GRUs conditioned on it.

    Attributes:
      hidden_size, num_layers, bidirectional, dropout: of every part GRU.
      parts: the part table, root first (validated by smpl.validate_parts).
      no_root_dependency: children do not receive theta_root (ablation).
      head_init: 'small' or 'zeros'.
      dtype: compute dtype of the matmuls.
      unroll: time steps per scan loop iteration (recurrent.GRU).
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    parts: PartTable = DEFAULT_PARTS
    no_root_dependency: bool = False
    head_init: str = "small"
    dtype: Any = jnp.float32
    unroll: int | bool = 1

    def setup(self):
        tables = part_tables(self.parts)
        num_parts, width = tables["child_index"].shape
        gru = functools.partial(gru_like, self)
        self.root_rnn = gru()
        self.root_head = StackedDense(
            6 * len(tables["root"]), kernel_init=head_init(self.head_init), dtype=self.dtype
        )
        self.child_rnn = gru(num_stack=num_parts)
        self.child_head = StackedDense(
            6 * width,
            num_stack=num_parts,
            kernel_init=head_init(self.head_init, stacked=True),
            dtype=self.dtype,
        )

    def project_static(self, features: jnp.ndarray):
        """[B, T, D] -> (root gates [B, T, G], child gates [P, B, T, G]), once per forward."""
        return self.root_rnn.project_static(features), self.child_rnn.project_static(features)

    def __call__(self, static, pose, shape, *, train: bool = False, state=None, carry=False):
        """One pose update: root first, then the children given the updated root.

        Args:
          static: the output of `project_static`.
          pose: [B, T, 24, 6] current 6D pose.
          shape: [B, T, 10] current shape.
          train: enables dropout.
          state: (root, children) GRU states of an earlier call with `carry` (None: zeros).
          carry: also return the GRU states after the last frame (streaming).

        Returns:
          ([B, T, 24, 6] updated pose, the GRU states or None without `carry`).
        """
        tables = part_tables(self.parts)
        batch = pose.shape[:-2]
        root_static, child_static = static
        root_state, child_state = state or (None, None)
        num_parts, width = tables["child_index"].shape

        root_pose = pose[..., tables["root"], :].reshape(*batch, -1)
        root_in = jnp.concatenate([root_pose, shape], -1)
        root_out, root_state = run_gru(self.root_rnn, root_static, root_in, train=train,
                                       state=root_state, carry=carry)  # fmt: skip
        root_delta = self.root_head(root_out).reshape(*batch, -1, 6)
        pose = pose + _expand(root_delta, tables["root_source"])

        # Child inputs [P, B, T, 6M + 10 (+ 6R)]: own joints zero-padded to M, shape, new root.
        own = pose[..., tables["child_index"], :] * tables["child_mask"][..., None]
        own = jnp.moveaxis(own.reshape(*batch, num_parts, 6 * width), -2, 0)
        condition = [shape]
        if not self.no_root_dependency:
            condition.append(pose[..., tables["root"], :].reshape(*batch, -1))
        condition = jnp.concatenate(condition, axis=-1)
        condition = jnp.broadcast_to(condition, (num_parts, *condition.shape))
        child_inputs = jnp.concatenate([own, condition], axis=-1)
        child_out, child_state = run_gru(self.child_rnn, child_static, child_inputs,
                                         train=train, state=child_state, carry=carry)  # fmt: skip
        child_delta = jnp.moveaxis(self.child_head(child_out), 0, -2)  # [B, T, P, 6M]
        child_delta = child_delta.reshape(*batch, num_parts * width, 6)
        pose = pose + _expand(child_delta, tables["child_source"])
        return pose, ((root_state, child_state) if carry else None)


class SingleRecurrence(nn.Module):
    """The `single_rnn` ablation: one GRU on [phi, theta, beta] updates all 24 joints."""

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head_init: str = "small"
    dtype: Any = jnp.float32
    unroll: int | bool = 1

    def setup(self):
        self.rnn = gru_like(self)
        self.head = StackedDense(
            6 * NUM_JOINTS, kernel_init=head_init(self.head_init), dtype=self.dtype
        )

    def project_static(self, features: jnp.ndarray) -> jnp.ndarray:
        """[B, T, D] -> [B, T, G] gates of the features, once per forward."""
        return self.rnn.project_static(features)

    def __call__(self, static, pose, shape, *, train: bool = False, state=None, carry=False):
        """[B, T, 24, 6] pose and [B, T, 10] shape -> ([B, T, 24, 6] updated pose, GRU state
        or None); `state` and `carry` as in PartRecurrences."""
        inputs = jnp.concatenate([pose.reshape(*pose.shape[:-2], -1), shape], axis=-1)
        out, state = run_gru(self.rnn, static, inputs, train=train, state=state, carry=carry)
        return pose + self.head(out).reshape(pose.shape), state


class LMR(nn.Module):
    """Local recurrent models with iterative refinement (see the module docstring).

    Attributes:
      body_model: the SMPL model (constants, not parameters).
      joint_body_model: `smpl.joint_model(body_model, joint_layout)`, which gives the joints
        without skinning the whole mesh (None: joints from the full body model).
      mean_params: the starting point (mean pose, shape, camera).
      hidden_size, gru_layers, bidirectional, dropout: of every GRU (and the width and dropout
        of the shape/dense-camera hidden layer).
      num_iterations: V.
      camera: 'rnn' (a GRU over time) or 'dense' (per-frame hidden layer, static cameras).
      single_rnn, no_root_dependency: the paper's ablations.
      single_rnn_hidden_size: width of the `single_rnn` pose GRU (0: hidden_size); a wider one
        holds as many parameters as LMR's six pose GRUs (models.matched_single_rnn_width).
      parts: the part table, root first.
      head_init: 'small' or 'zeros'.
      joint_layout: layout of the `joints3d` / `kp2d` outputs.
      dtype: compute dtype of the matmuls (float32 or bfloat16); parameters and outputs float32.
      scan_unroll: time steps per scan loop iteration of every GRU (recurrent.GRU.unroll).
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    hidden_size: int = 512
    num_iterations: int = 3
    gru_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    camera: str = "rnn"
    single_rnn: bool = False
    no_root_dependency: bool = False
    single_rnn_hidden_size: int = 0
    parts: PartTable = DEFAULT_PARTS
    head_init: str = "small"
    joint_layout: str = "vibe49"
    dtype: Any = jnp.float32
    scan_unroll: int | bool = 1

    def _rnn_options(self) -> dict:
        return dict(
            num_layers=self.gru_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            dtype=self.dtype,
            unroll=self.scan_unroll,
        )

    def _pose_module(self) -> nn.Module:
        """The pose recurrences: root + stacked children, or one GRU (`single_rnn`)."""
        if self.single_rnn:
            width = self.single_rnn_hidden_size or self.hidden_size
            return SingleRecurrence(
                width, head_init=self.head_init, name="pose", **self._rnn_options()
            )
        return PartRecurrences(
            self.hidden_size,
            parts=self.parts,
            no_root_dependency=self.no_root_dependency,
            head_init=self.head_init,
            name="pose",
            **self._rnn_options(),
        )

    def _camera_module(self, fan_in: int) -> nn.Module:
        """The camera model: a GRU over time, or a per-frame hidden layer ('dense')."""
        if self.camera == "rnn":
            return GRU(self.hidden_size, name="camera", **self._rnn_options())
        if self.camera == "dense":
            return FeedForward(self.hidden_size, fan_in=fan_in, dropout=self.dropout,
                               dtype=self.dtype, name="camera")  # fmt: skip
        raise ValueError(f"unknown camera model '{self.camera}', expected 'rnn' or 'dense'.")

    @nn.compact
    def __call__(
        self, features: jnp.ndarray, *, train: bool = False, state=None, return_state=False
    ):
        """[B, T, D] features -> the output dict of params.smpl_outputs (V iterations).

        With `return_state`, returns (outputs, state): the recurrent states after the last
        frame, one entry per iteration; passing that `state` with the next frames continues
        the sequence exactly as one longer call would (predict.Stream). Unidirectional only.
        """
        head = functools.partial(StackedDense, kernel_init=head_init(self.head_init))
        width = features.shape[-1] + 6 * NUM_JOINTS + NUM_BETAS  # [phi, theta, beta]
        pose_net = self._pose_module()
        shape_net = FeedForward(
            self.hidden_size, fan_in=width, dropout=self.dropout, dtype=self.dtype, name="shape"
        )
        shape_head = head(NUM_BETAS, dtype=self.dtype, name="shape_head")
        camera_net = self._camera_module(fan_in=width + 3)
        camera_head = head(3, dtype=self.dtype, name="camera_head")

        # phi's projections, once per forward for all V iterations (DESIGN.md section 6).
        pose_static = pose_net.project_static(features)
        shape_static = shape_net.project_static(features)
        camera_static = camera_net.project_static(features)

        batch = features.shape[:-1]
        pose, shape, cam = self.mean_params.initial(batch)
        states = state or ({"pose": None, "camera": None},) * self.num_iterations
        history, new_states = [], []
        for previous in states:
            pose, pose_state = pose_net(pose_static, pose, shape, train=train,
                                        state=previous["pose"], carry=return_state)  # fmt: skip
            flat_pose = pose.reshape(*batch, 6 * NUM_JOINTS)
            shape_in = jnp.concatenate([flat_pose, shape], axis=-1)
            shape = shape + shape_head(shape_net(shape_static, shape_in, train=train))
            camera_in = jnp.concatenate([flat_pose, shape, cam], axis=-1)
            if self.camera == "rnn":
                camera_out, camera_state = run_gru(camera_net, camera_static, camera_in,
                                                   train=train, state=previous["camera"],
                                                   carry=return_state)  # fmt: skip
            else:
                camera_out, camera_state = camera_net(camera_static, camera_in, train=train), ()
            cam = cam + camera_head(camera_out)
            history.append((pose, shape, cam))
            new_states.append({"pose": pose_state, "camera": camera_state})
        pose6d, betas, cams = (jnp.stack(values) for values in zip(*history, strict=True))
        outputs = smpl_outputs(
            self.body_model, pose6d, betas, cams, self.joint_layout, self.joint_body_model
        )
        return (outputs, tuple(new_states)) if return_state else outputs


# ---------------------------------------------------------------------------------------------
# Config and registry entry
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """LMR's model fields with their defaults (the module docstring lists them)."""
    config = common.add_recurrent_fields(common.shared_config("lmr"), 512, gru_layers=1)
    config.camera = "rnn"
    config.single_rnn = False
    config.no_root_dependency = False
    config.single_rnn_hidden_size = 0
    config.parts = DEFAULT_PARTS
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad LMR config."""
    common.check_shared(config, default_config())
    common.check_choice(config, "camera", ("rnn", "dense"))
    single_width = int(config.single_rnn_hidden_size)
    if single_width < 0:
        raise ValueError(f"model.single_rnn_hidden_size is {single_width}, expected 0 (= "
                         "hidden_size) or a positive width.")  # fmt: skip
    if single_width and not config.single_rnn:
        raise ValueError(f"model.single_rnn_hidden_size is {single_width}, but only LMR's "
                         "single_rnn ablation has that GRU: set model.single_rnn=True or "
                         "leave it 0.")  # fmt: skip
    if config.single_rnn and config.no_root_dependency:
        raise ValueError("model.single_rnn and model.no_root_dependency exclude each other: "
                         "the single-RNN ablation has no root part.")  # fmt: skip


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> LMR:
    """The LMR module of a checked config (models.build_model checks and completes it)."""
    parts = tuple(smpl_lib.validate_parts(dict(config.parts)).items())
    return LMR(
        camera=config.camera,
        single_rnn=bool(config.single_rnn),
        single_rnn_hidden_size=int(config.single_rnn_hidden_size),
        no_root_dependency=bool(config.no_root_dependency),
        parts=parts,
        **common.recurrent_kwargs(config),
        **common.shared_kwargs(config, body_model),
    )

"""SATN: the self-attention temporal network of DSD-SATN (Sun et al., ICCV 2019, sec. 3.3), on DSD.

`SATNCore` maps a window of W = 9 frames' features [N, 9, E] (E = 512, DSD's bilinear y) to
the centre frame's 85 numbers [cam 3, pose 72 axis-angle, shape 10]:

1. fixed sinusoidal positional encoding (Vaswani et al.) added to the 9 inputs by SLOT, after
   the shuffle (below): the encoding stays in place and never travels with a frame;
2. two post-norm transformer encoder layers (x = LN(x + Drop(MHA(x))); x = LN(x + Drop(FFN(x)))),
   8 heads of 64-d keys and values, FFN 2048 (ReLU), dropout 0.1 (`dropout`; also on the
   attention weights, as torch's nn.TransformerEncoderLayer). Scores are scaled by sqrt(64)
   (the Transformer's sqrt(d_k)); the paper's eq. 4 writes sqrt(512) for its one-head form;
3. a TCN (VideoPose3D's design, two blocks, valid convolutions: 9 -> 7 -> 1 frames): Conv1d
   E -> 1024 kernel 3, norm, ReLU, dropout 0.25 (`tcn_dropout`); one residual block: a kernel-3
   conv of dilation 3, norm, ReLU, dropout, a 1x1 conv, norm, ReLU, dropout, plus the centre of
   its input; then a 1x1 Conv1d 1024 -> 85. Its receptive field is exactly the 9 frames.
   Choice (as DSD's head): the 85 numbers are a residual to the mean parameters
   (dsd.residual_params), the last conv starting small (`head_init`).

Norm: `dsd.AffineNorm` (a BatchNorm in inference mode with running mean 0 and variance 1: a
learned per-channel scale and bias). Departure from the paper, which trains BatchNorm with batch
statistics: the train state has no `batch_stats` collection (models/pixels.py). The encoder's
post-norm LayerNorms keep the TCN's input at unit scale, so the convolutions work without
batch statistics.

Shuffle-and-sort (sec. 3.3), in training (`train=True`, `shuffle`, a 'dropout' RNG given; the
training loop gives one to a model with `dropout` > 0): each window's 9 frames are permuted
(`permutation[n, s]` = the original position of the frame put in slot s), the positional
encoding is added by slot (in place: it says nothing of the order), the attention outputs are
un-permuted (`unpermute`) before the TCN (which sees the frames in their true order), and a
linear head on each slot's attention output predicts that frame's original position. Without
an RNG or in inference the permutation is the identity. The sort loss (`sort_loss`): L2 on
positions normalised to [-1, 1] (t = 2 p / 8 - 1, so the reversed order is -t), the minimum of
the forward and the reversed order's error per window (motions are reversible), weight `w_sort`.

Where the paper and the authors' code (JDAI-CV/DSD-SATN) disagree we follow the paper: the
sorting loss is L2 on positions (the code: cross-entropy over the 9 positions; the paper's
"soft Gaussian-like label" refinement of one-hot labels belongs to a classification loss and is
not used with L2), the loss weights are eq. 5's (losses preset 'dsd_paper'), and the
positional encoding stays in place (the code adds each shuffled frame its ORIGINAL position's
encoding, which tells the sorter the answer). The paper's sorting module is "3 convolution
blocks followed by 3 FC layers"; we use the linear head of the issue (the attention layers do
the sorting); the paper's w_r = 0.6 adversarial term needs a pose discriminator, which this
project does not have (HKMR's prior is a VAE), so it is left out.

Over a video (`SATN`, registry name 'satn'): every frame of [B, T, ...] is the centre of its
own window, frames t + (k - 4) * `frame_step` for k = 0..8, the ends padded by repeating the
first and the last frame (`window_index` clips the indices); one gather, no loop over frames.
The outputs are params.smpl_outputs of the centre-frame predictions for every frame, so the
evaluation protocols and lmr-predict work unchanged (inside each model window of T frames the
ends are padded, so a frame near a window's edge sees less context than mid-video; streaming
prediction carries no state between chunks). `frame_step`: the paper samples Human3.6M at
10 fps, so its 9 frames span 0.8 s; our data are 25-30 fps, where frame_step 3 spans the same
time. Default 1 (consecutive frames): with training windows of T = 16 frames, a step of 3
(25 frames of context) would pad most windows by repetition.

SATN runs on DSD: `SATN` holds DSD's regressor under params['dsd'] (the same tree as a DSD
model's, so stage 2 loads a trained DSD's params['dsd']) and the core under params['satn'].
Two stages as the paper: train DSD, then SATN on DSD's features with DSD frozen (default,
`finetune_dsd` False: stop_gradient on DSD's outputs, so its parameters get zero gradients);
`finetune_dsd` True trains both. Stage 2 starts from a trained DSD with `dsd_run` (the
--workdir of a DSD run, experiments/dsd.py): a new SATN run's params['dsd'] are that run's
latest checkpoint's (`initial_params`, the registry hook train.init_state calls for a run
from step 0; a resumed run restores its own checkpoint and reads nothing from `dsd_run`),
refused, naming the field, when that run's DSD fields (`DSD_FIELDS`) or parameter shapes
differ from this config's. `dsd_run` '' starts DSD from the seed: trained jointly with
`finetune_dsd`, else left at its random initialisation (a warning says so). Extra outputs:
`skeleton2d`, `bilinear` (DSD's), `sort_positions` and `sort_targets` [B, T, 9] (the sort
head's predictions and the normalised original positions of each window's slots).

Config (`default_config`): the shared fields, DSD's (models.dsd), and num_heads (8), head_dim
(64), ffn_width (2048), attention_layers (2), dropout (0.1), tcn_width (1024), tcn_dropout
(0.25), frame_step (1), shuffle (True), w_sort (1.0: the paper gives no weight for L_s),
finetune_dsd (False), dsd_run (''). The shared variants' width (config.set_hidden_size: 32 in
smoke, 256 in cpu, 128 in bench) sets tcn_width (`VARIANT_WIDTH_FIELD`); DSD keeps its widths.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from lmr_jax import losses
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import common, dsd
from lmr_jax.models.dsd import AffineNorm
from lmr_jax.models.layers import StackedDense, head_init
from lmr_jax.models.params import MeanParams

VARIANT_WIDTH_FIELD = "tcn_width"  # the shared variants' width (models.variant_width_field)
# The fields that make a DSD's parameters mean the same (its widths, the mean the head's
# residual is added to): a `dsd_run` must have this config's.
DSD_FIELDS = ("skeleton_hidden", "detail_width", "bilinear_width", "mean_params")
WINDOW = 9  # frames per window; the TCN's receptive field (3 + 2 * 3)
CENTRE = WINDOW // 2


def positional_encoding(length: int, dim: int) -> np.ndarray:
    """Sinusoidal encoding [length, dim]: sin(p / 10000^(2i/dim)) at 2i, cos at 2i + 1."""
    position = np.arange(length)[:, None]
    rates = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(position * rates)
    pe[:, 1::2] = np.cos(position * rates[: dim // 2])
    return pe


def window_index(num_frames: int, frame_step: int = 1, window: int = WINDOW) -> np.ndarray:
    """[T, window] frame indices of every frame's centred window, ends repeated (clipped)."""
    offsets = (np.arange(window) - window // 2) * frame_step
    return np.clip(np.arange(num_frames)[:, None] + offsets, 0, num_frames - 1)


def random_permutations(key: jax.Array, count: int, window: int = WINDOW) -> jnp.ndarray:
    """[count, window] int32 independent uniform permutations (argsort of uniform noise)."""
    return jnp.argsort(jax.random.uniform(key, (count, window)), axis=-1).astype(jnp.int32)


def permute(x: jnp.ndarray, permutation: jnp.ndarray) -> jnp.ndarray:
    """out[n, s] = x[n, permutation[n, s]]: [N, W, E] frames put into the shuffled slots."""
    return jnp.take_along_axis(x, permutation[..., None], axis=-2)


def unpermute(x: jnp.ndarray, permutation: jnp.ndarray) -> jnp.ndarray:
    """The inverse of `permute`: out[n, permutation[n, s]] = x[n, s], [N, W, E]."""
    return permute(x, jnp.argsort(permutation, axis=-1))


def normalised_positions(permutation: jnp.ndarray, window: int = WINDOW) -> jnp.ndarray:
    """Original positions p in 0..W-1 -> 2 p / (W - 1) - 1 in [-1, 1] (reversed order: -t)."""
    return 2.0 * permutation.astype(jnp.float32) / (window - 1) - 1.0


def sort_errors(predicted: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Per window [...]: min(mean_s (pred - t)^2, mean_s (pred + t)^2), forward or reversed."""
    forward = jnp.mean(jnp.square(predicted - targets), axis=-1)
    backward = jnp.mean(jnp.square(predicted + targets), axis=-1)
    return jnp.minimum(forward, backward)


def sort_loss(predicted, targets, valid=None, axis_name=None) -> jnp.ndarray:
    """The sort loss L_s (unweighted): `sort_errors` averaged over the windows [B, T] of the
    real frames (`valid` [B, T], None: all), over the global batch under pmap."""
    weight = jnp.ones(predicted.shape[:-1], jnp.float32) if valid is None else valid
    weight = weight.astype(jnp.float32)
    return losses._masked_mean(sort_errors(predicted, targets), weight, weight, axis_name)


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (torch's nn.TransformerEncoderLayer default)."""

    num_heads: int = 8
    head_dim: int = 64
    ffn_width: int = 2048
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[N, W, E] -> [N, W, E]."""
        dim = x.shape[-1]
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        attention = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim,
            out_features=dim, dropout_rate=self.dropout, deterministic=not train,
            dtype=self.dtype, name="attention",
        )(x, x)  # fmt: skip
        x = nn.LayerNorm(name="norm1")(x + drop(attention))
        hidden = nn.relu(nn.Dense(self.ffn_width, dtype=self.dtype, name="ffn1")(x))
        hidden = nn.Dense(dim, dtype=self.dtype, name="ffn2")(drop(hidden))
        return nn.LayerNorm(name="norm2")(x + drop(hidden))


class TemporalConvNet(nn.Module):
    """The TCN on the 9 frames in true order: [N, 9, E] -> [N, 85] (module docstring)."""

    width: int = 1024
    dropout: float = 0.25
    head_init: str = "small"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        def block(y, kernel, dilation, name):
            y = nn.Conv(self.width, (kernel,), kernel_dilation=(dilation,), padding="VALID",
                        use_bias=False, dtype=self.dtype, name=name)(y)  # fmt: skip
            y = nn.relu(AffineNorm(name=f"{name}_norm")(y))
            return nn.Dropout(self.dropout)(y, deterministic=not train)

        x = block(x, 3, 1, "expand")  # 9 -> 7 frames
        pad = (3 - 1) * 3 // 2
        h = block(x, 3, 3, "dilated")  # 7 -> 1
        x = x[..., pad : x.shape[-2] - pad, :] + block(h, 1, 1, "pointwise")
        out = nn.Conv(dsd.NUM_PARAMS, (1,), kernel_init=head_init(self.head_init),
                      dtype=self.dtype, name="head")(x)  # fmt: skip
        return out[..., 0, :].astype(jnp.float32)


class SATNCore(nn.Module):
    """SATN on windows of 9 frames: [N, 9, E] -> the centre frame's 85 residuals and the sort
    head's outputs (module docstring). Intermediates are sown ('intermediates':
    encoder_input, attention_output, tcn_input) for the tests."""

    num_heads: int = 8
    head_dim: int = 64
    ffn_width: int = 2048
    attention_layers: int = 2
    dropout: float = 0.1
    tcn_width: int = 1024
    tcn_dropout: float = 0.25
    shuffle: bool = True
    head_init: str = "small"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, windows: jnp.ndarray, *, train: bool = False, permutation=None) -> dict:
        """Args:
          windows: [N, 9, E] features in true temporal order.
          train: dropout, and the shuffle when `shuffle` and a 'dropout' RNG is given.
          permutation: [N, 9] a given shuffle (tests); None: random or identity (above).

        Returns:
          {'params' [N, 85] residuals [cam, pose, shape], 'sort_positions' [N, 9] predicted
          normalised original position of each slot, 'sort_targets' [N, 9] the true ones}.
        """
        count, window, dim = windows.shape
        if permutation is None:
            if train and self.shuffle and self.has_rng("dropout"):
                permutation = random_permutations(self.make_rng("dropout"), count, window)
            else:
                permutation = jnp.broadcast_to(jnp.arange(window, dtype=jnp.int32),
                                               (count, window))  # fmt: skip
        # The encoding is added by slot AFTER the shuffle: in place, it reveals no order.
        x = permute(windows, permutation) + positional_encoding(window, dim)
        self.sow("intermediates", "encoder_input", x)
        for i in range(self.attention_layers):
            x = EncoderLayer(self.num_heads, self.head_dim, self.ffn_width, self.dropout,
                             self.dtype, name=f"encoder{i}")(x, train=train)  # fmt: skip
        self.sow("intermediates", "attention_output", x)
        positions = StackedDense(1, dtype=self.dtype, name="sort_head")(x)[..., 0]
        ordered = unpermute(x, permutation)  # the TCN sees the true order
        self.sow("intermediates", "tcn_input", ordered)
        out = TemporalConvNet(self.tcn_width, self.tcn_dropout, self.head_init, self.dtype,
                              name="tcn")(ordered, train=train)  # fmt: skip
        return {"params": out, "sort_positions": positions,
                "sort_targets": normalised_positions(permutation, window)}  # fmt: skip


def over_sequence(core: SATNCore, features: jnp.ndarray, frame_step: int, **kwargs) -> dict:
    """`core` with every frame of [B, T, E] as a centre frame (ends repeated): [B, T, ...]."""
    batch, frames, dim = features.shape
    windows = features[:, window_index(frames, frame_step)]  # [B, T, 9, E], one gather
    out = core(windows.reshape(batch * frames, WINDOW, dim), **kwargs)
    return jax.tree.map(lambda v: v.reshape(batch, frames, *v.shape[1:]), out)


CORE_FIELDS = ("num_heads", "head_dim", "ffn_width", "attention_layers", "dropout", "tcn_width",
               "tcn_dropout", "shuffle", "head_init", "dtype")  # fmt: skip


class SATN(nn.Module):
    """DSD per frame, then SATN over time on DSD's bilinear features (module docstring).

    Attributes:
      body_model, joint_body_model, mean_params, skeleton_hidden, detail_width,
        bilinear_width, use_gt_2d, head_init, joint_layout, num_iterations, dtype: see dsd.DSD.
      num_heads, head_dim, ffn_width, attention_layers, dropout, tcn_width, tcn_dropout,
        shuffle: see SATNCore.
      frame_step: temporal stride of a window's frames.
      finetune_dsd: gradients flow into DSD (else its outputs are behind stop_gradient).
    """

    body_model: smpl_lib.SMPLModel
    joint_body_model: smpl_lib.SMPLModel | None = None
    mean_params: MeanParams = MeanParams()
    skeleton_hidden: int = 512
    detail_width: int = 512
    bilinear_width: int = 512
    use_gt_2d: bool = False
    num_heads: int = 8
    head_dim: int = 64
    ffn_width: int = 2048
    attention_layers: int = 2
    dropout: float = 0.1
    tcn_width: int = 1024
    tcn_dropout: float = 0.25
    shuffle: bool = True
    frame_step: int = 1
    finetune_dsd: bool = False
    head_init: str = "small"
    joint_layout: str = "vibe49"
    num_iterations: int = 1
    dtype: Any = jnp.float32

    @property
    def training_inputs(self) -> tuple[str, ...]:
        """The batch fields the training step passes (the labels, with use_gt_2d)."""
        return dsd.gt_inputs(self)

    @nn.compact
    def temporal(self, features: jnp.ndarray, *, train: bool = False, kp2d=None,
                 permutation=None) -> dict:  # fmt: skip
        """Everything before the body model: DSD's {'skeleton2d', 'bilinear'} and SATN's
        {'params' [B, T, 85] residuals, 'sort_positions', 'sort_targets'} ([B, T, 9])."""
        frame = dsd.dsd_forward(self, features, train=train, kp2d=kp2d)
        frame = {k: frame[k] for k in ("skeleton2d", "bilinear")}
        if not self.finetune_dsd:
            frame = jax.lax.stop_gradient(frame)
        core = SATNCore(**{f: getattr(self, f) for f in CORE_FIELDS}, name="satn")
        out = over_sequence(core, frame["bilinear"], self.frame_step, train=train,
                            permutation=permutation)  # fmt: skip
        return {**frame, **out}

    def __call__(self, features: jnp.ndarray, *, train: bool = False, kp2d=None, state=None,
                 return_state=False, permutation=None):  # fmt: skip
        """[B, T, D] features -> params.smpl_outputs of every frame's centre-frame prediction,
        with `skeleton2d`, `bilinear`, `sort_positions`, `sort_targets` ([B, T, 9]).
        `permutation` [B * T, 9]: a given shuffle (tests)."""
        del state
        out = self.temporal(features, train=train, kp2d=kp2d, permutation=permutation)
        outputs = dsd.body_outputs(self, dsd.residual_params(self.mean_params, out.pop("params")))
        outputs.update(out)
        return (outputs, ()) if return_state else outputs


# ---------------------------------------------------------------------------------------------
# Registry interface: default_config, check_config, build, extra_losses
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """SATN's model fields with their defaults (the module docstring lists them)."""
    config = dsd.add_dsd_fields(common.shared_config("satn"))
    config.num_heads = 8
    config.head_dim = 64
    config.ffn_width = 2048
    config.attention_layers = 2
    config.dropout = 0.1
    config.tcn_width = 1024
    config.tcn_dropout = 0.25
    config.frame_step = 1
    config.shuffle = True
    config.w_sort = 1.0
    config.finetune_dsd = False
    config.dsd_run = ""
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad SATN config."""
    common.check_shared(config, default_config())
    dsd.check_dsd_fields(config)
    common.check_positive(config, ("num_heads", "head_dim", "ffn_width", "attention_layers",
                                   "tcn_width", "frame_step"))  # fmt: skip
    common.check_rate(config, ("dropout", "tcn_dropout"))
    if float(config.w_sort) < 0:
        raise ValueError(f"model.w_sort is {config.w_sort}, expected >= 0.")
    run = config.dsd_run
    if run and not os.path.isdir(os.path.join(run, "checkpoints")):
        raise ValueError(f"model.dsd_run is '{run}', which holds no checkpoints (expected the "
                         "--workdir of a DSD run of experiments/dsd.py, or '' to start DSD from "
                         "the seed).")  # fmt: skip


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel) -> SATN:
    """The SATN module (DSD inside) of a checked config."""
    check_config(config)
    fields = ("num_heads", "head_dim", "ffn_width", "attention_layers", "tcn_width",
              "frame_step")  # fmt: skip
    return SATN(
        **dsd.dsd_kwargs(config),
        use_gt_2d=bool(config.use_gt_2d),
        **{f: int(config[f]) for f in fields},
        dropout=float(config.dropout),
        tcn_dropout=float(config.tcn_dropout),
        shuffle=bool(config.shuffle),
        finetune_dsd=bool(config.finetune_dsd),
        **common.shared_kwargs(config, body_model),
    )


def extra_losses(config, outputs: dict, batch: dict, axis_name=None) -> dict[str, jnp.ndarray]:
    """SATN's loss terms beyond eq. 5, WEIGHTED: {'sort': w_sort * L_s} (with `shuffle`), and
    DSD's {'skeleton2d'} when DSD is fine-tuned (frozen, it would get no gradient)."""
    config = dsd.model_config(config)
    terms = {}
    if config.shuffle:
        term = sort_loss(outputs["sort_positions"], outputs["sort_targets"], batch.get("valid"),
                         axis_name)  # fmt: skip
        terms["sort"] = jnp.asarray(float(config.w_sort) * term, jnp.float32)
    if config.finetune_dsd:
        terms.update(dsd.extra_losses(config, outputs, batch, axis_name))
    return terms


def initial_params(config, params: dict, read_run) -> dict:
    """`params` with params['dsd'] from the trained DSD of model.dsd_run (models.initial_params;
    `read_run` is checkpoints.read_run); `params` unchanged when dsd_run is ''.

    Raises:
      ValueError: one sentence: the run holds no readable checkpoint, is not a DSD (or SATN)
        run, or has another DSD field (`DSD_FIELDS`) or parameter shape than this config.
    """
    model = dsd.model_config(config)
    run = model.dsd_run
    if not run:
        if not model.finetune_dsd:
            logging.warning("SATN with model.dsd_run '' and model.finetune_dsd False: DSD stays "
                            "at its random initialisation.")  # fmt: skip
        return params
    if "dsd" not in params:  # FromPixels holds the model under params['inner']
        raise ValueError(f"model.dsd_run is '{run}', but a model with model.backbone does not "
                         "load a DSD run (expected model.dsd_run '' with a backbone).")  # fmt: skip
    try:
        saved, loaded = read_run(run)
    except Exception as error:  # a missing, damaged or foreign run: named in one sentence
        raise ValueError(f"model.dsd_run is '{run}', which holds no readable checkpoint "
                         f"({str(error).rstrip('.')}).") from error  # fmt: skip
    saved = saved if isinstance(saved, dict) else {}
    if saved.get("name") not in ("dsd", "satn") or "dsd" not in loaded:
        raise ValueError(f"model.dsd_run is '{run}', a run of model '{saved.get('name')}', "
                         "expected a DSD run (experiments/dsd.py).")  # fmt: skip
    for field in DSD_FIELDS:
        if saved.get(field) != model[field]:
            raise ValueError(f"model.dsd_run '{run}' trained DSD with model.{field} "
                             f"{saved.get(field)!r}, but this config has {model[field]!r}; "
                             "expected the same DSD fields.")  # fmt: skip
    return {**params, "dsd": _same_tree(run, loaded["dsd"], params["dsd"])}


def _same_tree(run: str, loaded: dict, initial: dict) -> dict:
    """`loaded` (a DSD's params) checked against the tree and shapes of `initial`, as its
    dtypes."""
    have, want = traverse_util.flatten_dict(loaded), traverse_util.flatten_dict(initial)
    for path in sorted(set(have) | set(want)):
        there, here = (tuple(np.shape(t[path])) if path in t else None for t in (have, want))
        if there != here:
            raise ValueError(f"model.dsd_run '{run}' has DSD parameter {'/'.join(path)} of "
                             f"shape {there}, this model {here} (features of "
                             "another dimension?); expected the same.")  # fmt: skip
    out = {path: jnp.asarray(have[path], want[path].dtype) for path in want}
    return traverse_util.unflatten_dict(out)

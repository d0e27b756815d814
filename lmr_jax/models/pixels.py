"""End-to-end models from pixels: a ResNet backbone per frame, then any sequence model.

    model = FromPixels(inner=lmr, depth=18)              # lmr: an LMR (VIBE, HMR) module
    params = model.init(rng, images)['params']           # images [B, T, H, W, 3]
    outputs = model.apply({'params': params}, images, train=True)   # params.smpl_outputs' dict

`images` are RGB normalised with ImageNet's mean and std (what the pipeline yields with
`inputs='frames'`). Each frame goes through the backbone on its own (the [B, T] axes folded into
one batch of B * T images), giving features [B, T, D] (D = 512 for ResNet-18/34 at width 64,
2048 for ResNet-50); the inner model maps them to its usual outputs.

Parameters: `params['backbone']` (the ResNet's), `params['backbone_stats']` (its BatchNorm
running means and variances) and `params['inner']`.

BatchNorm: always in inference mode, with the running statistics in `backbone_stats`. The train
state (lmr_jax/train.py: step, params, opt_state) carries no mutable collections, so BatchNorm
with batch statistics (resnet.py's bn_mode 'batch', which updates `batch_stats` in the step)
cannot train here; frozen BatchNorm is also the usual way to fine-tune a backbone on the small
per-device batches of video training. The statistics are kept in `params` (so checkpoints hold
them) behind `stop_gradient`: their gradients are exactly 0, so Adam and SGD leave them as they
are; weight decay would shrink them, and the config check refuses it with a backbone.

Modes (`mode`): 'frozen' stops the gradient at the backbone's features (nothing in it trains;
with zero gradients Adam leaves its weights as they are, and XLA drops the backbone's backward
pass); 'finetune' trains every backbone weight (convolutions, BatchNorm scale and bias), the
statistics staying fixed.

Initialisation: random (torchvision's: kaiming-normal convolutions, BatchNorm (1, 0), running
mean 0 and variance 1), or a PyTorch checkpoint (`weights`: a torchvision ResNet or SPIN's
checkpoint, read by lmr_jax.torch_weights.load_resnet when the parameters are initialised, not
when a trained model is applied).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmr_jax.models.resnet import DEPTHS, resnet

MODES = ("frozen", "finetune")


def default_backbone_config() -> ml_collections.ConfigDict:
    """The backbone fields of a model config (`config.model.backbone`).

    Fields: depth (torchvision's 18, 34, 50, 101, 152); width (channels of the stem, 64 as
    torchvision's; smaller for cheap tests); mode ('frozen' | 'finetune', see the module
    docstring); weights (a PyTorch ResNet checkpoint to start from, '' = random init).
    """
    return ml_collections.ConfigDict({"depth": 50, "width": 64, "mode": "frozen", "weights": ""})


class FromPixels(nn.Module):
    """Images [B, T, H, W, 3] -> a ResNet per frame -> features [B, T, D] -> `inner`.

    Attributes:
      inner: the sequence model on the features (LMR, VIBE, HMR: any module called as
        inner(features, train=...)).
      depth: the ResNet's depth.
      width: the ResNet's stem width.
      mode: 'frozen' or 'finetune'.
      weights: a PyTorch checkpoint for the backbone's initial variables, '' for random.
      dtype: compute dtype of the backbone.
    """

    inner: nn.Module
    depth: int = 50
    width: int = 64
    mode: str = "frozen"
    weights: str = ""
    dtype: Any = jnp.float32

    input_ndim = 5  # [B, T, H, W, 3]: lmr_jax.train.init_state builds its dummy input from it

    @property
    def dropout(self) -> float:  # lmr_jax.rngs.uses_dropout looks at the model's fields
        return getattr(self.inner, "dropout", 0.0)

    @property
    def regressor_dropout(self) -> float:
        return getattr(self.inner, "regressor_dropout", 0.0)

    @property
    def training_inputs(self) -> tuple[str, ...]:  # the batch fields the inner model reads
        return tuple(getattr(self.inner, "training_inputs", ()))

    def backbone(self) -> nn.Module:
        """The ResNet (unbound: its variables are passed explicitly), BatchNorm frozen."""
        return resnet(self.depth, width=self.width, bn_mode="frozen", dtype=self.dtype, parent=None)

    def initial_variables(self, rng: jax.Array, image_shape: tuple[int, ...]) -> dict:
        """The backbone's {'params', 'batch_stats'}: random, or `weights`' when set."""
        if self.weights:
            from lmr_jax import torch_weights  # reads the file; only when initialising

            variables = torch_weights.load_resnet(self.weights, self.depth)
            return jax.tree.map(jnp.asarray, variables)
        dummy = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        shapes = jax.eval_shape(self.backbone().init, rng, dummy)
        return random_resnet_variables(rng, shapes)

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False, **inputs) -> dict:
        """The inner model's outputs for normalised images [B, T, H, W, 3] (`inputs`: the
        batch fields of the inner model's `training_inputs`, passed on)."""
        if self.mode not in MODES:
            raise ValueError(f"model.backbone.mode is '{self.mode}', expected one of {MODES}.")
        if images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"FromPixels images have shape {tuple(images.shape)}, expected "
                             "[B, T, H, W, 3] (RGB frames).")  # fmt: skip
        batch, time = images.shape[:2]
        flat = images.reshape(batch * time, *images.shape[2:])
        shape = flat.shape[1:]
        params = self.param("backbone", lambda r: self.initial_variables(r, shape)["params"])
        stats = self.param(
            "backbone_stats", lambda r: self.initial_variables(r, shape)["batch_stats"]
        )
        variables = {"params": params, "batch_stats": jax.lax.stop_gradient(stats)}
        features = self.backbone().apply(variables, flat.astype(self.dtype), train=False)
        if self.mode == "frozen":
            features = jax.lax.stop_gradient(features)
        return self.inner(features.reshape(batch, time, -1), train=train, **inputs)


def random_resnet_variables(rng: jax.Array, shapes: dict) -> dict:
    """ResNet variables distributed as resnet.py initialises them, drawn in one normal draw.

    Convolution kernels [h, w, in, out] ~ N(0, 2 / (h w out)) (torchvision's kaiming-normal,
    fan-out), BatchNorm scale 1 and bias 0, running mean 0 and variance 1. ResNet.init draws
    each kernel with its own random-bit program; compiled on CPU those take about 20 s for a
    ResNet-18 (whatever its width), one draw sliced into every kernel well under one.

    Args:
      rng: the key.
      shapes: `jax.eval_shape` of the ResNet's init: {'params', 'batch_stats'} of shapes.

    Returns:
      {'params': ..., 'batch_stats': ...} of float32 arrays.
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    kernels = [leaf for path, leaf in paths if path[-1].key == "kernel"]
    draw = jax.random.normal(rng, (sum(leaf.size for leaf in kernels),), jnp.float32)
    leaves, offset = [], 0
    for path, leaf in paths:
        name = path[-1].key
        if name == "kernel":
            fan_out = leaf.shape[0] * leaf.shape[1] * leaf.shape[3]
            chunk = draw[offset : offset + leaf.size].reshape(leaf.shape)
            leaves.append(chunk * jnp.sqrt(2.0 / fan_out))
            offset += leaf.size
        else:  # BatchNorm: scale and running variance 1, bias and running mean 0
            leaves.append(
                jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)
            )
    return jax.tree.unflatten(treedef, leaves)


def check_backbone(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one sentence for a bad `model.backbone` config."""
    if int(config.depth) not in DEPTHS:
        raise ValueError(f"model.backbone.depth is {config.depth}, expected one of "
                         f"{tuple(DEPTHS)}.")  # fmt: skip
    if config.mode not in MODES:
        raise ValueError(f"model.backbone.mode is '{config.mode}', expected one of {MODES}.")
    if int(config.width) < 1:
        raise ValueError(f"model.backbone.width is {config.width}, expected a positive integer.")
    if config.weights and int(config.width) != 64:
        raise ValueError(f"model.backbone.width is {config.width}, but torch weights "
                         f"({config.weights}) are torchvision's width 64.")  # fmt: skip


def wrap(config: ml_collections.ConfigDict, body_model, build_inner) -> FromPixels:
    """The FromPixels model of a model config with a `backbone` section.

    Args:
      config: the model config; `backbone` describes the ResNet, the rest the inner model.
      body_model: the SMPL model (for the inner model).
      build_inner: builds the inner model from a config without `backbone`
        (lmr_jax.models.build_model).
    """
    backbone = config.backbone
    check_backbone(backbone)
    inner = ml_collections.ConfigDict(config.to_dict())
    del inner["backbone"]
    return FromPixels(
        inner=build_inner(inner, body_model),
        depth=int(backbone.depth),
        width=int(backbone.width),
        mode=backbone.mode,
        weights=backbone.weights,
        dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
    )

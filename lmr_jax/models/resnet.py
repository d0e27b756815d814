"""The image backbone: torchvision's ResNet (18, 34, 50, ...) in Flax linen, giving pooled features.

The architecture is torchvision's exactly, so that its weights (and SPIN's, whose HMR backbone is
torchvision's ResNet-50) load by name (lmr_jax.torch_weights.load_resnet): a 7x7/2 convolution
without bias, BatchNorm, ReLU, a 3x3/2 max pool with padding 1 (padded with -inf, as torch does),
four stages of BasicBlocks (18/34) or Bottlenecks (50+) with the stride in the 3x3 convolution
(torchvision's "v1.5", as SPIN), a 1x1 convolution + BatchNorm shortcut where the shape changes,
then a global average pool. Every padding is torch's symmetric `((p, p), (p, p))`: 'SAME' pads a
stride-2 convolution asymmetrically and shifts every feature map by one pixel.

    model = ResNet50()
    variables = model.init(rng, images)                  # {'params', 'batch_stats'}
    features = model.apply(variables, images)            # [N, 2048], inference (running stats)
    features, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])

`images` are [N, H, W, 3] float32 RGB normalised with ImageNet's mean and std (NHWC). BatchNorm in
training (`bn_mode`): 'batch' normalises with the batch statistics, averaged over the devices of
`axis_name` under pmap, and updates the running statistics with torch's momentum 0.1; 'frozen'
uses the running statistics and never updates them (the usual way to fine-tune on small batches).
One difference from torch, kept on purpose (flax's BatchNorm): the running variance is updated
with the biased batch variance, where torch uses the unbiased one; the factor n / (n - 1), n the
number of values per channel (at least 98 for batch 2 at 224 pixels), is at most 1 %.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

BLOCKS = ("basic", "bottleneck")
BN_MODES = ("batch", "frozen")
# torchvision's depths: (blocks per stage, block kind).
DEPTHS = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"),
    152: ((3, 8, 36, 3), "bottleneck"),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
# torchvision's kaiming_normal_(mode='fan_out', nonlinearity='relu'); BatchNorm starts at (1, 0).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    """torch's Conv2d(bias=False, padding=kernel // 2) in NHWC / HWIO."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        name=name,
    )


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock ('basic') or Bottleneck ('bottleneck', stride in the 3x3 conv).

    Attributes:
      planes: width of the block's inner convolutions (the output is planes * expansion).
      stride: stride of the block (1 or 2).
      kind: 'basic' or 'bottleneck'.
      norm: the BatchNorm factory (train/frozen mode and axis_name already bound).
      dtype: compute dtype of the convolutions.
    """

    planes: int
    stride: int
    kind: str
    norm: Callable[..., nn.Module]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[N, H, W, C] -> [N, H / stride, W / stride, planes * expansion]."""
        out_features = self.planes * _EXPANSION[self.kind]
        if self.kind == "basic":
            convs = [(self.planes, 3, self.stride), (self.planes, 3, 1)]
        else:
            convs = [(self.planes, 1, 1), (self.planes, 3, self.stride), (out_features, 1, 1)]
        y = x
        for i, (features, kernel, stride) in enumerate(convs, start=1):
            y = _conv(features, kernel, stride, self.dtype, name=f"conv{i}")(y)
            y = self.norm(name=f"bn{i}")(y)
            if i < len(convs):
                y = nn.relu(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:  # torchvision's `downsample`
            shortcut = _conv(out_features, 1, self.stride, self.dtype, name="downsample_conv")(x)
            shortcut = self.norm(name="downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """torchvision's ResNet without its classifier: images -> average-pooled features.

    Submodules are named after torchvision's state-dict keys (`conv1`, `bn1`, `layer1_0` for
    `layer1.0`, inside a block `conv1`..`conv3`, `bn1`..`bn3`, `downsample_conv` / `downsample_bn`
    for `downsample.0` / `downsample.1`), which torch_weights.load_resnet relies on.

    Attributes:
      stage_sizes: blocks per stage; stage i has width `width` * 2**i and stride 2 from the second
        on.
      block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50 and deeper).
      bn_mode: BatchNorm with `train=True`: 'batch' (batch statistics, running ones updated;
        call apply with mutable=['batch_stats']) or 'frozen' (running statistics, no update).
      axis_name: with bn_mode 'batch' under pmap, the axis over which batch statistics are averaged
        (None: per-device statistics).
      dtype: compute dtype of the convolutions and normalisation (parameters stay float32, the
        features are returned in float32).
      width: channels of the stem and of the first stage (torchvision's 64; torch weights load
        only at 64). Smaller widths make cheap backbones for tests.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    bn_mode: str = "batch"
    axis_name: str | None = None
    dtype: Any = jnp.float32
    width: int = 64

    @property
    def num_features(self) -> int:
        """Width of the pooled features (512 for basic blocks, 2048 for bottlenecks, 4 stages)."""
        return self.width * 2 ** (len(self.stage_sizes) - 1) * _EXPANSION[self.block]

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Pooled features of normalised images.

        Args:
          images: [N, H, W, 3] RGB normalised with ImageNet's mean and std.
          train: training mode (BatchNorm as `bn_mode` says); inference uses running statistics.

        Returns:
          [N, num_features] float32.
        """
        self._check(images)
        batch_stats = train and self.bn_mode == "batch"
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not batch_stats,
            momentum=0.9,  # flax's decay of the running average: torch's momentum 0.1
            epsilon=1e-5,
            dtype=self.dtype,
            axis_name=self.axis_name if batch_stats else None,
        )
        x = _conv(self.width, 7, 2, self.dtype, name="conv1")(images)
        x = nn.relu(norm(name="bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # -inf padding
        for stage, num_blocks in enumerate(self.stage_sizes):
            for index in range(num_blocks):
                x = ResidualBlock(
                    planes=self.width * 2**stage,
                    stride=2 if stage > 0 and index == 0 else 1,
                    kind=self.block,
                    norm=norm,
                    dtype=self.dtype,
                    name=f"layer{stage + 1}_{index}",
                )(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))

    def _check(self, images: jnp.ndarray) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"ResNet block is '{self.block}', expected one of {BLOCKS}.")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"ResNet bn_mode is '{self.bn_mode}', expected one of {BN_MODES}.")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ResNet images have shape {tuple(images.shape)}, expected "
                             "[N, H, W, 3] (NHWC RGB).")  # fmt: skip


class ResNet18(ResNet):
    """torchvision's ResNet-18 backbone: [N, H, W, 3] -> [N, 512]."""

    stage_sizes: Sequence[int] = DEPTHS[18][0]
    block: str = DEPTHS[18][1]


class ResNet34(ResNet):
    """torchvision's ResNet-34 backbone: [N, H, W, 3] -> [N, 512]."""

    stage_sizes: Sequence[int] = DEPTHS[34][0]
    block: str = DEPTHS[34][1]


class ResNet50(ResNet):
    """torchvision's (and SPIN's) ResNet-50 backbone: [N, H, W, 3] -> [N, 2048]."""

    stage_sizes: Sequence[int] = DEPTHS[50][0]
    block: str = DEPTHS[50][1]


def resnet(depth: int, **attributes) -> ResNet:
    """The ResNet of a torchvision depth (18, 34, 50, 101 or 152).

    Args:
      depth: the depth.
      **attributes: other ResNet attributes (bn_mode, axis_name, dtype, width).

    Returns:
      The module (ResNet18 / ResNet34 / ResNet50 for those depths).
    """
    classes = {18: ResNet18, 34: ResNet34, 50: ResNet50}
    if depth in classes:
        return classes[depth](**attributes)
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth is {depth}, expected one of {tuple(DEPTHS)}.")
    stage_sizes, block = DEPTHS[depth]
    return ResNet(stage_sizes=stage_sizes, block=block, **attributes)

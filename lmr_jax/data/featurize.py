"""The featurizer: a fixed, seeded map from noisy 2D keypoints (+ a facing cue) to frame features.

Real lmr_jax inputs are image features (VIBE's 2048-d SPIN features). The synthetic benchmark
replaces the image with its 2D observations, so that a model sees what an image encoder would
give it and nothing more. `featurize` is that stand-in; it applies to any sequence with `vibe49`
2D keypoints, so real 2D annotations can be featurized the same way.

The map, per frame (everything float32, weights fixed by `seed`):

1. Inputs u (148 numbers): the 49 keypoints' crop coordinates x, y (in [-1, 1], zeroed where the
   confidence is 0) divided by 0.5, joint-major (98); the confidences c as 2c - 1 (49); the
   facing cue (1; 0 when unknown). Coordinates are not re-centred or re-scaled per frame, so
   the camera (scale and translation) stays recoverable from the features.
2. Three blocks, concatenated in this order (D_lin = D // 4, D_rff = D // 2, D_relu = the rest):
   * linear:  u @ A,                      A ~ N(0, 1/148)          [D_lin]
   * Fourier: sqrt(2) * cos(2 u @ B + b), B ~ N(0, 1/148), b ~ U(0, 2 pi)  [D_rff]
   * ReLU:    sqrt(2) * relu(u @ C + c),  C ~ N(0, 1/148), c ~ N(0, 0.25^2)  [D_relu]
   Each block has roughly unit second moment. With D_lin >= 148 (D >= 592) the linear block
   alone has full column rank, so the 2D keypoints are exactly recoverable by a linear layer;
   the nonlinear blocks make the features look like an embedding rather than coordinates.

No 3D information enters except through the facing cue: two videos with the same noisy 2D
observations and cue get identical features whatever their depths.
"""

from __future__ import annotations

import functools

import numpy as np

NUM_KEYPOINTS = 49  # the vibe49 layout
NUM_INPUTS = NUM_KEYPOINTS * 3 + 1
XY_SCALE = 0.5
RFF_BANDWIDTH = 2.0
DEFAULT_DIM = 2048


def block_sizes(dim: int) -> tuple[int, int, int]:
    """(linear, Fourier, ReLU) block widths of a `dim`-dimensional feature."""
    if dim < 4:
        raise ValueError(f"feature dimension {dim} is too small, expected at least 4.")
    return dim // 4, dim // 2, dim - dim // 4 - dim // 2


@functools.lru_cache(maxsize=8)
def featurizer_weights(dim: int = DEFAULT_DIM, seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed weights of the featurizer (see the module docstring), float32.

    Args:
      dim: feature dimension D.
      seed: the featurizer's seed; datasets record it in their metadata.

    Returns:
      {'A': [148, D_lin], 'B': [148, D_rff], 'b': [D_rff], 'C': [148, D_relu], 'c': [D_relu]}.
    """
    lin, rff, relu = block_sizes(dim)
    rng = np.random.default_rng([seed, dim])
    std = 1.0 / np.sqrt(NUM_INPUTS)
    weights = {
        "A": rng.normal(0.0, std, size=(NUM_INPUTS, lin)),
        "B": rng.normal(0.0, std, size=(NUM_INPUTS, rff)) * RFF_BANDWIDTH,
        "b": rng.uniform(0.0, 2 * np.pi, size=rff),
        "C": rng.normal(0.0, std, size=(NUM_INPUTS, relu)),
        "c": rng.normal(0.0, 0.25, size=relu),
    }
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    for value in weights.values():
        value.flags.writeable = False  # shared through the cache
    return weights


def featurizer_inputs(kp2d: np.ndarray, facing: np.ndarray | None = None) -> np.ndarray:
    """The 148 normalised inputs u of the featurizer.

    Args:
      kp2d: [..., 49, 3] crop-normalised x, y and confidence in [0, 1].
      facing: [...] facing cue (1 front, -1 back), or None for unknown (zeros).

    Returns:
      [..., 148] float32.
    """
    kp2d = np.asarray(kp2d, np.float32)
    if kp2d.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(
            f"featurize: kp2d has shape {kp2d.shape}, expected [..., {NUM_KEYPOINTS}, 3] "
            "(vibe49 x, y, confidence)."
        )
    batch = kp2d.shape[:-2]
    if facing is None:
        facing = np.zeros(batch, np.float32)
    facing = np.asarray(facing, np.float32)
    if facing.shape != batch:
        raise ValueError(f"featurize: facing has shape {facing.shape}, expected {batch}.")
    conf = kp2d[..., 2]
    xy = kp2d[..., :2] * (conf > 0)[..., None] / XY_SCALE  # missing points carry no position
    return np.concatenate(
        [xy.reshape(*batch, 2 * NUM_KEYPOINTS), 2.0 * conf - 1.0, facing[..., None]], axis=-1
    ).astype(np.float32)


def featurize(
    kp2d: np.ndarray, facing: np.ndarray | None = None, *, dim: int = DEFAULT_DIM, seed: int = 0
) -> np.ndarray:
    """Per-frame features from 2D keypoints and a facing cue (the map of the module docstring).

    Args:
      kp2d: [..., 49, 3] vibe49 keypoints: crop-normalised x, y in [-1, 1] and confidence.
      facing: [...] facing cue, or None when unknown (e.g. real 2D annotations).
      dim: feature dimension D (2048 as VIBE's SPIN features; small in tests).
      seed: the featurizer's seed.

    Returns:
      [..., dim] float32 features of roughly unit scale.
    """
    u = featurizer_inputs(kp2d, facing)
    w = featurizer_weights(int(dim), int(seed))
    linear = u @ w["A"]
    fourier = np.sqrt(2.0, dtype=np.float32) * np.cos(u @ w["B"] + w["b"])
    relu = np.sqrt(2.0, dtype=np.float32) * np.maximum(u @ w["C"] + w["c"], 0.0)
    return np.concatenate([linear, fourier, relu], axis=-1).astype(np.float32)

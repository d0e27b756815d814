"""Key maps of PyTorch checkpoints onto our models: torchvision's ResNet, SPIN's regressor, VIBE.

`load_resnet` turns a torchvision ResNet state dict (also SPIN's checkpoint, whose 'model' holds
the ResNet-50 and the HMR regressor, and DataParallel's 'module.' keys) into models.resnet
variables (`resnet_checkpoint` also reads the depth off the keys); `load_spin_regressor` turns
SPIN's regressor into HMRRegressor parameters; `load_vibe` turns VIBE's released generator into
our VIBE-style model and its parameters (its key map lives in torch_maps.py). `find_state_dict`
finds the state dict inside a checkpoint's containers.

The files themselves are read without torch by torch_pickle.py (a restricted unpickler, torch's
zip and legacy formats); `read_checkpoint`, `CheckpointError` and `UnsafeCheckpointError` are
re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import vibe
from lmr_jax.models.hmr import HMRRegressor
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams
from lmr_jax.models.resnet import DEPTHS, ResNet, resnet
from lmr_jax.torch_pickle import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    CheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
)

__all__ = [
    "LEGACY_MAGIC",
    "LEGACY_PROTOCOL",
    "CheckpointError",
    "UnsafeCheckpointError",
    "read_checkpoint",
    "find_state_dict",
    "resnet_torch_shapes",
    "resnet_variables",
    "resnet_depth",
    "load_resnet",
    "resnet_checkpoint",
    "spin_regressor_params",
    "load_spin_regressor",
    "load_vibe",
]


# ---------------------------------------------------------------------------------------------
# Finding a state dict
# ---------------------------------------------------------------------------------------------


def find_state_dict(checkpoint: Any, wanted: Callable[[str], bool], what: str, source: str):
    """The state dict of a checkpoint: at the top level, or under 'model' or 'state_dict'.

    DataParallel's 'module.' prefix is removed from the keys.

    Args:
      checkpoint: what read_checkpoint returned.
      wanted: tells a key (without 'module.') of the state dict looked for.
      what: the kind of state dict, for the error message ('torchvision ResNet').
      source: the file's name, for the error message.

    Returns:
      {key: array} of the first candidate with a wanted key.

    Raises:
      CheckpointError: no candidate has a wanted key.
    """
    candidates = [checkpoint]
    if isinstance(checkpoint, Mapping):
        candidates += [checkpoint.get(name) for name in ("model", "state_dict")]
    for candidate in candidates:
        if isinstance(candidate, Mapping):
            state = {_strip_module(k): v for k, v in candidate.items() if isinstance(k, str)}
            if any(wanted(key) for key in state):
                return state
    keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else []
    raise CheckpointError(f"'{source}' holds no {what} state dict (looked at the top level and "
                          f"under 'model' and 'state_dict'; top-level keys: "
                          f"{', '.join(keys[:8]) or type(checkpoint).__name__}).")  # fmt: skip


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _array(state: Mapping, key: str, source: str, shape: tuple[int, ...], what: str):
    """state[key] as float32, checked against `shape`; a missing key or a bad shape names it."""
    if key not in state:
        raise CheckpointError(f"'{source}' has no '{key}', which {what} needs.")
    value = state[key]
    if not isinstance(value, np.ndarray):
        kind = type(value).__name__
        raise CheckpointError(f"'{source}': '{key}' is a {kind}, expected a tensor.")
    if value.shape != shape:
        raise CheckpointError(f"'{source}': '{key}' has shape {value.shape}, expected {shape} "
                              f"for {what}.")  # fmt: skip
    return value.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# torchvision's ResNet
# ---------------------------------------------------------------------------------------------

_RESNET_KEY = re.compile(r"(conv1|bn1|layer\d+)\.")
_RESNET_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _torch_module_name(name: str) -> str:
    """models.resnet's submodule name -> torchvision's ('layer1_0' -> 'layer1.0')."""
    if re.fullmatch(r"layer\d+_\d+", name):
        return name.replace("_", ".")
    return {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(name, name)


def _torchvision_order(key: str) -> tuple:
    """Sort key of torchvision's state-dict order: modules as the network runs them (conv1, bn1,
    layer1..4; in a block conv1, bn1, ..., downsample), then weight, bias, running_mean/var."""
    *modules, leaf = key.split(".")
    rank = []
    for name in modules:
        kind, number = re.fullmatch(r"([a-z]*)(\d*)", name).groups()
        offset = {"": 0, "conv": 0, "bn": 0, "layer": 100, "downsample": 1000}[kind]
        rank.append((offset + int(number or 0), int(kind == "bn")))
    return (*rank, (("weight", "bias", "running_mean", "running_var").index(leaf), 0))


def _resnet(depth: int | ResNet) -> tuple[ResNet, str]:
    """(the module, its name for messages) of a torchvision depth or a ResNet module."""
    if isinstance(depth, ResNet):
        return depth, f"a {depth.block} ResNet with stages {tuple(depth.stage_sizes)}"
    if depth not in DEPTHS:
        raise CheckpointError(f"ResNet depth is {depth}, expected one of {tuple(DEPTHS)}.")
    return resnet(depth), f"a torchvision ResNet-{depth}"


def resnet_torch_shapes(depth: int | ResNet = 50) -> dict[str, tuple[tuple[str, ...], tuple]]:
    """torchvision's ResNet state-dict keys (without fc and num_batches_tracked) in torchvision's
    order, derived from models.resnet's variables by abstract evaluation (nothing is allocated).

    Args:
      depth: 18, 34, 50, 101 or 152, or a models.resnet.ResNet of any stage sizes.

    Returns:
      {torch key: (flax variable path, torch shape)}, e.g. 'layer1.0.conv1.weight':
      (('params', 'layer1_0', 'conv1', 'kernel'), (64, 64, 1, 1)); conv weights are OIHW.
    """
    model, _ = _resnet(depth)
    return _torch_shapes(tuple(model.stage_sizes), model.block)


@functools.cache
def _torch_shapes(stage_sizes: tuple[int, ...], block: str) -> dict:
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    model = ResNet(stage_sizes=stage_sizes, block=block)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    shapes = {}
    for path, leaf in traverse_util.flatten_dict(variables).items():
        leaf_name = _RESNET_LEAVES[(path[0], path[-1])]
        key = ".".join([*map(_torch_module_name, path[1:-1]), leaf_name])
        shape = tuple(leaf.shape)
        shapes[key] = (path, (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape)
    return {key: shapes[key] for key in sorted(shapes, key=_torchvision_order)}


def resnet_variables(state: Mapping[str, Any], depth: int | ResNet = 50, source: str = "") -> dict:
    """models.resnet variables from a torchvision ResNet state dict (keys without 'module.').

    `fc.*`, `num_batches_tracked` and keys of other modules (SPIN's regressor) are ignored.

    Args:
      state: {torchvision key: array}.
      depth: the ResNet's depth (18, 34, 50, 101, 152), or a models.resnet.ResNet of any stage
        sizes named as torchvision names its layers.
      source: the file's name, for error messages.

    Returns:
      {'params': ..., 'batch_stats': ...} of `models.resnet.resnet(depth)`, float32 numpy arrays
      (conv kernels HWIO).

    Raises:
      CheckpointError: naming a missing key, a key of unexpected shape, or a ResNet key that
        this depth does not have.
    """
    _, what = _resnet(depth)
    expected = resnet_torch_shapes(depth)
    for key in state:
        if _RESNET_KEY.match(key) and key not in expected:
            if not key.endswith(".num_batches_tracked"):
                raise CheckpointError(f"'{source}' has '{key}', which {what} does not have "
                                      "(is the checkpoint of another depth?).")  # fmt: skip
    missing = [key for key in expected if key not in state]
    if len(missing) > 1:
        raise CheckpointError(f"'{source}' has no '{missing[0]}' (nor {len(missing) - 1} other "
                              f"keys) of {what}; is the checkpoint of another depth?")  # fmt: skip
    flat = {}
    for key, (path, shape) in expected.items():
        value = _array(state, key, source, shape, what)
        flat[path] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
    return traverse_util.unflatten_dict(flat)


_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.(conv\d+)\.weight$")


def resnet_depth(state: Mapping[str, Any], source: str = "") -> int:
    """The torchvision depth of a ResNet state dict, read off its keys (keys without 'module.').

    The blocks per stage are the `layerS.B.` indices, the block kind is 'bottleneck' when a
    block has a `conv3`; the pair must be one of models.resnet.DEPTHS.

    Args:
      state: {torchvision key: array}, e.g. from find_state_dict.
      source: the file's name, for the error message.

    Returns:
      18, 34, 50, 101 or 152.

    Raises:
      CheckpointError: the keys describe no torchvision depth (naming what they describe).
    """
    blocks: dict[int, int] = {}
    bottleneck = False
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
            bottleneck = bottleneck or match.group(3) == "conv3"
    stages = tuple(blocks.get(s, 0) for s in range(1, max(blocks, default=0) + 1))
    kind = "bottleneck" if bottleneck else "basic"
    for depth, spec in DEPTHS.items():
        if spec == (stages, kind):
            return depth
    raise CheckpointError(f"'{source}' holds a ResNet of {kind} blocks with {stages or 'no'} "
                          f"blocks per stage, which is none of torchvision's depths "
                          f"{tuple(DEPTHS)}.")  # fmt: skip


def load_resnet(path: str, depth: int = 50) -> dict:
    """Variables of `models.resnet.ResNet50` (or another depth) from a PyTorch checkpoint.

    Accepts a torchvision ResNet state dict at the top level of the file, under 'model' (SPIN's
    checkpoint, whose regressor keys are ignored) or 'state_dict', with or without DataParallel's
    'module.' prefix.

        variables = load_resnet('spin_model_checkpoint.pth.tar')
        features = ResNet50().apply(variables, images)   # [N, 2048]

    Args:
      path: the .pth / .pth.tar / .pt file.
      depth: the ResNet's depth (18, 34, 50, 101, 152).

    Returns:
      {'params': ..., 'batch_stats': ...}, float32 numpy arrays.

    Raises:
      CheckpointError (a ValueError): the file cannot be read, or holds no ResNet state dict, or
        a key is missing, of unexpected shape or unknown (the message names it).
    """
    checkpoint = read_checkpoint(path)
    state = find_state_dict(checkpoint, _RESNET_KEY.match, "torchvision ResNet", path)
    return resnet_variables(state, depth, path)


def resnet_checkpoint(path: str) -> tuple[int, dict]:
    """The depth and variables of a PyTorch ResNet checkpoint whose depth is read off its keys.

    Same files as load_resnet (SPIN's checkpoint, a torchvision state dict, ...).

        depth, variables = resnet_checkpoint('spin_model_checkpoint.pth.tar')  # 50, {...}
        features = models.resnet.resnet(depth).apply(variables, images)

    Raises:
      CheckpointError (a ValueError): as load_resnet, or keys of no torchvision depth.
    """
    checkpoint = read_checkpoint(path)
    state = find_state_dict(checkpoint, _RESNET_KEY.match, "torchvision ResNet", path)
    depth = resnet_depth(state, path)
    return depth, resnet_variables(state, depth, path)


# ---------------------------------------------------------------------------------------------
# SPIN's HMR regressor
# ---------------------------------------------------------------------------------------------

_NUM_PARAMS = 6 * NUM_JOINTS + NUM_BETAS + 3  # SPIN's xc = cat([features, pose, shape, cam])
_SPIN_HEADS = {"decpose": 6 * NUM_JOINTS, "decshape": NUM_BETAS, "deccam": 3}


def spin_regressor_params(
    state: Mapping[str, Any], source: str = "", prefix: str = ""
) -> tuple[dict, MeanParams | None]:
    """HMRRegressor parameters from SPIN's regressor (`fc1, fc2, decpose, decshape, deccam`).

    SPIN's `fc1` takes cat([features, pose6d (144), shape (10), cam (3)]); its weight [H, D + 157]
    splits into our fc1's hoisted feature projection (the first D inputs) and its parameter
    projection (the rest, in the same order: 24 joints x 6D in SPIN's row-major (3, 2) layout,
    then shape, then camera). torch Linear weights [out, in] become Flax kernels [in, out].

    Args:
      state: a state dict (keys without 'module.').
      source: the file's name, for error messages.
      prefix: the regressor's key prefix ('' in SPIN, 'regressor.' in VIBE's generator).

    Returns:
      (params of HMRRegressor(hidden_size=H) for D-dimensional features, the mean parameters of
      SPIN's `init_pose / init_shape / init_cam` buffers, or None when the state has none).

    Raises:
      CheckpointError: naming a missing key or a key of unexpected shape.
    """
    what = "SPIN's regressor"
    if prefix + "fc1.weight" not in state:
        raise CheckpointError(f"'{source}' has no '{prefix}fc1.weight', which {what} needs.")
    shape = np.shape(state[prefix + "fc1.weight"])
    hidden, dim = (shape[0], shape[1] - _NUM_PARAMS) if len(shape) == 2 else (0, 0)
    if dim < 1:
        raise CheckpointError(f"'{source}': '{prefix}fc1.weight' has shape {shape}, "
                              f"expected [H, D + {_NUM_PARAMS}] with D >= 1.")  # fmt: skip

    def linear(name: str, fan_out: int, fan_in: int) -> tuple[np.ndarray, np.ndarray]:
        w = _array(state, f"{prefix}{name}.weight", source, (fan_out, fan_in), what)
        return w.T, _array(state, f"{prefix}{name}.bias", source, (fan_out,), what)

    fc1_kernel, fc1_bias = linear("fc1", hidden, dim + _NUM_PARAMS)
    fc2_kernel, fc2_bias = linear("fc2", hidden, hidden)
    params = {
        "fc1": {
            "static_projection": {"kernel": fc1_kernel[:dim], "bias": fc1_bias},
            "dynamic_projection": {"kernel": fc1_kernel[dim:]},
        },
        "fc2": {"kernel": fc2_kernel, "bias": fc2_bias},
    }
    for name, width in _SPIN_HEADS.items():
        kernel, bias = linear(name, width, hidden)
        params[name] = {"kernel": kernel, "bias": bias}
    _check_regressor_tree(params, hidden, dim)
    buffers = {"pose": 6 * NUM_JOINTS, "shape": NUM_BETAS, "cam": 3}
    if not any(f"{prefix}init_{name}" in state for name in buffers):
        return params, None
    means = {
        name: _array(state, f"{prefix}init_{name}", source, (1, size), what).reshape(-1)
        for name, size in buffers.items()
    }
    mean_params = MeanParams(
        pose6d=tuple(map(float, means["pose"])),
        shape=tuple(map(float, means["shape"])),
        cam=tuple(map(float, means["cam"])),
    )
    return params, mean_params


def _check_regressor_tree(params: dict, hidden: int, dim: int) -> None:
    """The mapped tree must be HMRRegressor's own (names and shapes), or hmr.py has changed."""
    features = jax.ShapeDtypeStruct((1, dim), jnp.float32)
    abstract = jax.eval_shape(HMRRegressor(hidden_size=hidden).init, jax.random.key(0), features)
    expected = jax.tree.map(lambda leaf: leaf.shape, abstract["params"])
    if jax.tree.map(np.shape, params) != expected:
        raise AssertionError("SPIN's regressor map no longer matches HMRRegressor's parameters.")


def load_spin_regressor(path: str) -> tuple[dict, MeanParams | None]:
    """SPIN's HMR regressor from its checkpoint, as HMRRegressor parameters and mean parameters.

    Into the per-frame HMR model (models.hmr.HMR, whose regressor is the submodule 'regressor'):

        regressor, mean_params = load_spin_regressor('model_checkpoint.pt')
        model = HMR(body_model, mean_params=mean_params,
                    regressor_hidden=regressor['fc2']['kernel'].shape[0])
        outputs = model.apply({'params': {'regressor': regressor}}, features)  # [B, T, 2048]

    Args:
      path: SPIN's checkpoint (its 'model' dict), or a file holding that state dict itself.

    Returns:
      See spin_regressor_params.

    Raises:
      CheckpointError (a ValueError): the file cannot be read, holds no regressor, or a key is
        missing or of unexpected shape (the message names it).
    """
    checkpoint = read_checkpoint(path)
    state = find_state_dict(checkpoint, lambda k: k.startswith("fc1."), "SPIN regressor", path)
    return spin_regressor_params(state, path)


# ---------------------------------------------------------------------------------------------
# VIBE's generator
# ---------------------------------------------------------------------------------------------


def load_vibe(
    path: str,
    body_model: smpl_lib.SMPLModel | None = None,
    *,
    use_residual: bool = True,
    joint_layout: str = "vibe49",
):
    """VIBE's released generator (`vibe_model_w_3dpw.pth.tar`, `vibe_model_wo_3dpw.pth.tar`) as
    our VIBE-style model, built to the checkpoint's own architecture, and its parameters.

        model, params = load_vibe('vibe_model_wo_3dpw.pth.tar', smpl.load(SMPL_DIR))
        outputs = model.apply({'params': params}, features)   # SPIN features [B, T, 2048]
        outputs['rotmats'], outputs['betas'], outputs['cam']  # VIBE's final iteration

    The GRU's hidden size, layers and direction, the encoder's linear layer and the regressor's
    width come from the state dict's shapes, the mean parameters from its `regressor.init_pose /
    init_shape / init_cam` buffers. The SMPL arrays under `regressor.smpl.*`, the optimizer
    states and the motion discriminator are skipped (see torch_maps).

    Args:
      path: the .pth.tar file ('gen_state_dict' inside, or a bare generator state dict).
      body_model: the SMPL model of the outputs' meshes and joints (None: smpl.resolve(), i.e.
        $LMR_JAX_SMPL_DIR or the procedural body). The rotation matrices, betas and camera do not
        depend on it.
      use_residual: VIBE's `use_residual`, which a state dict cannot tell (True, as in VIBE's
        released models).
      joint_layout: layout of the `joints3d` / `kp2d` outputs.

    Returns:
      (models.vibe.VIBE, its params {'encoder': ..., 'regressor': ...} as float32 numpy arrays).

    Raises:
      CheckpointError (a ValueError): the file cannot be read or holds no VIBE generator, or a key
        is missing, of unexpected shape or not VIBE's (the message names it).
    """
    from lmr_jax import torch_maps  # it imports this module, so not at the top

    state = torch_maps.vibe_generator_state(read_checkpoint(path), path)
    config, params, mean_params = torch_maps.vibe_params(state, path, use_residual)
    config.joint_layout = joint_layout
    body_model = smpl_lib.resolve() if body_model is None else body_model
    model = vibe.build(config, body_model).clone(mean_params=mean_params)
    return model, params

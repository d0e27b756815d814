"""Reading PyTorch checkpoints without PyTorch, and the key maps of torchvision's ResNet and SPIN.

`read_checkpoint(path)` reads what `torch.save` wrote, in either of torch's formats, into plain
Python containers whose tensors are numpy arrays:

- the zip format (torch >= 1.6): `<archive>/data.pkl` is the object pickle, each tensor's storage a
  raw record `<archive>/data/<key>` named by the pickle's persistent id
  ('storage', storage_type, key, location, numel);
- the legacy format (older files, e.g. checkpoints released in 2019-2020): a run of pickles, the
  magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys-info dict, the object
  pickle with persistent ids ('storage', storage_type, root_key, location, numel, view_metadata),
  the sorted list of storage keys, then per key an int64 element count and the raw bytes.

Tensors are rebuilt from `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
with their offset and strides. Unpickling is restricted to an allow-list of globals (containers,
torch's tensor rebuild functions, storage types and dtypes, numpy scalars and arrays): anything
else, os.system or a class of the model's code, is refused with `UnsafeCheckpointError` before it
runs.
(torch.load(weights_only=True) follows the same idea; this reader never imports torch.)

The key maps: `load_resnet` turns a torchvision ResNet state dict (also SPIN's checkpoint, whose
'model' holds the ResNet-50 and the HMR regressor, and DataParallel's 'module.' keys) into
models.resnet variables (`resnet_checkpoint` also reads the depth off the keys);
`load_spin_regressor` turns SPIN's regressor into HMRRegressor parameters; `load_vibe` turns
VIBE's released generator into our VIBE-style model and its parameters (its key map lives in
torch_maps.py).
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import os
import pickle
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lmr_jax import smpl as smpl_lib
from lmr_jax.models import build_model
from lmr_jax.models.hmr import HMRRegressor
from lmr_jax.models.params import NUM_BETAS, NUM_JOINTS, MeanParams
from lmr_jax.models.resnet import DEPTHS, ResNet, resnet

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """A PyTorch checkpoint that cannot be read or mapped; the message names the file or key."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks for a global outside the allow-list (it could run code)."""


class _Problem(Exception):
    """A malformed file, reported by read_checkpoint with the file's name."""


class _Refused(Exception):
    """A forbidden global or object, reported by read_checkpoint as UnsafeCheckpointError."""


# ---------------------------------------------------------------------------------------------
# The allow-list
# ---------------------------------------------------------------------------------------------


def _bfloat16() -> np.dtype:
    import ml_dtypes  # installed with jax

    return np.dtype(ml_dtypes.bfloat16)


_STORAGE_DTYPES = {  # torch's legacy storage classes, as pickled in persistent ids
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}
_TORCH_DTYPES = {  # torch.float32 etc. pickle as the global torch.<name>
    "float32": np.float32,
    "float": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "float16": np.float16,
    "half": np.float16,
    "bfloat16": _bfloat16,
    "int64": np.int64,
    "long": np.int64,
    "int32": np.int32,
    "int": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


def _dtype(spec) -> np.dtype:
    return spec() if callable(spec) and not isinstance(spec, type) else np.dtype(spec)


class _StorageType:
    """A torch storage class (torch.FloatStorage ...), standing for its numpy dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class _TorchDtype:
    """A torch dtype (torch.float32 ...), unpickled as its numpy dtype."""

    def __init__(self, spec):
        self.spec = spec


class _TensorType:
    """torch.Tensor or torch.nn.Parameter, only ever passed to _rebuild_from_type_v2."""


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """torch._utils._rebuild_tensor(_v2): the strided view of a storage, as an owned array."""
    if storage is None:  # the first pass over a legacy file, before its storages are read
        return None
    if not (isinstance(storage_offset, int) and storage_offset >= 0):
        raise _Problem(f"a tensor has storage offset {storage_offset!r}")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or any(not isinstance(v, int) or v < 0 for v in size + stride):
        raise _Problem(f"a tensor has size {size} and stride {stride}")
    if 0 not in size:
        end = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if end >= storage.size:
            raise _Problem(f"a tensor of size {size}, stride {stride} and offset "
                           f"{storage_offset} reaches past its storage of {storage.size} "
                           "elements")  # fmt: skip
    base = storage[storage_offset:] if 0 not in size else storage[:0]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    tensor = np.empty(size, dtype=storage.dtype.newbyteorder("="))  # native order, owned
    tensor[...] = view
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: a tensor (sub)class wrapped around a rebuild."""
    if not isinstance(new_type, _TensorType):
        raise _Refused(f"asks to rebuild a tensor as {new_type!r}")
    return func(*args)


def _latin1_bytes(text, encoding="latin1"):
    """_codecs.encode, which protocol-2 pickles use for bytes objects."""
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise _Refused(f"asks for _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _numpy_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise _Refused("asks for a numpy object dtype")
    return dtype


def _numpy_scalar(dtype, data=None):
    if not (isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(data, bytes)):
        raise _Refused("asks for a numpy scalar that is not plain numbers")
    return np.frombuffer(data, dtype=dtype, count=1).reshape(())[()]


def _numpy_reconstruct(subtype, shape, typecode):
    # The array's content comes in BUILD through ndarray.__setstate__, with its dtype made by
    # _numpy_dtype: object arrays, whose state would hold arbitrary objects, cannot be built.
    if subtype is not np.ndarray:
        raise _Refused(f"asks for a numpy array of type {subtype!r}")
    return np.ndarray(shape, dtype=_numpy_dtype(typecode))


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    tensor_type = _TensorType()
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): tensor_type,
        ("torch.nn.parameter", "Parameter"): tensor_type,
        ("torch", "Size"): tuple,
        ("torch", "device"): lambda *spec: ":".join(str(part) for part in spec),
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _latin1_bytes,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2
        allowed[(core, "scalar")] = _numpy_scalar
        allowed[(core, "_reconstruct")] = _numpy_reconstruct
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    for name, dtype in _TORCH_DTYPES.items():
        allowed[("torch", name)] = _TorchDtype(dtype)
    return allowed


class _Unpickler(pickle.Unpickler):
    """pickle's Unpickler restricted to the allow-list, with torch's storages as persistent ids.

    Args:
      file: the binary stream of one pickle.
      storage: (key, dtype, numel) -> the storage's 1-D array, or None (a first, dry pass).
    """

    def __init__(self, file, storage: Callable[[str, np.dtype, int], np.ndarray | None] | None):
        super().__init__(file, encoding="utf-8")  # as torch.load, for Python 2 strings
        self._storage = storage

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles written by Python 2 name `__builtin__` etc.; pickle maps those names
        # in the find_class this overrides.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _allowed_globals().get((module, name))
        if found is None:
            raise _Refused(f"asks for the Python global '{module}.{name}', which is not on "
                           "the allow-list of a weights file (containers, numbers, "
                           "tensors)")  # fmt: skip
        return _dtype(found.spec) if isinstance(found, _TorchDtype) else found

    def persistent_load(self, pid):
        if self._storage is None or not (isinstance(pid, tuple) and len(pid) in (5, 6)):
            raise _Problem(f"it has an unknown persistent id {str(pid)[:60]}")
        kind, storage_type, key, _, numel = (_text(part) for part in pid[:5])
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise _Problem(f"it has an unknown persistent id {str(pid)[:60]}")
        if not isinstance(numel, int) or numel < 0:
            raise _Problem(f"storage '{key}' has {numel!r} elements")
        array = self._storage(str(key), _dtype(storage_type.dtype), numel)
        view = pid[5] if len(pid) == 6 else None
        if array is None or view is None:
            return array
        _, offset, view_size = view  # a storage view, legacy files of torch < 1.0
        return array[offset : offset + view_size]


def _text(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------
# The two file formats
# ---------------------------------------------------------------------------------------------


def read_checkpoint(path: str) -> Any:
    """Reads a file written by `torch.save` (zip or legacy format) without torch.

    Args:
      path: a .pth / .pth.tar / .pt file.

    Returns:
      The saved object: dicts (OrderedDicts for state dicts), lists, tuples, numbers and strings
      as they were, every tensor a numpy array (its own copy, native byte order).

    Raises:
      UnsafeCheckpointError: the pickle asks for a global outside the allow-list.
      CheckpointError: the file is missing, damaged, truncated or not a torch checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"PyTorch checkpoint '{path}' does not exist.")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except _Refused as refused:
        raise UnsafeCheckpointError(f"'{path}' {refused}; refusing to unpickle it, since that "
                                    "could run arbitrary code.") from None  # fmt: skip
    except _Problem as problem:
        raise CheckpointError(f"could not read PyTorch checkpoint '{path}': {problem}.") from None
    except Exception as error:  # anything a damaged pickle or zip raises
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(".")
        raise CheckpointError(f"could not read PyTorch checkpoint '{path}' ({reason}); it "
                              "is damaged or truncated, or torch.save did not write "
                              "it.") from None  # fmt: skip


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if any(n.endswith("/constants.pkl") for n in names):
            raise _Problem("it is a TorchScript archive (torch.jit.save), not a torch.save file")
        if len(pickles) != 1:
            raise _Problem(f"the zip archive has {len(pickles)} '<archive>/data.pkl' entries, "
                           "expected one")  # fmt: skip
        prefix = pickles[0][: -len("data.pkl")]
        order = ">" if _zip_text(archive, prefix + "byteorder") == "big" else "<"
        storages: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            if key not in storages:
                record = prefix + "data/" + key
                if record not in names:
                    raise _Problem(f"storage record '{record}' is missing")
                data = archive.read(record)
                if len(data) != numel * dtype.itemsize:
                    raise _Problem(f"storage record '{record}' has {len(data)} bytes, expected "
                                   f"{numel} x {dtype.itemsize}")  # fmt: skip
                storages[key] = np.frombuffer(data, dtype.newbyteorder(order))
            return storages[key]

        return _Unpickler(io.BytesIO(archive.read(pickles[0])), storage).load()


def _zip_text(archive: zipfile.ZipFile, name: str) -> str | None:
    return archive.read(name).decode("ascii").strip() if name in archive.namelist() else None


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f, None).load()
        except _Refused:  # a pickle, but a dangerous one: say so
            raise
        except Exception:
            magic = None
        if magic != LEGACY_MAGIC:
            if tarfile.is_tarfile(path):
                raise _Problem("it is in the tar format of torch < 0.4, which is not supported")
            raise _Problem("it is neither a zip archive (torch >= 1.6) nor a legacy torch file "
                           "(no magic number)")  # fmt: skip
        version = _Unpickler(f, None).load()
        if version != LEGACY_PROTOCOL:
            raise _Problem(f"legacy protocol version {version!r}, expected {LEGACY_PROTOCOL}")
        sys_info = _Unpickler(f, None).load()
        order = "<" if dict(sys_info).get("little_endian", True) else ">"
        # The storages follow the object pickle: a dry pass records their dtypes and sizes.
        start = f.tell()
        recorded: dict[str, tuple[np.dtype, int]] = {}

        def record(key: str, dtype: np.dtype, numel: int) -> None:
            recorded.setdefault(key, (dtype, numel))

        _Unpickler(f, record).load()
        keys = _Unpickler(f, None).load()
        arrays = {}
        for key in keys:
            if key not in recorded:
                raise _Problem(f"storage '{key}' is listed but no tensor uses it")
            dtype, numel = recorded[key]
            header = f.read(8)
            if len(header) < 8:
                raise _Problem(f"it ends before storage '{key}' (the file is truncated)")
            (count,) = struct.unpack(order + "q", header)
            if count != numel:
                raise _Problem(f"storage '{key}' holds {count} elements, expected {numel}")
            data = f.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise _Problem(f"it ends inside storage '{key}' (the file is truncated)")
            arrays[key] = np.frombuffer(data, dtype.newbyteorder(order))
        missing = sorted(set(recorded) - set(arrays))
        if missing:
            raise _Problem(f"storage '{missing[0]}' is used but not stored")
        f.seek(start)
        return _Unpickler(f, lambda key, dtype, numel: arrays[key]).load()


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
    model = build_model(config, body_model).clone(mean_params=mean_params)
    return model, params

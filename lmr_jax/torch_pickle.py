"""Reading PyTorch checkpoint files without PyTorch: a restricted unpickler and torch's two formats.

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

The key maps from these containers to our models' variables live in torch_weights.py (torchvision's
ResNet, SPIN's regressor) and torch_maps.py (VIBE's generator); torch_weights re-exports
`read_checkpoint` and the errors, its public names since before this split.
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
from collections.abc import Callable
from typing import Any

import numpy as np

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

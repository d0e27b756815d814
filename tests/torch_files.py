"""Writes small PyTorch checkpoints in torch's two formats without torch, for the tests.

The files follow torch.serialization byte for byte where it matters: protocol-2 pickles whose
tensors reduce to GLOBAL 'torch._utils _rebuild_tensor_v2' with the arguments (storage, offset,
size, stride, requires_grad, OrderedDict()), storages as persistent ids naming GLOBAL
'torch FloatStorage' (etc.), state dicts as 'collections OrderedDict' with their `_metadata`;

- zip: `<archive>/data.pkl`, `<archive>/data/<key>` raw storages (keys '0', '1', ... in order of
  first use), `<archive>/version`, `byteorder`, `.format_version`, `.storage_alignment`,
  `.data/serialization_id`, all stored uncompressed;
- legacy: the pickles of the magic number, the protocol version 1001 and the sys info, the
  object pickle (persistent ids with a sixth element, the view metadata), the sorted storage
  keys, then per storage an int64 element count and its raw bytes.

torch's own names are written with a pure-Python Pickler whose dispatch writes a `Global` as the
GLOBAL opcode (pickle's own save_global would import torch to check the name).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


class Global:
    """A global of a module we do not import (torch), pickled as GLOBAL 'module name'."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce wants a callable; never called here
        raise TypeError(f"{self.module}.{self.name} is a name for pickling only")


@functools.cache
def torch_global(module: str, name: str) -> Global:
    return Global(module, name)


class Storage:
    """A torch storage: a flat array; `view_of=(root, offset, size)` makes a legacy storage view."""

    def __init__(self, data: np.ndarray, view_of: tuple[Storage, int, int] | None = None):
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.view_of = view_of


class Tensor:
    """A tensor: the (offset, size, stride) view of a storage; `parameter` wraps it as
    torch.nn.Parameter does (_rebuild_parameter around _rebuild_tensor_v2)."""

    def __init__(self, storage, offset=0, size=None, stride=None, parameter=False):
        self.storage = storage if isinstance(storage, Storage) else Storage(storage)
        self.offset = offset
        self.size = tuple(size) if size is not None else (self.storage.data.size,)
        self.stride = tuple(stride) if stride is not None else _contiguous(self.size)
        self.parameter = parameter

    def __reduce__(self):
        hooks = collections.OrderedDict()
        args = (self.storage, self.offset, self.size, self.stride, self.parameter, hooks)
        if not self.parameter:
            return torch_global("torch._utils", "_rebuild_tensor_v2"), args
        inner = Tensor(self.storage, self.offset, self.size, self.stride)
        return torch_global("torch._utils", "_rebuild_parameter"), (inner, True, hooks)


class Raw:
    """An object pickled as its wrapped value (a numpy array as numpy pickles it)."""

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, protocol):
        return self.value.__reduce_ex__(protocol)


def tensor(array) -> Tensor:
    """A contiguous tensor holding a copy of `array` in a storage of its own."""
    array = np.asarray(array)
    return Tensor(Storage(array.copy()), 0, array.shape, _contiguous(array.shape))


def state_dict(items) -> collections.OrderedDict:
    """An OrderedDict with the `_metadata` attribute torch's state_dict() sets."""
    state = collections.OrderedDict(items)
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    return state


def _contiguous(size) -> tuple[int, ...]:
    stride, step = [], 1
    for n in reversed(size):
        stride.append(step)
        step *= max(n, 1)
    return tuple(reversed(stride))


def _tensors(obj):
    """obj with every numpy array (not numpy scalars, not Raw) turned into a tensor."""
    if isinstance(obj, np.ndarray):
        return tensor(obj)
    if isinstance(obj, dict):
        out = type(obj)((k, _tensors(v)) for k, v in obj.items())
        if hasattr(obj, "__dict__"):  # a state dict's _metadata
            out.__dict__.update(obj.__dict__)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_tensors(v) for v in obj)
    return obj


class _Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.keys: dict[int, str] = {}
        self.storages: dict[str, Storage] = {}

    def _key(self, storage: Storage) -> str:
        if id(storage) not in self.keys:
            # zip: '0', '1', ...; legacy: str(storage._cdata), a pointer
            index = len(self.keys)
            key = str(94355256687344 + 144 * index) if self.legacy else str(index)
            self.keys[id(storage)] = key
            self.storages[key] = storage
        return self.keys[id(storage)]

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        root, view = obj, None
        if obj.view_of is not None:
            root, offset, size = obj.view_of
            view = (self._key(obj), offset, size)
        storage_type = torch_global("torch", STORAGE_NAMES[root.data.dtype.name])
        pid = ("storage", storage_type, self._key(root), "cpu", root.data.size)
        return (*pid, view) if self.legacy else pid

    def _save_global(self, obj: Global):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_global


def pickle_object(obj, legacy: bool = False) -> tuple[bytes, dict[str, Storage]]:
    """(the object pickle, {key: storage}) of a checkpoint whose arrays become tensors."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy)
    pickler.dump(_tensors(obj))
    roots = {k: s for k, s in pickler.storages.items() if s.view_of is None}
    return buffer.getvalue(), roots


def write_zip(path, data_pkl: bytes, storages: dict[str, Storage], byteorder="little"):
    """A zip-format file (torch >= 1.6) from an object pickle and its storages."""
    archive = os.path.basename(os.fspath(path)).split(".")[0] or "archive"
    order = "<" if byteorder == "little" else ">"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", data_pkl)
        zf.writestr(f"{archive}/.format_version", "1")
        zf.writestr(f"{archive}/.storage_alignment", "64")
        zf.writestr(f"{archive}/byteorder", byteorder)
        for key, storage in storages.items():
            data = storage.data.astype(storage.data.dtype.newbyteorder(order))
            zf.writestr(f"{archive}/data/{key}", data.tobytes())
        zf.writestr(f"{archive}/version", "3\n")
        zf.writestr(f"{archive}/.data/serialization_id", "1234567890")


def write_legacy(path, object_pickle: bytes, storages: dict[str, Storage]):
    """A legacy-format file (torch < 1.6) from an object pickle and its storages."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    with open(path, "wb") as f:
        for header in (MAGIC, 1001, sys_info):
            pickle.dump(header, f, protocol=2)
        f.write(object_pickle)
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            data = storages[key].data.astype(storages[key].data.dtype.newbyteorder("<"))
            f.write(struct.pack("<q", data.size))
            f.write(data.tobytes())


def save(obj, path, format: str = "zip", byteorder: str = "little") -> str:
    """torch.save(obj, path) (format 'zip') or with _use_new_zipfile_serialization=False
    ('legacy'); numpy arrays in `obj` are saved as tensors. Returns the path."""
    data_pkl, storages = pickle_object(obj, legacy=format == "legacy")
    if format == "zip":
        write_zip(path, data_pkl, storages, byteorder)
    elif format == "legacy":
        write_legacy(path, data_pkl, storages)
    else:
        raise ValueError(f"unknown format {format!r}")
    return str(path)

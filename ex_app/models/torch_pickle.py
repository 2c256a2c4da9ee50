"""Tensors of a PyTorch ``.pth`` file read without PyTorch, as numpy arrays.

Reads the legacy serialization (``torch.save`` before 1.6):
four pickles (magic number, protocol version, system info, the object), the list of storage
keys, then each storage as its element count (int64) and its raw little-endian elements.
The object's pickle may only name what a state dict needs (an OrderedDict of tensors);
anything else is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


class TorchFormatError(ValueError):
    """The bytes are not a legacy PyTorch state dict this reader knows."""


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    count: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *_rest) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Allows an OrderedDict of tensors and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise TorchFormatError(f"the file names {module}.{name}, which a state dict does not")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise TorchFormatError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, count = pid[:5]
        if storage_type not in STORAGE_DTYPES:
            raise TorchFormatError(f"unsupported storage {storage_type!r}")
        return _Storage(str(key), STORAGE_DTYPES[storage_type], int(count))


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy ``.pth`` state dict, by name, as contiguous numpy arrays."""
    stream = io.BytesIO(Path(path).read_bytes())
    try:
        if pickle.load(stream) != MAGIC_NUMBER:
            raise TorchFormatError("not a legacy PyTorch file (magic number)")
        if pickle.load(stream) != PROTOCOL_VERSION:
            raise TorchFormatError("unsupported PyTorch protocol version")
        info = pickle.load(stream)
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise TorchFormatError("only little-endian files are supported")
        state = _StateDictUnpickler(stream).load()
        keys = pickle.load(stream)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise TorchFormatError(f"unreadable pickle: {error}") from error
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise TorchFormatError("the file does not hold a state dict")

    storages = {r.storage.key: r.storage for r in state.values() if isinstance(r, _TensorRef)}
    data: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages.get(key)
        header = stream.read(8)
        if len(header) != 8:
            raise TorchFormatError(f"the file ends before storage {key}")
        count = int.from_bytes(header, "little", signed=True)
        dtype = storage.dtype if storage else np.dtype("<f4")
        raw = stream.read(count * dtype.itemsize)
        if storage is None or count != storage.count or len(raw) != count * dtype.itemsize:
            raise TorchFormatError(f"storage {key} does not fit its tensors")
        data[key] = np.frombuffer(raw, dtype=dtype)

    tensors: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise TorchFormatError(f"{name} is not a tensor")
        flat = data[ref.storage.key]
        strides = tuple(step * flat.itemsize for step in ref.stride)
        needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) + 1
        if ref.shape and (min(ref.shape) == 0 or needed > flat.size):
            raise TorchFormatError(f"{name} reaches outside its storage")
        view = as_strided(flat[ref.offset :], shape=ref.shape, strides=strides, writeable=False)
        tensors[str(name)] = np.ascontiguousarray(view)
    return tensors

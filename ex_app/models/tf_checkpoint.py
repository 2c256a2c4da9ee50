"""Variables of a TensorFlow checkpoint (``.index`` + ``.data-00000-of-00001``) read without
TensorFlow, as numpy arrays.

The ``.index`` file is a LevelDB-format table (uncompressed blocks) mapping each variable
name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size); the ``.data`` shard holds
the raw little-endian values. Only single-shard, unsliced float32 variables are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + crc32
DT_FLOAT = 1


class CheckpointFormatError(ValueError):
    """The bytes are not a TensorFlow checkpoint this reader knows."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CheckpointFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _varints(data: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """``count`` varints from ``pos`` on, and the position after them."""
    values = []
    for _ in range(count):
        value, pos = _varint(data, pos)
        values.append(value)
    return values, pos


def _block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The key/value pairs of one table block (keys are prefix-compressed)."""
    if offset + size + BLOCK_TRAILER_SIZE > len(table):
        raise CheckpointFormatError("a block reaches past the end of the index")
    if table[offset + size] != 0:
        raise CheckpointFormatError("compressed index blocks are not supported")
    block = table[offset : offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    pos, key, entries = 0, b"", []
    while pos < end:
        (shared, unshared, length), pos = _varints(block, pos, 3)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _fields(message: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value) pairs: varints and length-delimited bytes."""
    pos, fields = 0, []
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire in (1, 5):  # fixed 64 or 32 bits
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(message[pos : pos + size], "little"), pos + size
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _entry(name: str, message: bytes, data: bytes) -> np.ndarray:
    # BundleEntryProto: 1 dtype, 2 shape (its field 2: dims, their field 1: size), 3 shard,
    # 4 offset, 5 size, 7 slices.
    fields = dict(_fields(message))
    dims = _fields(fields.get(2, b""))
    shape = [dict(_fields(dim)).get(1, 0) for number, dim in dims if number == 2]
    if 7 in fields:
        raise CheckpointFormatError(f"{name}: sliced variables are not supported")
    dtype, shard, offset, size = fields.get(1), fields.get(3, 0), fields.get(4, 0), fields.get(5, 0)
    if dtype != DT_FLOAT or shard != 0:
        raise CheckpointFormatError(f"{name}: only float32 variables in shard 0 are supported")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size != 4 * count or offset + size > len(data):
        raise CheckpointFormatError(f"{name}: {size} bytes at {offset} do not fit shape {shape}")
    return np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape).copy()


def read_checkpoint(index_path: Path, data_path: Path) -> dict[str, np.ndarray]:
    """Every float32 variable of the checkpoint, by name (optimizer slots included)."""
    table = Path(index_path).read_bytes()
    data = Path(data_path).read_bytes()
    if len(table) < FOOTER_SIZE or int.from_bytes(table[-8:], "little") != TABLE_MAGIC:
        raise CheckpointFormatError("not a TensorFlow checkpoint index (magic number)")
    # The footer: the metaindex block's offset and size, then the index block's.
    (_, _, index_offset, index_size), _ = _varints(table[-FOOTER_SIZE:], 0, 4)
    variables: dict[str, np.ndarray] = {}
    for _, handle in _block(table, index_offset, index_size):
        (offset, size), _ = _varints(handle, 0, 2)
        for key, message in _block(table, offset, size):
            if key:  # the empty key holds the bundle's header
                name = key.decode("utf-8")
                variables[name] = _entry(name, message, data)
    return variables

"""TensorFlow's checkpoint files (a "tensor bundle"), read and written
without TensorFlow.

A checkpoint `prefix` is `prefix.index`, a table (see `_table`) from each
tensor's key to a `BundleEntryProto` (dtype, shape, shard, offset, size,
checksum), plus data files `prefix.data-00000-of-0000N` holding the raw
little-endian tensor bytes. The empty key holds a `BundleHeaderProto`.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_keras_sgd.checkpoints import _protos, _table

# TensorFlow's DataType enum values -> NumPy dtypes (DT_STRING handled apart).
_DTYPES = {
  1: np.float32,
  2: np.float64,
  3: np.int32,
  4: np.uint8,
  5: np.int16,
  6: np.int8,
  8: np.complex64,
  9: np.int64,
  10: np.bool_,
  14: jnp.bfloat16,
  17: np.uint16,
  18: np.complex128,
  19: np.float16,
  22: np.uint32,
  23: np.uint64,
}
_DT_STRING = 7
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _data_path(prefix: str, shard: int, num_shards: int) -> str:
  return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read: the message names the file and key."""


class TensorBundle:
  """The tensors of the TensorFlow checkpoint at `prefix`, read on demand.

  Each read checks the tensor's CRC-32C, as TensorFlow does.

  Raises:
    FileNotFoundError: if `prefix.index` does not exist.
    CheckpointError: if the index is malformed or little-endian data is not
      what it holds.
  """

  def __init__(self, prefix: str):
    self.prefix = str(prefix)
    index = f"{self.prefix}.index"
    if not os.path.exists(index):
      raise FileNotFoundError(
        f"No TensorFlow checkpoint at {self.prefix!r}: {index} does not exist."
      )
    try:
      table = _table.read_table(index)
    except _table.TableError as e:
      raise CheckpointError(str(e)) from None
    header = _protos.BundleHeaderProto.FromString(table.pop(b"", b""))
    if header.endianness != 0:
      raise CheckpointError(f"{index}: big-endian checkpoints are not supported.")
    self.num_shards = max(header.num_shards, 1)
    self._entries = {
      key.decode(): _protos.BundleEntryProto.FromString(value)
      for key, value in table.items()
    }

  def keys(self) -> list[str]:
    return list(self._entries)

  def __contains__(self, key: str) -> bool:
    return key in self._entries

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(d.size for d in self._entry(key).shape.dim)

  def _entry(self, key: str):
    try:
      return self._entries[key]
    except KeyError:
      raise KeyError(f"{self.prefix}.index has no tensor {key!r}.") from None

  def _raw(self, key: str) -> bytes:
    entry = self._entry(key)
    if entry.slices:
      raise CheckpointError(
        f"{self.prefix}.index: {key!r} is saved in slices "
        "(a partitioned variable), which is not supported."
      )
    path = self._data_file(key, entry)
    with open(path, "rb") as f:
      f.seek(entry.offset)
      raw = f.read(entry.size)
    if len(raw) != entry.size:
      raise CheckpointError(
        f"{path}: {key!r} runs past the end of the file (truncated?)."
      )
    return raw

  def _data_file(self, key: str, entry: Any) -> str:
    path = _data_path(self.prefix, entry.shard_id, self.num_shards)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} (the data file of {key!r}) does not exist.")
    return path

  def read(self, key: str) -> np.ndarray:
    """The tensor saved under `key`, checksum verified.

    Raises:
      KeyError: naming the key, if there is no such tensor.
      CheckpointError: naming the file and key, on a checksum mismatch or a
        dtype this reader does not know.
    """
    entry, shape = self._entry(key), self.shape(key)
    if entry.dtype == _DT_STRING:
      raw = self._raw(key)
      return _decode_strings(raw, shape, entry.crc32c, f"{self.prefix}: {key!r}")
    if entry.dtype not in _DTYPES:
      raise CheckpointError(
        f"{self.prefix}.index: {key!r} has TensorFlow dtype "
        f"enum {entry.dtype}, which this reader does not know."
      )
    array = self._read_array(key, entry, _DTYPES[entry.dtype])
    if _table.masked_crc32c(array.view(np.uint8)) != entry.crc32c:
      raise CheckpointError(
        f"{_data_path(self.prefix, entry.shard_id, self.num_shards)}: checksum "
        f"mismatch for {key!r} (the file is corrupted)."
      )
    array.setflags(write=True)
    return array.reshape(shape)

  def _read_array(self, key: str, entry: Any, dtype: Any) -> np.ndarray:
    """`key`'s bytes read straight into a new (read-only) array: one copy,
    and only this tensor in memory."""
    path = self._data_file(key, entry)
    array = np.empty(entry.size // np.dtype(dtype).itemsize, dtype)
    with open(path, "rb") as f:
      f.seek(entry.offset)
      got = f.readinto(array.view(np.uint8).data)
    if got != entry.size:
      raise CheckpointError(
        f"{path}: {key!r} runs past the end of the file (truncated?)."
      )
    array.setflags(write=False)  # the checksum reads a read-only buffer
    return array

  def raw_entry(self, key: str) -> tuple[bytes, bytes]:
    """`key`'s serialized entry and raw bytes, for copying it unchanged."""
    return self._entry(key).SerializeToString(), self._raw(key)


def _decode_strings(raw: bytes, shape, stored_crc: int, where: str) -> np.ndarray:
  """A DT_STRING tensor: varint lengths, their masked checksum, the bytes."""
  count = int(np.prod(shape, dtype=np.int64))
  lengths, pos = [], 0
  for _ in range(count):
    n, pos = _table._varint(raw, pos)
    lengths.append(n)
  crc_data = b"".join(struct.pack("<I", n & 0xFFFFFFFF) for n in lengths)
  (length_crc,) = struct.unpack_from("<I", raw, pos)
  if _table.masked_crc32c(crc_data) != length_crc:
    raise CheckpointError(f"{where}: checksum mismatch in the string lengths.")
  pos += 4
  values = []
  for n in lengths:
    values.append(raw[pos : pos + n])
    pos += n
  whole = crc_data + raw[pos - sum(lengths) - 4 : pos - sum(lengths)] + b"".join(values)
  if _table.masked_crc32c(whole) != stored_crc:
    raise CheckpointError(f"{where}: checksum mismatch (the file is corrupted).")
  return np.array(values, dtype=object).reshape(shape)


def write_bundle(
  prefix: str,
  tensors: dict[str, np.ndarray],
  copied: dict[str, tuple[bytes, bytes]] | None = None,
) -> None:
  """Writes a one-shard checkpoint at `prefix` that TensorFlow reads.

  Args:
    prefix: the checkpoint prefix (`prefix.index`, `prefix.data-00000-of-00001`).
    tensors: numeric arrays by key.
    copied: entries copied unchanged from another bundle (`raw_entry`), such
      as the object graph.
  """
  table = {b"": _protos.BundleHeaderProto(num_shards=1).SerializeToString()}
  entries: dict[str, tuple[Any, bytes]] = {}
  for key, (entry_bytes, raw) in (copied or {}).items():
    entries[key] = (_protos.BundleEntryProto.FromString(entry_bytes), raw)
  for key, value in tensors.items():
    array = np.asarray(value, order="C")  # 0-d arrays stay 0-d
    if array.dtype not in _CODES:
      raise TypeError(
        f"Cannot write {key!r}: dtype {array.dtype} has no "
        "TensorFlow checkpoint encoding here."
      )
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    entry = _protos.BundleEntryProto(
      dtype=_CODES[array.dtype], crc32c=_table.masked_crc32c(raw)
    )
    entry.shape.SetInParent()
    for size in array.shape:
      entry.shape.dim.add(size=size)
    entries[key] = (entry, raw)
  data = bytearray()
  for key in sorted(entries):
    entry, raw = entries[key]
    entry.shard_id, entry.offset, entry.size = 0, len(data), len(raw)
    data += raw
    table[key.encode()] = entry.SerializeToString()
  # Written aside, then moved into place: no half-written checkpoint.
  data_path, index_path = _data_path(prefix, 0, 1), f"{prefix}.index"
  with open(data_path + ".partial", "wb") as f:
    f.write(data)
  _table.write_table(index_path + ".partial", table)
  os.replace(data_path + ".partial", data_path)
  os.replace(index_path + ".partial", index_path)

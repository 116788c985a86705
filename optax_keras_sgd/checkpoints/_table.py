"""The sorted key-value table format of a TensorFlow checkpoint's `.index`
file (TensorFlow's `lib/io/table`, LevelDB's format), read and written.

A table is data blocks of prefix-compressed entries, an index block mapping
each data block's last key to its place, a (here empty) metaindex block and
a 48-byte footer. Every block ends with a compression byte and a masked
CRC-32C of the block and that byte. TensorFlow writes its bundles without
compression; so does this module, and it reads no other.
"""

from __future__ import annotations

import struct

import google_crc32c
import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_RESTART_INTERVAL = 16
_BLOCK_SIZE = 256 * 1024
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | np.ndarray) -> int:
  """CRC-32C of `data`, masked as TensorFlow stores it in its files."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(data: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _put_varint(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


class TableError(ValueError):
  """A table file that is not well formed (the message names the file)."""


def _block(data: bytes, handle: tuple[int, int], path: str) -> bytes:
  offset, size = handle
  if offset + size + 5 > len(data):
    raise TableError(f"{path}: a block runs past the end of the file (truncated?).")
  contents, kind = data[offset : offset + size], data[offset + size]
  (stored,) = struct.unpack_from("<I", data, offset + size + 1)
  if masked_crc32c(contents + bytes([kind])) != stored:
    raise TableError(
      f"{path}: block checksum mismatch at offset {offset} (the file is corrupted)."
    )
  if kind != 0:
    raise TableError(
      f"{path}: compressed blocks (type {kind}) are not supported; "
      "TensorFlow writes checkpoint indexes uncompressed."
    )
  return contents


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
  (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
  end = len(block) - 4 - 4 * restarts
  pos, key, out = 0, b"", []
  while pos < end:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    length, pos = _varint(block, pos)
    key = key[:shared] + block[pos : pos + unshared]
    pos += unshared
    out.append((key, block[pos : pos + length]))
    pos += length
  return out


def _handle(value: bytes) -> tuple[int, int]:
  offset, pos = _varint(value, 0)
  size, _ = _varint(value, pos)
  return offset, size


def read_table(path: str) -> dict[bytes, bytes]:
  """Every key and value of the table in the file at `path`, in key order.

  Raises:
    TableError: naming the file, if it is not a well-formed table or a
      checksum does not match.
  """
  with open(path, "rb") as f:
    data = f.read()
  if (
    len(data) < _FOOTER_SIZE
    or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC
  ):
    raise TableError(f"{path}: not a TensorFlow checkpoint index (no table footer).")
  footer = data[len(data) - _FOOTER_SIZE :]
  _, pos = _varint(footer, 0)  # metaindex offset
  _, pos = _varint(footer, pos)  # metaindex size
  index_offset, pos = _varint(footer, pos)
  index_size, _ = _varint(footer, pos)
  table: dict[bytes, bytes] = {}
  for _, handle in _entries(_block(data, (index_offset, index_size), path)):
    table.update(_entries(_block(data, _handle(handle), path)))
  return table


def _build_block(entries: list[tuple[bytes, bytes]]) -> bytes:
  out, restarts, previous = bytearray(), [], b""
  for i, (key, value) in enumerate(entries):
    shared = 0
    if i % _RESTART_INTERVAL:
      while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
        shared += 1
    else:
      restarts.append(len(out))
    out += (
      _put_varint(shared)
      + _put_varint(len(key) - shared)
      + _put_varint(len(value))
      + key[shared:]
      + value
    )
    previous = key
  restarts = restarts or [0]
  out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
  return bytes(out)


def write_table(path: str, table: dict[bytes, bytes]) -> None:
  """Writes `table` (keys sorted bytewise) as a table file TensorFlow reads."""
  out = bytearray()

  def append(block: bytes) -> bytes:
    handle = _put_varint(len(out)) + _put_varint(len(block))
    out.extend(block + b"\0" + struct.pack("<I", masked_crc32c(block + b"\0")))
    return handle

  index, pending, size = [], [], 0
  for key in sorted(table):
    pending.append((key, table[key]))
    size += len(key) + len(table[key])
    if size >= _BLOCK_SIZE:
      index.append((key, append(_build_block(pending))))
      pending, size = [], 0
  if pending:
    index.append((pending[-1][0], append(_build_block(pending))))
  metaindex = append(_build_block([]))
  index_handle = append(_build_block(index))
  footer = (metaindex + index_handle).ljust(_FOOTER_SIZE - 8, b"\0")
  out += footer + struct.pack("<Q", _MAGIC)
  with open(path, "wb") as f:
    f.write(out)

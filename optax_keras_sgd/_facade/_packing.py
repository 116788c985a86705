"""Small momentum slots kept in one buffer per dtype between steps.

JAX hands each array a compiled call returns back as an object of its own,
at about 2 us apiece on a CPU, whatever its size (the "JAX dispatch floor"
rows of benchmarks/RESULTS.md). On a model of many small tensors that is
most of a step: 1,000 tensors of 64 floats take 4.4 ms to pass through a
call that does nothing, and 2.4 ms when their velocities travel as one
array. So the facade keeps the velocities of small tensors (the kernel's
rule for small: at most `_fused.SMALL_LEAF` elements each, `SMALL_TOTAL` in
all; at least `MIN_PACKED` of a dtype) concatenated in one buffer per
dtype: its step splits the buffer into the velocities (by the native
kernel where it runs, one call per 64 of them), runs `sgd` on them as on
any others, and concatenates the new ones.

A slot so kept is a `PackedSlot`: it reads its value from the buffer when
asked (one split for all of them, kept until the next step), and assigning
any of them first gives every slot of the buffer its own array again; the
next step packs them anew. Either way each slot's value is what it would be
with no buffer at all.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd import _fused, _native
from optax_keras_sgd._variable import Variable

# Fewer small slots of a dtype than this stay arrays of their own. Facade
# steps over N tensors of 64 floats, packed against not (interleaved, 9
# rounds): N = 1 and 2, 1.00x; 4, 0.93x; 10, 0.81x; 16, 0.76x; 100, 0.63x;
# 300, 0.64x; the ResNet-like tree (108 small tensors among 161), 1.02x
# (15 rounds); the small MLP (2 small among 4), 1.07x with packing.
MIN_PACKED = 8


@jax.tree_util.register_pytree_node_class
class PackedSlot(Variable):
  """A slot Variable whose value may live in a `SlotPack`'s buffer."""

  _pack: SlotPack | None = None
  _index = -1
  _array: Any = None  # the value, while not in a pack

  @property
  def _value(self) -> jax.Array:
    pack = self._pack
    return self._array if pack is None else pack.read(self._index)

  @_value.setter
  def _value(self, x: jax.Array) -> None:
    if self._pack is not None:
      self._pack.release()
    self._array = x


class Layout(NamedTuple):
  """Which of a step's slots travel packed: per dtype, the slots' positions
  and shapes, in order (static: it shapes the compiled step)."""

  groups: tuple[tuple[str, tuple[int, ...], tuple[tuple[int, ...], ...]], ...]
  slots: int  # in all
  rest: tuple[int, ...]  # the slots that travel as arrays of their own

  @property
  def packed(self) -> tuple[int, ...]:
    return tuple(i for _, idx, _ in self.groups for i in idx)

  def unpack(self, buffers: tuple[jax.Array, ...], rest: list[Any]) -> list[Any]:
    """All the velocities, in the slots' order, from the buffers and the
    others (traceable)."""
    out: list[Any] = [None] * self.slots
    for buffer, (_, idx, shapes) in zip(buffers, self.groups):
      for i, part in zip(idx, _split(buffer, shapes)):
        out[i] = part
    for i, x in zip(self.rest, rest):
      out[i] = x
    return out

  def pack(self, velocities: list[Any]) -> tuple[tuple[jax.Array, ...], list[Any]]:
    """The inverse of `unpack` (traceable)."""
    buffers = tuple(
      jnp.concatenate([jnp.ravel(velocities[i]) for i in idx])
      for _, idx, _ in self.groups
    )
    return buffers, [velocities[i] for i in self.rest]


def _split(buffer: jax.Array, shapes: tuple[tuple[int, ...], ...]) -> list[Any]:
  """`buffer` cut into pieces of `shapes`: by the native kernel where it
  runs (one task where XLA makes a task of each slice)."""
  if _native.usable(buffer):
    return _native.split(buffer, list(shapes))
  sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
  parts = jnp.split(buffer, np.cumsum(sizes)[:-1].tolist())
  return [part.reshape(shape) for part, shape in zip(parts, shapes)]


def layout(slots: list[Variable]) -> Layout | None:
  """The layout for `slots`, or None when no dtype has `MIN_PACKED` small
  slots. Only on a single device: a buffer lives on one."""
  if jax.device_count() != 1:
    return None
  groups: dict[str, list[int]] = {}
  budget = _fused.SMALL_TOTAL
  for i, s in enumerate(slots):
    if not isinstance(s, PackedSlot):
      continue
    size = s.size
    if size <= min(_fused.SMALL_LEAF, budget):
      groups.setdefault(np.dtype(s.dtype).name, []).append(i)
      budget -= size
  kept = tuple(
    (dtype, tuple(idx), tuple(tuple(slots[i].shape) for i in idx))
    for dtype, idx in groups.items()
    if len(idx) >= MIN_PACKED
  )
  if not kept:
    return None
  packed = {i for _, idx, _ in kept for i in idx}
  rest = tuple(i for i in range(len(slots)) if i not in packed)
  return Layout(kept, len(slots), rest)


@functools.cache
def _packer(layout: Layout):
  return jax.jit(lambda velocities: layout.pack(velocities)[0])


@functools.cache
def _splitter(layout: Layout):
  return jax.jit(lambda buffers: layout.unpack(buffers, []))


class SlotPack:
  """The buffers of one list of slots, while they hold the slots' values."""

  def __init__(self, slots: list[Variable], layout: Layout):
    self.slots = slots
    self.layout = layout
    self._packed = [cast(PackedSlot, slots[i]) for i in layout.packed]
    for s in self._packed:
      if s._pack is not None:  # held by the pack of another list of slots
        s._pack.release()
    values: list[Any] = [None] * layout.slots
    for s, i in zip(self._packed, layout.packed):
      values[i] = s._array
    self.buffers: tuple[jax.Array, ...] | None = _packer(layout)(values)
    self._split: list[jax.Array] | None = None
    for s, i in zip(self._packed, layout.packed):
      s._pack, s._index, s._array = self, i, None

  @property
  def active(self) -> bool:
    return self.buffers is not None

  def store(self, buffers: tuple[jax.Array, ...]) -> None:
    """The buffers after a step."""
    self.buffers, self._split = tuple(buffers), None

  def read(self, index: int) -> jax.Array:
    """Slot `index`'s value (one split of the buffers for all slots)."""
    if self._split is None:
      assert self.buffers is not None
      self._split = _splitter(self.layout)(self.buffers)
    return self._split[index]

  def release(self) -> None:
    """Gives every slot its own array again; the buffers are dropped."""
    if self.buffers is None:
      return
    for s, i in zip(self._packed, self.layout.packed):
      value = self.read(i)
      s._pack, s._array = None, value
    self.buffers, self._split = None, None

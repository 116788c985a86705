"""`FlatParams`: many small tensors kept in one buffer per dtype.

With a thousand tiny tensors, a step's cost is per-tensor overhead, not
arithmetic (and compile time grows with the number of tensors). Keeping
the parameters flat, one 1-D buffer per dtype, makes every transform of this
package run on a few large arrays instead. Gradients taken with respect to a
`FlatParams` are `FlatParams` too, so the optimizer state is flat as well.
Per-tensor clipping (`clipnorm`) still sees each original tensor: the
buffers carry their tensors' offsets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where each leaf lives: its buffer (one per dtype), offset, shape."""

  treedef: Any
  leaves: tuple[tuple[int, int, tuple[int, ...]], ...]  # (buffer, offset, shape)

  def runs(self, buffer: int) -> tuple[tuple[int, int, int], ...]:
    """The tensors of `buffer` as runs of equal sizes: `(offset, count,
    size)`, so that a run reshapes to a `(count, size)` block."""
    out: list[list[int]] = []
    for b, offset, shape in self.leaves:
      if b != buffer:
        continue
      size = int(np.prod(shape))
      if out and out[-1][2] == size and out[-1][0] + out[-1][1] * size == offset:
        out[-1][1] += 1
      else:
        out.append([offset, 1, size])
    return tuple((o, c, s) for o, c, s in out)


@jax.tree_util.register_pytree_node_class
class FlatParams:
  """A pytree of arrays stored as one flat buffer per dtype.

  Use `flatten(params)` to make one and `.unflatten()` to get the pytree back
  (under `jit` the slices fuse into their consumers).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_keras_sgd as oks
    >>> params = [jnp.ones(3), jnp.full((2, 2), 2.0)]
    >>> flat = oks.flatten(params)
    >>> [b.shape for b in flat.buffers]
    [(7,)]
    >>> tx = oks.sgd(0.1, momentum=0.9, clipnorm=1.0)
    >>> loss = lambda f: sum(jnp.sum(p) for p in f.unflatten())
    >>> updates, _ = tx.update(jax.grad(loss)(flat), tx.init(flat), flat)
    >>> [p.shape for p in optax.apply_updates(flat, updates).unflatten()]
    [(3,), (2, 2)]
  """

  __slots__ = ("buffers", "layout")

  def __init__(self, buffers: tuple[Any, ...], layout: _Layout):
    self.buffers = tuple(buffers)
    self.layout = layout

  def unflatten(self) -> Any:
    """The original pytree (views of the buffers, as new arrays)."""
    leaves = []
    for b, offset, shape in self.layout.leaves:
      size = int(np.prod(shape))
      leaves.append(self.buffers[b][offset:offset + size].reshape(shape))
    return jax.tree.unflatten(self.layout.treedef, leaves)

  def map_tensors(self, fn) -> FlatParams:
    """Applies `fn` to every original tensor at once: `fn` gets blocks of
    shape `(count, size)`, one row per tensor of a run of equal sizes, and
    returns blocks of the same shape (no gather, no scatter)."""
    buffers = []
    for i, values in enumerate(self.buffers):
      pieces = [fn(values[o:o + c * s].reshape(c, s)).reshape(-1)
                for o, c, s in self.layout.runs(i)]
      buffers.append(pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces))
    return self.with_buffers(buffers)

  def with_buffers(self, buffers: Any) -> FlatParams:
    return FlatParams(tuple(buffers), self.layout)

  def tree_flatten(self):
    return self.buffers, self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(tuple(buffers), layout)

  def __repr__(self) -> str:
    return (f"FlatParams({len(self.layout.leaves)} tensors in buffers "
            f"{[(str(b.dtype), b.shape) for b in self.buffers]})")


def flatten(params: Any) -> FlatParams:
  """Packs the arrays of `params` into one flat buffer per dtype.

  Raises:
    ValueError: if `params` has no array leaves.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import flatten
    >>> flat = flatten({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    >>> flat.buffers[0].shape, flat.unflatten()["w"].shape
    ((9,), (2, 3))
  """
  leaves, treedef = jax.tree.flatten(params)
  if not leaves:
    raise ValueError("`params` has no arrays to flatten.")
  dtypes: list[str] = []
  parts: dict[str, list[Any]] = {}
  offsets: dict[str, int] = {}
  placed = []
  for leaf in leaves:
    leaf = jnp.asarray(leaf)
    name = jnp.dtype(leaf.dtype).name
    if name not in parts:
      dtypes.append(name)
      parts[name], offsets[name] = [], 0
    placed.append((dtypes.index(name), offsets[name], tuple(leaf.shape)))
    parts[name].append(leaf.reshape(-1))
    offsets[name] += leaf.size
  layout = _Layout(treedef, tuple(placed))
  return FlatParams(tuple(jnp.concatenate(parts[d]) for d in dtypes), layout)


def is_flat(x: Any) -> bool:
  return isinstance(x, FlatParams)

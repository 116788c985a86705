"""`FlatParams`: many tensors kept in a few 2-D buffers.

With a thousand tensors, a step's cost is per-tensor overhead, not
arithmetic (and compile time grows with the number of tensors). `flatten`
stacks the tensors of each (dtype, size) into one `(count, size)` buffer,
one row per tensor, so every transform of this package runs on a few large
arrays instead. Gradients taken with respect to a `FlatParams` are
`FlatParams` too, so the optimizer state is flat as well. Per-tensor
clipping (`clipnorm`) still sees each original tensor: it is a reduction
over each row, with no slicing and no concatenation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where each leaf lives: its buffer, its row there, and its shape."""

  treedef: Any
  leaves: tuple[tuple[int, int, tuple[int, ...]], ...]  # (buffer, row, shape)


@jax.tree_util.register_pytree_node_class
class FlatParams:
  """A pytree of arrays stored as one `(count, size)` buffer per (dtype, size).

  Use `flatten(params)` to make one and `.unflatten()` to get the pytree back
  (under `jit` the row reads fuse into their consumers).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_keras_sgd as oks
    >>> params = [jnp.ones(4), jnp.full((2, 2), 2.0), jnp.zeros(3)]
    >>> flat = oks.flatten(params)
    >>> [b.shape for b in flat.buffers]
    [(2, 4), (1, 3)]
    >>> tx = oks.sgd(0.1, momentum=0.9, clipnorm=1.0)
    >>> loss = lambda f: sum(jnp.sum(p) for p in f.unflatten())
    >>> updates, _ = tx.update(jax.grad(loss)(flat), tx.init(flat), flat)
    >>> [p.shape for p in optax.apply_updates(flat, updates).unflatten()]
    [(4,), (2, 2), (3,)]
  """

  __slots__ = ("buffers", "layout")

  def __init__(self, buffers: tuple[Any, ...], layout: _Layout):
    self.buffers = tuple(buffers)
    self.layout = layout

  def unflatten(self) -> Any:
    """The original pytree (rows of the buffers, as new arrays)."""
    leaves = [
      self.buffers[b][row].reshape(shape) for b, row, shape in self.layout.leaves
    ]
    return jax.tree.unflatten(self.layout.treedef, leaves)

  def map_tensors(self, fn) -> FlatParams:
    """Applies `fn` to every buffer: `fn` gets a `(count, size)` block, one
    row per original tensor, and returns a block of the same shape."""
    return self.with_buffers(fn(b) for b in self.buffers)

  def with_buffers(self, buffers: Any) -> FlatParams:
    return FlatParams(tuple(buffers), self.layout)

  def tree_flatten(self):
    return self.buffers, self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(tuple(buffers), layout)

  def __repr__(self) -> str:
    return (
      f"FlatParams({len(self.layout.leaves)} tensors in buffers "
      f"{[(str(b.dtype), b.shape) for b in self.buffers]})"
    )


def flatten(params: Any) -> FlatParams:
  """Stacks the arrays of `params` into one `(count, size)` buffer per
  (dtype, size), in order of first appearance.

  Raises:
    ValueError: if `params` has no array leaves.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import flatten
    >>> flat = flatten({"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "c": jnp.ones(3)})
    >>> [b.shape for b in flat.buffers], flat.unflatten()["w"].shape
    ([(2, 3), (1, 6)], (2, 3))
  """
  leaves, treedef = jax.tree.flatten(params)
  if not leaves:
    raise ValueError("`params` has no arrays to flatten.")
  rows: dict[tuple[str, int], list[Any]] = {}
  placed = []
  for leaf in leaves:
    leaf = jnp.asarray(leaf)
    key = (jnp.dtype(leaf.dtype).name, int(np.prod(leaf.shape)))
    rows.setdefault(key, [])
    placed.append((list(rows).index(key), len(rows[key]), tuple(leaf.shape)))
    rows[key].append(leaf.reshape(-1))
  layout = _Layout(treedef, tuple(placed))
  return FlatParams(tuple(jnp.stack(r) for r in rows.values()), layout)

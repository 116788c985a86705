"""Row-sparse gradients: `IndexedSlices`, as `tf.IndexedSlices`.

An `IndexedSlices` stands for a dense array of shape `dense_shape` that is
zero except for the rows `indices`, which hold `values` (duplicate indices
add up). It is a pytree, so it passes through `jax.jit`; the transforms of
this package treat it as one gradient leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_keras_sgd import _native


@jax.tree_util.register_pytree_node_class
class IndexedSlices:
  """A row-sparse array: `values[i]` belongs in row `indices[i]`.

  Args:
    values: array of shape `(n,) + dense_shape[1:]`.
    indices: integer array of shape `(n,)`; duplicates are summed.
    dense_shape: the shape of the dense array this stands for.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import IndexedSlices
    >>> g = IndexedSlices(jnp.ones((2, 3)), jnp.array([0, 2]), (4, 3))
    >>> g.to_dense().sum(axis=1)
    Array([3., 0., 3., 0.], dtype=float32)
  """

  __slots__ = ("values", "indices", "dense_shape", "unique_indices")

  def __init__(self, values: Any, indices: Any, dense_shape: Any):
    dense_shape = tuple(int(d) for d in np.asarray(dense_shape).reshape(-1))
    values = jnp.asarray(values) if not _is_array(values) else values
    indices = jnp.asarray(indices) if not _is_array(indices) else indices
    if not jnp.issubdtype(indices.dtype, jnp.integer):
      raise TypeError(
        "`indices` of an IndexedSlices must be integers. "
        f"Received: indices of dtype {indices.dtype}."
      )
    if indices.ndim != 1:
      raise ValueError(
        "`indices` of an IndexedSlices must be one-dimensional. "
        f"Received: indices of shape {indices.shape}."
      )
    if not dense_shape:
      raise ValueError(
        "`dense_shape` of an IndexedSlices must have at least one "
        f"dimension. Received: dense_shape={dense_shape}."
      )
    expected = (indices.shape[0],) + dense_shape[1:]
    if tuple(values.shape) != expected:
      raise ValueError(
        "`values` of an IndexedSlices must have shape (len(indices),) + "
        f"dense_shape[1:] = {expected}. Received: values of shape "
        f"{tuple(values.shape)} for dense_shape={dense_shape}."
      )
    _check_index_range(indices, dense_shape[0])
    self.values = values
    self.indices = indices
    self.dense_shape = dense_shape
    self.unique_indices = False

  @property
  def dtype(self):
    return self.values.dtype

  @property
  def shape(self) -> tuple[int, ...]:
    return self.dense_shape

  def to_dense(self) -> jax.Array:
    """The dense array this stands for (duplicates summed)."""
    zeros = jnp.zeros(self.dense_shape, self.values.dtype)
    return zeros.at[self.indices].add(self.values, mode="promise_in_bounds")

  @classmethod
  def unchecked(
    cls,
    values: Any,
    indices: Any,
    dense_shape: tuple[int, ...],
    unique_indices: bool = False,
  ):
    """Builds one without checks, for traced code that keeps the invariants.
    `unique_indices` marks slices whose duplicates were already summed."""
    out = object.__new__(cls)
    out.values, out.indices, out.dense_shape = values, indices, dense_shape
    out.unique_indices = unique_indices
    return out

  def with_values(self, values: Any) -> IndexedSlices:
    """The same rows with new values."""
    return IndexedSlices.unchecked(
      values, self.indices, self.dense_shape, self.unique_indices
    )

  def tree_flatten(self):
    return (self.values, self.indices), (self.dense_shape, self.unique_indices)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls.unchecked(*children, *aux)

  def __repr__(self) -> str:
    return (
      f"IndexedSlices(values={self.values!r}, indices={self.indices!r}, "
      f"dense_shape={self.dense_shape})"
    )


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray)) or hasattr(x, "aval")


def _check_index_range(indices: Any, rows: int) -> None:
  """Rejects concrete out-of-range indices; traced ones cannot be checked."""
  if isinstance(indices, jax.core.Tracer):
    return
  host = np.asarray(indices)
  if host.size and (host.min() < 0 or host.max() >= rows):
    bad = host[(host < 0) | (host >= rows)]
    raise IndexError(
      f"`indices` of an IndexedSlices must lie in [0, {rows}) for "
      f"dense_shape[0]={rows}. Received out-of-range indices: "
      f"{bad[:8].tolist()}."
    )


def is_indexed_slices(x: Any) -> bool:
  return isinstance(x, IndexedSlices)


def tree_map_gradients(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """`jax.tree.map` that treats each `IndexedSlices` as one leaf."""
  return jax.tree.map(fn, tree, *rest, is_leaf=is_indexed_slices)


def tree_leaves_gradients(tree: Any) -> list[Any]:
  return jax.tree.leaves(tree, is_leaf=is_indexed_slices)


def dense_values(g: Any) -> Any:
  """The array a clip sees: the raw values of a slice, else `g`."""
  return g.values if isinstance(g, IndexedSlices) else g


def map_values(fn: Callable[[Any], Any], g: Any) -> Any:
  """Applies `fn` to the values of `g`, dense or sparse."""
  if isinstance(g, IndexedSlices):
    return g.with_values(fn(g.values))
  return fn(g)


def sum_duplicates(g: IndexedSlices) -> IndexedSlices:
  """Sums the values of duplicate indices, with static shapes.

  Returns as many rows as `g` has: the unique indices in ascending order,
  then padding whose index is `dense_shape[0]` and value zero (out of range,
  so scatters with `mode="drop"` ignore it and gathers with `mode="fill"`
  read zeros). Already-unique slices are returned as they are. On the CPU a
  native kernel (`_native`) does it; XLA otherwise, bitwise the same.
  """
  if g.unique_indices:
    return g
  n = g.indices.shape[0]
  rows = g.dense_shape[0]
  if n == 0:
    return IndexedSlices.unchecked(g.values, g.indices, g.dense_shape, True)
  indices = g.indices.astype(jnp.int32)
  if _native.usable(g.values):
    summed, unique = _native.sum_duplicates(_summed_rows, g.values, indices, rows)
  else:
    summed, unique = _summed_rows(g.values, indices, rows)
  return IndexedSlices.unchecked(summed, unique, g.dense_shape, True)


def _summed_rows(values: jax.Array, indices: jax.Array, rows: int):
  """`sum_duplicates` in XLA: `(summed values, unique indices)`."""
  n = indices.shape[0]
  # Sorting the keys alone is much cheaper on XLA's CPU backend than sorting
  # (key, position) pairs, as `jnp.unique(return_inverse=True)` does; each
  # slice then finds its row by binary search.
  ordered = jax.lax.sort(indices)
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  slot = jnp.cumsum(first) - 1
  unique = (
    jnp.full((n,), rows, jnp.int32)
    .at[jnp.where(first, slot, n)]
    .set(ordered, mode="drop")
  )
  inverse = jnp.searchsorted(unique, indices)
  # Summed in the slices' own order, as TensorFlow's unsorted_segment_sum.
  return jax.ops.segment_sum(values, inverse, num_segments=n), unique


def sum_duplicate_indices() -> optax.GradientTransformation:
  """Sums duplicate rows of every `IndexedSlices` gradient (dense ones pass).

  Keras sums duplicates of the raw gradient before its momentum update, so
  `sgd` puts this after clipping (which sees the raw values) and before the
  learning rate: `sum(g_i) * lr` rounds differently from `sum(g_i * lr)`.
  """

  def update_fn(updates, state, params=None):
    del params
    return tree_map_gradients(
      lambda g: sum_duplicates(g) if isinstance(g, IndexedSlices) else g, updates
    ), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def apply_updates(params: Any, updates: Any) -> Any:
  """`optax.apply_updates` that also takes `IndexedSlices` updates.

  A dense update is added as `optax.apply_updates` does. An `IndexedSlices`
  update is scatter-added into its rows only (duplicates add up, in order;
  rows past the table, the padding of deduplicated slices, are dropped), so
  the cost grows with the rows touched, not with the table. Under `jax.jit`
  with the table donated, the scatter happens in place (on the CPU, in a
  native kernel).

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import IndexedSlices, apply_updates
    >>> table = jnp.zeros((4, 2))
    >>> u = IndexedSlices(jnp.ones((3, 2)), jnp.array([1, 3, 1]), (4, 2))
    >>> apply_updates(table, u)[:, 0]
    Array([0., 2., 0., 1.], dtype=float32)
  """

  def apply(u, p):
    p = jnp.asarray(p)
    if isinstance(u, IndexedSlices):
      values = u.values.astype(p.dtype)
      if _native.usable(p, values):
        indices = u.indices.astype(jnp.int32)
        return _native.scatter_add(_added_rows, p, indices, values, u.unique_indices)
      return _added_rows(p, u.indices, values)
    return jnp.asarray(p + u).astype(p.dtype)

  return tree_map_gradients(apply, updates, params)


def _added_rows(table: jax.Array, indices: jax.Array, values: jax.Array) -> jax.Array:
  """`apply_updates` of one `IndexedSlices` in XLA."""
  return table.at[indices].add(values, mode="drop")


def embedding_gradient(
  loss_fn: Callable[..., Any], table: Any, ids: Any, *args: Any
) -> tuple[jax.Array, IndexedSlices]:
  """The loss and its `IndexedSlices` gradient for an embedding lookup.

  Differentiates `loss_fn(table[ids], *args)` with respect to the gathered
  rows, not the table, so no dense gradient of the table's size is ever
  made: the gradient is one row per id (ids repeated in a batch give
  duplicate rows, which the optimizer sums).

  Args:
    loss_fn: `loss_fn(rows, *args) -> scalar`, where `rows = table[ids]`.
    table: the embedding table, shape `(vocabulary, ...)`.
    ids: integer ids of any shape.
    *args: further arguments to `loss_fn` (not differentiated).

  Returns:
    `(loss, IndexedSlices(values, ids.ravel(), table.shape))`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import embedding_gradient
    >>> table = jnp.ones((1000, 4))
    >>> loss, g = embedding_gradient(lambda rows: rows.sum(), table, jnp.array([3, 9]))
    >>> g.values.shape, g.indices.tolist()
    ((2, 4), [3, 9])
  """
  ids = jnp.asarray(ids)
  rows = jnp.take(jnp.asarray(table), ids, axis=0)
  loss, g_rows = jax.value_and_grad(loss_fn)(rows, *args)
  row_shape = tuple(jnp.shape(table)[1:])
  return loss, IndexedSlices.unchecked(
    g_rows.reshape((-1,) + row_shape), ids.reshape(-1), tuple(jnp.shape(table))
  )

"""Summing gradients across replicas, as Keras does before clipping."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _sparse

AxisName = Hashable | Sequence[Hashable]


def _concatenate_replicas(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """The replicas' `x` stacked along axis 0, the same on every replica.

  Built from `psum` (each replica fills its own block of zeros), so the
  result is known to be replicated and may leave `shard_map` as `P()`;
  `all_gather` gives the same values but is typed as varying.
  """
  size = jax.lax.psum(1, axis_name)
  blocks = jnp.zeros((size,) + x.shape, x.dtype)
  blocks = blocks.at[jax.lax.axis_index(axis_name)].set(x)
  return jax.lax.psum(blocks, axis_name).reshape((size * x.shape[0],) + x.shape[1:])


def aggregate_gradients(axis_name: AxisName) -> optax.GradientTransformation:
  """Sums gradients over the named mapped axis (`shard_map`, `pmap`).

  Keras's legacy optimizers all-reduce (sum) the replicas' gradients before
  clipping, so clipping sees the aggregated gradient. Inside
  `jax.shard_map` (or `pmap`) over a data axis, this is `lax.psum` over that
  axis. An `IndexedSlices` is aggregated as TensorFlow aggregates one: the
  replicas' slices are concatenated (duplicates are summed later), so no
  dense gradient is made.

  Args:
    axis_name: the mapped axis (or axes) to sum over.

  Returns:
    A stateless `optax.GradientTransformation`; use it only inside a mapped
    function that binds `axis_name`.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jax.sharding import PartitionSpec as P
    >>> from optax_keras_sgd import aggregate_gradients
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> tx = aggregate_gradients("data")
    >>> f = jax.shard_map(lambda g: tx.update(g, tx.init(g))[0], mesh=mesh,
    ...                   in_specs=P("data"), out_specs=P())
    >>> f(jnp.ones(4))
    Array([1., 1., 1., 1.], dtype=float32)
  """

  def aggregate(g):
    if isinstance(g, _sparse.IndexedSlices):
      return _sparse.IndexedSlices.unchecked(
          _concatenate_replicas(g.values, axis_name),
          _concatenate_replicas(g.indices, axis_name),
          g.dense_shape)
    return jax.lax.psum(g, axis_name)

  def update_fn(updates, state, params=None):
    del params
    return _sparse.tree_map_gradients(aggregate, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)

"""Summing gradients across replicas, as Keras does before clipping."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _sparse

AxisName = Hashable | Sequence[Hashable]


def _varying_over(x: jax.Array) -> frozenset:
  """The mapped axes over which `x` is typed as differing between replicas
  (`manual_axis_type.varying` in new JAX, `vma` in older releases; empty
  under `check_vma=False` and `pmap`, where nothing is typed)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", ()))


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


def _sum_over(g: Any, over: tuple) -> Any:
  """`g` summed over the axes `over` (slices concatenated), or `g` itself."""
  if not over:
    return g
  if isinstance(g, _sparse.IndexedSlices):
    return _sparse.IndexedSlices.unchecked(
      _concatenate_replicas(g.values, over),
      _concatenate_replicas(g.indices, over),
      g.dense_shape,
    )
  return jax.lax.psum(g, over)


def aggregate_gradients(axis_name: AxisName) -> optax.GradientTransformation:
  """Sums gradients over the named mapped axis (`shard_map`, `pmap`).

  Keras's legacy optimizers all-reduce (sum) the replicas' gradients before
  clipping, so clipping sees the aggregated gradient. Inside
  `jax.shard_map` (or `pmap`) over a data axis, this is `lax.psum` over that
  axis, for each gradient that still differs between replicas. Under
  `shard_map`'s default `check_vma=True`, JAX already sums the gradient of a
  replicated (invariant) parameter when it differentiates, and such a
  gradient is left as it is; with `check_vma=False` (or `pmap`), gradients
  are per-replica and all are summed. An `IndexedSlices` is aggregated as
  TensorFlow aggregates one: the replicas' slices are concatenated
  (duplicates are summed later), so no dense gradient is made.

  Args:
    axis_name: the mapped axis (or axes) to sum over.

  Returns:
    A stateless `optax.GradientTransformation`; use it only inside a mapped
    function that binds `axis_name`.

  Examples:
    Per-replica gradients (one device here) summed across the data axis:

    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> from optax_keras_sgd import aggregate_gradients
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> tx = aggregate_gradients("data")
    >>> f = jax.shard_map(lambda g: tx.update(g, tx.init(g))[0], mesh=mesh,
    ...                   in_specs=P("data"), out_specs=P())
    >>> f(jax.device_put(jnp.ones(4), NamedSharding(mesh, P("data"))))
    Array([1., 1., 1., 1.], dtype=float32)
  """

  axes = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)

  def update_fn(updates, state, params=None):
    del params
    # Axes where values carry vma types (check_vma=True) sum only the
    # gradients still varying over them; the others (check_vma=False, pmap)
    # sum every gradient.
    typed = [a for a in axes if a in _varying_over(jax.lax.axis_index(a))]
    untyped = tuple(a for a in axes if a not in typed)

    def aggregate(g):
      varying = _varying_over(_sparse.dense_values(g))
      over = tuple(a for a in typed if a in varying) + untyped
      return _sum_over(g, over)

    return _sparse.tree_map_gradients(aggregate, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)

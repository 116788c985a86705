"""Keras's momentum velocity, with the learning rate inside it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax
from jax import lax

from optax_keras_sgd import _numerics, _sparse, _validation


class KerasMomentumState(NamedTuple):
  """One velocity (Keras's `momentum` slot) per parameter, zeros at first."""

  velocity: Any


def has_velocity(momentum: Any) -> bool:
  """Keras keeps a velocity unless momentum is a plain number equal to 0."""
  if isinstance(momentum, (int, float)) and not isinstance(momentum, bool):
    return momentum > 0
  return True


def velocity_step(m: jax.Array, v: jax.Array, u: jax.Array) -> jax.Array:
  """Keras's new velocity `m * v + u` (`u = -lr * g`), the product rounded."""
  return lax.add(_numerics.rounded_product(m, v), u)


def update_from(m: jax.Array, new_v: jax.Array, u: jax.Array, nesterov: bool):
  """The update from the new velocity: itself, or Nesterov's `m * v + u`."""
  return velocity_step(m, new_v, u) if nesterov else new_v


def sparse_velocity_step(m, v, indices, u, nesterov):
  """Lazy momentum on rows `indices` (unique) only, `u` their scaled values:
  returns the update's rows and the new velocity
  (`ResourceSparseApplyKerasMomentum`). Rows outside `v` read zeros and are
  not written."""
  v_rows = v.at[indices].get(mode="fill", fill_value=0)
  v_rows = velocity_step(m, v_rows, u)
  out = update_from(m, v_rows, u, nesterov)
  return out, v.at[indices].set(v_rows, mode="drop")


def _sparse_trace(g, v, m, nesterov):
  rows = _sparse.sum_duplicates(g)
  out, new_v = sparse_velocity_step(m, v, rows.indices, rows.values, nesterov)
  return rows.with_values(out), new_v


def keras_momentum(
  momentum: jax.typing.ArrayLike, nesterov: bool = False
) -> optax.GradientTransformation:
  r"""Keras's momentum on updates already scaled by `-lr_t`.

  With `u = -lr_t * g` from `scale_by_keras_learning_rate`:

  .. math::
    v \leftarrow m v + u, \qquad
    \text{update} = v \;\; \text{or, with Nesterov,} \;\; m v + u

  which is Keras's `v = m*v - lr*g; w += v` (Nesterov: `w += m*v - lr*g`).
  Because the learning rate sits inside `v`, a learning rate that changes
  between steps does not rescale past velocity, unlike `optax.trace` followed
  by `optax.scale_by_learning_rate`.

  A plain number 0 keeps no state and passes updates through, as Keras keeps
  no momentum slot then; an array (even zero) keeps a velocity. For an
  `IndexedSlices` update, duplicate rows are summed and only the rows present
  change, in both the velocity and the update (Keras's lazy sparse momentum).

  Args:
    momentum: in [0, 1] when a number; a scalar array is accepted unchecked.
    nesterov: whether to use Nesterov momentum.

  Returns:
    An `optax.GradientTransformation`.

  Raises:
    ValueError: if `momentum` is a number outside [0, 1].

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import keras_momentum
    >>> tx = keras_momentum(0.9)
    >>> state = tx.init(jnp.zeros(1))
    >>> u, state = tx.update(jnp.array([-0.1]), state)
    >>> u, state = tx.update(jnp.array([-0.1]), state)
    >>> u
    Array([-0.19], dtype=float32)
  """
  _validation.check_momentum(momentum)
  _validation.check_bool("nesterov", nesterov)
  if not has_velocity(momentum):
    return optax.identity()

  def init_fn(params):
    return KerasMomentumState(velocity=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params

    per_dtype: dict[Any, jax.Array] = {}

    def step(u, v):
      if v.dtype not in per_dtype:
        per_dtype[v.dtype] = _numerics.as_hyperparameter(momentum, v.dtype)
      m = per_dtype[v.dtype]
      if isinstance(u, _sparse.IndexedSlices):
        return _sparse_trace(u, v, m, nesterov)
      new_v = velocity_step(m, v, u)
      return update_from(m, new_v, u, nesterov), new_v

    treedef: Any = jax.tree.structure(updates, is_leaf=_sparse.is_indexed_slices)
    pairs = treedef.flatten_up_to(
      _sparse.tree_map_gradients(step, updates, state.velocity)
    )
    new_updates = treedef.unflatten([u for u, _ in pairs])
    new_velocity = treedef.unflatten([v for _, v in pairs])
    return new_updates, KerasMomentumState(velocity=new_velocity)

  return optax.GradientTransformation(init_fn, update_fn)

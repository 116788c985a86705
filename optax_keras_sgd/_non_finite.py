"""Opt-in: skip a step whose gradients are not all finite."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _numerics, _sparse


class SkipNonFiniteState(NamedTuple):
  """The wrapped state, and how many steps were skipped so far."""

  inner_state: Any
  skipped: jax.Array


def all_finite(updates: Any) -> jax.Array:
  """True when every gradient element (sparse values included) is finite."""
  leaves = [_sparse.dense_values(g) for g in _sparse.tree_leaves_gradients(updates)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(_numerics.stacked_scalars([jnp.all(jnp.isfinite(x)) for x in leaves]))


def skip_non_finite(
  inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  """Wraps `inner` so a step with a NaN or infinite gradient changes nothing.

  Keras propagates NaN into the weights (and `sgd` does the same by default).
  With this wrapper, such a step returns updates of `-0.0` (so that
  `apply_updates` leaves every parameter bitwise unchanged, signed zeros
  included), keeps the inner state (velocities and step counter) exactly as
  it was, and counts the step in `skipped`. Under `jit` the choice is made on
  device, with no host synchronisation.

  Args:
    inner: the transformation to protect, typically `optax_keras_sgd.sgd(...)`.

  Returns:
    An `optax.GradientTransformation` with a `SkipNonFiniteState`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from optax_keras_sgd import sgd, skip_non_finite, skipped_steps
    >>> tx = skip_non_finite(sgd(0.1, momentum=0.9))
    >>> params = jnp.ones(2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state, params)
    >>> optax.apply_updates(params, updates), int(skipped_steps(state))
    (Array([1., 1.], dtype=float32), 1)
  """

  def init_fn(params):
    return SkipNonFiniteState(inner.init(params), jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    finite = all_finite(updates)
    new_updates, new_inner = inner.update(updates, state.inner_state, params)

    def keep(u):
      return jnp.where(finite, u, jnp.asarray(-0.0, u.dtype))

    new_updates = _sparse.tree_map_gradients(
      lambda u: _sparse.map_values(keep, u), new_updates
    )
    new_inner = jax.tree.map(
      lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state
    )
    skipped = state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32)
    return new_updates, SkipNonFiniteState(new_inner, skipped)

  return optax.GradientTransformation(init_fn, update_fn)


def skipped_steps(state: optax.OptState) -> jax.Array:
  """How many steps `skip_non_finite` has skipped, from its state.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import sgd, skip_non_finite, skipped_steps
    >>> tx = skip_non_finite(sgd(0.1))
    >>> _, state = tx.update(jnp.array([jnp.inf]), tx.init(jnp.zeros(1)))
    >>> int(skipped_steps(state))
    1
  """
  found = [
    s
    for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, SkipNonFiniteState))
    if isinstance(s, SkipNonFiniteState)
  ]
  if len(found) != 1:
    raise ValueError(
      "`state` must hold exactly one SkipNonFiniteState (from "
      f"`skip_non_finite`); found {len(found)}."
    )
  return found[0].skipped

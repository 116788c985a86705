"""Reading the functional state: the step counter and the velocities."""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_keras_sgd import _learning_rate, _momentum


def _find(state: Any, kind: type) -> list[Any]:
  return [
      s
      for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kind))
      if isinstance(s, kind)
  ]


def iterations(state: optax.OptState) -> jax.Array:
  """The number of steps taken (Keras's `iterations`), from an `sgd` state.

  Raises:
    ValueError: if `state` holds no `ScaleByLearningRateState`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import sgd, iterations
    >>> tx = sgd(0.1)
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.ones(2), state)
    >>> int(iterations(state))
    1
  """
  found = _find(state, _learning_rate.ScaleByLearningRateState)
  if len(found) != 1:
    raise ValueError(
        "`state` must hold exactly one ScaleByLearningRateState (an `sgd` "
        f"state); found {len(found)} in {type(state).__name__}."
    )
  return found[0].count


def velocity(state: optax.OptState) -> Any | None:
  """The velocities (Keras's `momentum` slots), or None without momentum.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import sgd, velocity
    >>> tx = sgd(0.1, momentum=0.9)
    >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    >>> velocity(state)
    Array([-0.1, -0.1], dtype=float32)
    >>> velocity(sgd(0.1).init(jnp.zeros(2))) is None
    True
  """
  found = _find(state, _momentum.TraceState)
  return found[0].velocity if found else None

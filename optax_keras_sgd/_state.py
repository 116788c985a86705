"""Reading the functional state: the step counter and the velocities."""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_keras_sgd import _learning_rate, _momentum


def _find(state: Any, name: str) -> Any:
  """The one state named `name` in `state` (None if there is none)."""
  try:
    return optax.tree.get(state, name)
  except KeyError:
    raise ValueError(
      f"`state` holds more than one {name}: one `sgd` state is expected."
    ) from None


def iterations(state: optax.OptState) -> jax.Array:
  """The number of steps taken (Keras's `iterations`), from an `sgd` state.

  Raises:
    ValueError: if `state` holds no `KerasLearningRateState`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import sgd, iterations
    >>> tx = sgd(0.1)
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.ones(2), state)
    >>> int(iterations(state))
    1
  """
  found = _find(state, _learning_rate.KerasLearningRateState.__name__)
  if found is None:
    raise ValueError(
      "`state` must hold a KerasLearningRateState (an `sgd` "
      f"state); {type(state).__name__} has none."
    )
  return found.count


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
  found = _find(state, _momentum.KerasMomentumState.__name__)
  return None if found is None else found.velocity

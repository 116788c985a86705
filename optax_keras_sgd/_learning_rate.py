"""The learning-rate step of Keras 2's legacy optimizers, with legacy decay."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_keras_sgd import _numerics, _sparse, _validation


class KerasLearningRateState(NamedTuple):
  """The step counter, Keras's `iterations`: steps taken before this one."""

  # Named `count` as in optax's states (it shadows tuple.count).
  count: jax.Array  # type: ignore[assignment]


def scaled(rate: jax.Array, g: jax.Array) -> jax.Array:
  """Keras's `-(lr_t * g)`, the product rounded to `g`'s dtype."""
  return lax.neg(_numerics.rounded_product(rate, g))


def check_inputs(updates: Any, params: Any) -> None:
  """Gradients (and parameters, if given) are floating and match."""
  _validation.check_float_leaves(updates, "The gradient")
  if params is not None:
    _validation.check_float_leaves(params, "The parameter")
    _validation.check_gradients_match(updates, params)


def learning_rate_at(
  learning_rate: optax.ScalarOrSchedule,
  decay: jax.typing.ArrayLike,
  count: jax.typing.ArrayLike,
  dtype: Any,
) -> jax.Array:
  """The learning rate Keras uses at step `count` for a variable of `dtype`.

  A schedule is called with the step cast to `dtype` (as Keras casts
  `iterations` to the variable's dtype); its value, or the number, passes
  through float32 and is cast to `dtype`. A positive `decay` then divides by
  `1 + decay * count`, computed in `dtype`.
  """
  # Each op rounds to `dtype` (`rounded`), as TensorFlow's kernels do: XLA
  # would otherwise keep float16/bfloat16 intermediates in float32.
  rounded = _numerics.rounded
  step = rounded(jnp.asarray(count).astype(dtype))
  lr = learning_rate(step) if callable(learning_rate) else learning_rate
  lr = _numerics.as_hyperparameter(lr, dtype)
  if _validation.concrete_number(decay) != 0.0:
    decay_t = _numerics.as_hyperparameter(decay, dtype)
    lr = lr / rounded(jnp.asarray(1.0, dtype) + rounded(decay_t * step))
  return rounded(lr)


def scale_by_keras_learning_rate(
  learning_rate: optax.ScalarOrSchedule,
  decay: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformation:
  r"""Multiplies updates by `-lr_t`, Keras's learning rate at this step.

  .. math::
    \eta_t = \frac{\eta(t)}{1 + d \cdot t}, \qquad u \leftarrow -(\eta_t \, g)

  where `t` is the number of steps taken before this one, `eta(t)` the number
  or `learning_rate(t)` for a schedule (any callable of the step: an optax
  schedule or an `optax_keras_sgd.schedules` object), and `d` the legacy
  inverse-time `decay` (0 disables it). Each dtype among the updates gets its
  own `eta_t` by the reference's float32 rule.

  Args:
    learning_rate: a number, a scalar array, or a callable of the step.
    decay: legacy inverse-time decay, >= 0.

  Returns:
    An `optax.GradientTransformation` whose state counts the steps.

  Raises:
    ValueError: if `decay` is negative.
    TypeError: if `learning_rate` is neither a real scalar nor callable.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import scale_by_keras_learning_rate
    >>> tx = scale_by_keras_learning_rate(0.1, decay=1.0)
    >>> state = tx.init(jnp.zeros(1))
    >>> u, state = tx.update(jnp.ones(1), state)
    >>> u, state = tx.update(jnp.ones(1), state)  # lr 0.1 / (1 + 1 * 1)
    >>> u
    Array([-0.05], dtype=float32)
  """
  _validation.check_learning_rate(learning_rate)
  _validation.check_non_negative("decay", decay)

  def init_fn(params):
    del params
    return KerasLearningRateState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    check_inputs(updates, params)
    rates: dict[Any, jax.Array] = {}

    def rate(dtype):
      dtype = jnp.dtype(dtype)
      if dtype not in rates:
        rates[dtype] = learning_rate_at(learning_rate, decay, state.count, dtype)
      return rates[dtype]

    updates = _sparse.tree_map_gradients(
      lambda g: _sparse.map_values(lambda x: scaled(rate(x.dtype), x), g), updates
    )
    return updates, KerasLearningRateState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)

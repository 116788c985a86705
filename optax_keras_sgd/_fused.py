"""Keras's learning-rate scale and momentum as one native pass.

`sgd`'s last two blocks (`scale_by_keras_learning_rate`, `keras_momentum`)
and, for the facade, the parameter update, run as one `_native` kernel call
per dtype when the step allows it. Each function returns None when it does
not, and the caller then runs the XLA blocks, which compute the same bits.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import optax

from optax_keras_sgd import _learning_rate, _momentum, _native, _numerics


class Settings(NamedTuple):
  """The hyperparameters of the two blocks."""

  learning_rate: Any
  decay: Any
  momentum: Any
  nesterov: bool


def _scalars(settings: Settings, count: jax.Array, leaves: list[jax.Array]):
  dtypes = list(dict.fromkeys(x.dtype for x in leaves))
  rates = {
    d: _learning_rate.learning_rate_at(settings.learning_rate, settings.decay, count, d)
    for d in dtypes
  }
  momenta = {d: _numerics.as_hyperparameter(settings.momentum, d) for d in dtypes}
  return rates, momenta


def _states(count, velocity):
  return (
    _learning_rate.KerasLearningRateState(count=optax.safe_increment(count)),
    _momentum.KerasMomentumState(velocity=velocity) if velocity is not None else None,
  )


def update(
  settings: Settings, updates: Any, scale_state: Any, trace_state: Any, params: Any
) -> tuple[Any, Any, Any] | None:
  """The two blocks' `(updates, scale_state, trace_state)`, or None.

  Only with a velocity: without one, the scaled gradient is the update, and
  XLA fuses it into the caller's `apply_updates`.
  """
  if not _momentum.has_velocity(settings.momentum):
    return None
  if not _native.usable(updates, trace_state.velocity, params):
    return None
  _learning_rate.check_inputs(updates, params)
  grads, treedef = jax.tree.flatten(updates)
  treedef = cast(Any, treedef)
  velocities = treedef.flatten_up_to(trace_state.velocity)
  rates, momenta = _scalars(settings, scale_state.count, grads)
  mode = _native.NESTEROV_UPDATE if settings.nesterov else _native.VELOCITY
  new_v, nesterov = _native.step(mode, rates, momenta, grads, velocities, None)
  velocity = treedef.unflatten(new_v)
  out = treedef.unflatten(nesterov) if settings.nesterov else velocity
  return (out, *_states(scale_state.count, velocity))


def apply(
  settings: Settings, grads: Any, scale_state: Any, trace_state: Any, params: Any
) -> tuple[Any, Any, Any] | None:
  """`(new params, scale_state, trace_state)` in one pass, or None."""
  has_velocity = _momentum.has_velocity(settings.momentum)
  velocity = trace_state.velocity if has_velocity else None
  if not _native.usable(grads, velocity, params):
    return None
  _learning_rate.check_inputs(grads, params)
  leaves, treedef = jax.tree.flatten(grads)
  treedef = cast(Any, treedef)
  values = treedef.flatten_up_to(params)
  rates, momenta = _scalars(settings, scale_state.count, leaves)
  if has_velocity:
    mode = _native.APPLY_NESTEROV if settings.nesterov else _native.APPLY
    velocities = treedef.flatten_up_to(velocity)
  else:
    mode, velocities = _native.APPLY_NO_VELOCITY, None
  new_v, new_p = _native.step(mode, rates, momenta, leaves, velocities, values)
  new_velocity = None if new_v is None else treedef.unflatten(new_v)
  scale, trace = _states(scale_state.count, new_velocity)
  return treedef.unflatten(new_p), scale, trace if has_velocity else trace_state

"""Handing our state to a live `tf_keras` legacy optimizer, through its
public API only (no TensorFlow import here: the objects are the caller's)."""

from __future__ import annotations

from typing import Any

import numpy as np

from optax_keras_sgd.checkpoints import _migrate, _write


def build_keras_slots(optimizer: Any, variables: list[Any]) -> None:
  """Creates `optimizer`'s weights (`iter` and one momentum slot per
  variable, in the order of `variables`), so that `set_weights` can load a
  state into it, with its public API: one step of zero gradients, after
  which the variables and the step count are put back as they were.

  Args:
    optimizer: a `tf_keras.optimizers.legacy.SGD` that has not stepped yet.
    variables: its model's trainable `tf.Variable`s.
  """
  if optimizer.weights:
    raise ValueError(
      "`optimizer` already has weights: build_keras_slots is for a fresh optimizer."
    )
  saved = [v.numpy() for v in variables]
  optimizer.apply_gradients([(v * 0, v) for v in variables])
  for v, value in zip(variables, saved):
    v.assign(value)
  optimizer.iterations.assign(0)


def keras_weights(
  params: Any,
  opt_state: Any,
  variables: list[Any] | None = None,
  *,
  names: _migrate.Names = None,
) -> list[np.ndarray]:
  """Our state as the list a Keras SGD's `set_weights` takes: the step count
  (int64), then one velocity per variable.

  Args:
    params: our parameters (a pytree or a list of `Variable`s).
    opt_state: the state of `sgd(...)`, or an `SGD` built on `params`.
    variables: the Keras variables (or their paths, such as
      `"dense/kernel"`) in the order their slots were made
      (`build_keras_slots`' order); by default the order of `params`.
    names: as in `to_optax`, for parameters named differently.
  """
  _, count, velocities = _write.our_state(params, opt_state)
  velocities = list(velocities or [])
  if variables is not None and velocities:
    paths = [v if isinstance(v, str) else v.name.split(":")[0] for v in variables]
    keras_paths = _migrate.match(paths, params, names, "the Keras variables")
    by_path = dict(zip(keras_paths, velocities))
    velocities = [by_path[p] for p in paths]
  return [np.asarray(count, np.int64)] + velocities

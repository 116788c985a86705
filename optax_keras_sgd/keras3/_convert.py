"""Legacy configs for Keras 3's own SGD, and a legacy run's state into ours."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from optax_keras_sgd import _config, schedules
from optax_keras_sgd.keras3._optimizer import SGD


def keras_sgd_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """A legacy `tf_keras` SGD config as a config of Keras 3's own `SGD`.

  `decay` becomes `InverseTimeDecay(learning_rate, decay_steps=1,
  decay_rate=decay)`, the same formula. Keras 3's SGD then runs the same
  formulas, but not the legacy rounding (see the README's table).

  Raises:
    ValueError: for what Keras 3's SGD cannot express, naming it: more than
      one clipping argument, or `decay` with a learning-rate schedule.
  """
  kwargs = _config.optimizer_kwargs_from_config(dict(config))
  clips = [k for k in ("clipvalue", "clipnorm", "global_clipnorm") if k in kwargs]
  if len(clips) > 1:
    raise ValueError(
      f"Keras 3's SGD takes one clipping argument; this config has {clips}. "
      "Use optax_keras_sgd.keras3.SGD to keep them all."
    )
  if kwargs.pop("skip_non_finite", False):
    raise ValueError("Keras 3's SGD has no `skip_non_finite`.")
  learning_rate = kwargs.get("learning_rate", 0.01)
  decay = float(kwargs.pop("decay", 0.0))
  if isinstance(learning_rate, schedules.LearningRateSchedule):
    if decay:
      raise ValueError(
        "Keras 3's SGD cannot apply legacy `decay` on top of a schedule "
        f"(decay={decay}). Use optax_keras_sgd.keras3.SGD."
      )
    kwargs["learning_rate"] = {
      "module": "keras.optimizers.schedules",
      **schedules.serialize(learning_rate),
      "registered_name": None,
    }
  elif decay:
    kwargs["learning_rate"] = {
      "module": "keras.optimizers.schedules",
      "class_name": "InverseTimeDecay",
      "config": {
        "initial_learning_rate": float(learning_rate),
        "decay_steps": 1,
        "decay_rate": decay,
        "staircase": False,
        "name": "InverseTimeDecay",
      },
      "registered_name": None,
    }
  if "momentum" in kwargs:
    kwargs["momentum"] = float(kwargs["momentum"])
  return kwargs


def restore_legacy_state(
  optimizer: SGD,
  model: Any,
  source: str | os.PathLike | Any,
  *,
  names: Mapping[str, str] | Callable[[str], str] | None = None,
) -> SGD:
  """Loads a legacy run's step count and velocities into `optimizer`, built
  for `model.trainable_variables`.

  Args:
    optimizer: the optimizer to continue with (e.g. `SGD.from_config` of the
      file's config, `KerasState.config`).
    model: the Keras 3 model, with the legacy model's weights loaded.
    source: a Keras H5 file or TF checkpoint (`optax_keras_sgd.checkpoints
      .read` reads it, without TensorFlow), or what `read` returned.
    names: a mapping (or function) from legacy variable path to Keras 3 path,
      for layers named differently. Keras 3 paths start with the model's
      name (`sequential/dense/kernel`); that prefix is matched without it.

  Raises:
    ValueError: for unmatched variables, or shapes or dtypes that differ;
      nothing is assigned then.
  """
  from optax_keras_sgd.checkpoints import KerasState, _migrate, read

  state = source if isinstance(source, KerasState) else read(source)
  variables = list(model.trainable_variables)
  prefix = f"{model.name}/"
  paths = [v.path.removeprefix(prefix) for v in variables]
  if len(set(paths)) != len(paths):
    raise ValueError(f"The model's trainable variables share paths: {paths}.")
  # One leaf per variable, keyed by its path (the matching reads leaf paths).
  params = {p: np.zeros(v.shape, v.dtype) for p, v in zip(paths, variables)}
  optimizer.build(variables)
  by_path = {}
  if optimizer._use_momentum:
    sorted_paths = _migrate.targets(params)[0]
    by_path = dict(zip(sorted_paths, _migrate.velocities(state, params, names)))
  optimizer._iterations.assign(np.int32(state.iterations))
  for variable, path in zip(variables, paths) if by_path else ():
    optimizer.momentums[optimizer._get_variable_index(variable)].assign(by_path[path])
  return optimizer

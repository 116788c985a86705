"""A Keras 3 SGD's state, from a `.keras` archive or a live Keras 3 model.

A Keras 3 file lists the optimizer's variables by index (`optimizer/vars/0`
is the step count, `1` the learning rate when it is a number, then one
momentum per trainable variable in `model.trainable_variables` order) and the
layers' variables without their trainable flags, so only the model tells
which momentum belongs to which variable. Keras 3 itself rebuilds it
(`keras.saving.load_model`); with `KERAS_BACKEND=jax` no TensorFlow is
imported.

Keras 3's SGD keeps the legacy velocity (`v = m*v - lr*g`, `w += v`, and
Nesterov `w += m*v - lr*g`), so its state continues a run exactly as the
legacy state does; `optax_keras_sgd.keras3.SGD` stores the same variables.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from optax_keras_sgd import _config
from optax_keras_sgd.checkpoints._read import KerasState, require

# Keras 3 arguments with no legacy meaning, and the values that mean "off".
_KERAS3_ONLY = {
  "weight_decay": None,
  "use_ema": False,
  "gradient_accumulation_steps": None,
  "loss_scale_factor": None,
}


def _keras() -> Any:
  keras = require("keras", "optax-keras-sgd[keras3]")
  if keras.backend.backend() == "jax":
    import optax_keras_sgd.keras3  # noqa: F401  (registers our SGD for loading)
  return keras


def _legacy_config(optimizer: Any, source: str) -> dict[str, Any]:
  """The optimizer's config in the legacy SGD's keys and schedule format."""
  config = optimizer.get_config()
  for key, off in _KERAS3_ONLY.items():
    if config.get(key, off) != off:
      raise ValueError(
        f"{source}: the optimizer uses `{key}={config[key]!r}`, which legacy "
        "SGD does not have; its state would not continue the run exactly."
      )
  legacy = {k: v for k, v in config.items() if k in _config.CONFIG_KEYS}
  schedule = legacy.get("learning_rate")
  if isinstance(schedule, dict):  # Keras 3 adds `module` and `registered_name`
    legacy["learning_rate"] = {k: schedule[k] for k in ("class_name", "config")}
  legacy.setdefault("decay", 0.0)
  return {k: v for k, v in legacy.items() if v is not None}


def from_keras3(model: Any, source: str | None = None) -> KerasState:
  """The SGD state of a Keras 3 model whose optimizer is built: Keras 3's
  own `SGD` or `optax_keras_sgd.keras3.SGD`.

  For a `.weights.h5` file: build the model and its optimizer in Keras 3
  (`model.optimizer.build(model.trainable_variables)`), `model.load_weights`
  the file, then call this.

  Args:
    model: the Keras 3 model.
    source: how to name it in messages (default: the model's name).

  Returns:
    A `KerasState` whose paths drop the model's name (`dense/kernel`, not
    `sequential/dense/kernel`), as the legacy files' paths do.

  Raises:
    ValueError: naming the source, for another optimizer class, an optimizer
      not built, or Keras 3 arguments with no legacy meaning.
  """
  source = source or f"the Keras 3 model {model.name!r}"
  optimizer = getattr(model, "optimizer", None)
  if optimizer is None or type(optimizer).__name__ != "SGD":
    raise ValueError(
      f"{source}: the optimizer is {type(optimizer).__name__}, not an SGD."
    )
  if not optimizer.built:
    raise ValueError(
      f"{source}: the optimizer is not built (no variables yet). Call "
      "`model.optimizer.build(model.trainable_variables)` before loading."
    )
  prefix = f"{model.name}/"
  path = lambda v: v.path.removeprefix(prefix)  # noqa: E731
  momentum = {}
  if optimizer.momentums:
    for v in model.trainable_variables:
      slot = optimizer.momentums[optimizer._get_variable_index(v)]
      momentum[path(v)] = np.asarray(slot)
  return KerasState(
    source=source,
    config=_legacy_config(optimizer, source),
    iterations=int(np.asarray(optimizer.iterations)),
    momentum=momentum,
    variables={path(v): np.asarray(v) for v in model.weights},
  )


def read_archive(path: str | os.PathLike) -> KerasState:
  """The SGD state of a Keras 3 `.keras` archive (saved with its optimizer)."""
  keras = _keras()
  path = os.fspath(path)
  try:
    model = keras.saving.load_model(path)
  except Exception as e:
    raise ValueError(f"{path}: Keras 3 cannot load this archive: {e}") from e
  return from_keras3(model, source=path)

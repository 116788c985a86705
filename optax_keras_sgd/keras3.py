"""Keras 2's legacy SGD inside Keras 3 (`KERAS_BACKEND=jax`).

`SGD` is a `keras.optimizers.Optimizer` whose step is this project's
Keras-exact step (`optax_keras_sgd.sgd`), so `model.compile(optimizer=SGD(...))`
then `model.fit(...)` trains as `tf_keras`'s legacy SGD does on the same
gradients: the learning rate inside the velocity, Nesterov, legacy `decay`,
momentum schedules, per-tensor `clipnorm` together with `clipvalue` or
`global_clipnorm`, and the legacy schedules' arithmetic. Its variables follow
Keras 3's own SGD (`iteration`, `learning_rate` for a number, then one
`momentum` per variable), so `.keras` files round-trip, and a file saved with
Keras 3's SGD loads into it.

`keras_sgd_config` converts a legacy config to Keras 3's own SGD where that
can express it; `restore_legacy_state` loads a legacy run's step count and
velocities (from a Keras H5 file or TF checkpoint, read without TensorFlow)
into this optimizer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import keras
import numpy as np

from optax_keras_sgd import _config, _momentum, _validation, schedules
from optax_keras_sgd._facade import _hyperparameters as _hyper
from optax_keras_sgd._facade import _runner

if keras.backend.backend() != "jax":  # pragma: no cover - set before import
  raise ImportError(
    "optax_keras_sgd.keras3 runs on Keras 3's JAX backend; Keras was "
    f"imported with the {keras.backend.backend()!r} backend. Set "
    "KERAS_BACKEND=jax before importing keras."
  )

# Keras 3 arguments that keep their meaning around the legacy step: they act
# before it (loss scaling, gradient accumulation) or after it (EMA).
_KERAS3_KWARGS = (
  "loss_scale_factor",
  "gradient_accumulation_steps",
  "use_ema",
  "ema_momentum",
  "ema_overwrite_frequency",
)


def _as_legacy_schedule(value: Any) -> Any:
  """A Keras 3 schedule of one of the six legacy classes becomes ours, whose
  arithmetic is the legacy one; anything else is kept."""
  if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
    name = type(value).__name__
    if getattr(schedules, name, None) is None:
      raise ValueError(
        f"`learning_rate`: the Keras 3 schedule {name} has no Keras 2 "
        "counterpart. Use an `optax_keras_sgd.schedules` schedule or any "
        "callable of the step."
      )
    return schedules.deserialize({"class_name": name, "config": value.get_config()})
  return value


def _value(x: Any) -> Any:
  """A Keras variable's current value (inside a stateless scope, the
  scope's), or `x` itself."""
  return x.value if isinstance(x, keras.Variable) else x


class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
  """Shows a schedule of ours to Keras 3 (`optimizer.learning_rate`,
  callbacks) as a Keras 3 schedule of the step."""

  def __init__(self, schedule: Callable[[Any], Any]):
    self.schedule = schedule

  def __call__(self, step: Any) -> Any:
    return self.schedule(jnp.asarray(_value(step)))

  def get_config(self) -> dict[str, Any]:
    return _hyper.serialize(self.schedule)


@keras.saving.register_keras_serializable(package="optax_keras_sgd", name="SGD")
class SGD(keras.optimizers.Optimizer):
  """Keras 2's legacy SGD as a Keras 3 optimizer (JAX backend).

  Args:
    learning_rate: a float, a schedule (ours, a Keras 3 schedule of one of
      the six legacy classes, or any callable of the step), or a
      zero-argument callable (read when the step is traced).
    momentum: a float in [0, 1] or a schedule (a callable of the step).
    nesterov: whether to use Nesterov momentum.
    decay: legacy time decay, `lr / (1 + decay * iterations)`.
    clipvalue, clipnorm, global_clipnorm: the legacy clipping; `clipnorm` is
      per tensor, and may be combined with `clipvalue` (not with
      `global_clipnorm`), as in Keras 2.
    name: the optimizer's name.
    **kwargs: Keras 3's `loss_scale_factor`, `gradient_accumulation_steps`,
      `use_ema`, `ema_momentum`, `ema_overwrite_frequency`.

  Raises:
    TypeError: for other keyword arguments (`weight_decay` has no legacy
      meaning: use a kernel regularizer).
    ValueError: as the legacy optimizer (negative values, momentum outside
      [0, 1], both `clipnorm` and `global_clipnorm`).
  """

  def __init__(
    self,
    learning_rate: Any = 0.01,
    momentum: Any = 0.0,
    nesterov: bool = False,
    decay: float = 0.0,
    clipvalue: float | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    name: str = "SGD",
    **kwargs: Any,
  ):
    unknown = sorted(set(kwargs) - set(_KERAS3_KWARGS))
    if unknown:
      raise TypeError(
        f"Unexpected keyword arguments: {unknown}. Legacy SGD has no "
        "`weight_decay` (use a kernel regularizer); the Keras 3 arguments "
        f"it accepts are {list(_KERAS3_KWARGS)}."
      )
    for key, value in (
      ("decay", decay),
      ("clipvalue", clipvalue),
      ("clipnorm", clipnorm),
      ("global_clipnorm", global_clipnorm),
    ):
      if value is not None:
        _validation.check_non_negative(key, value)
    _validation.check_clip_exclusive(clipnorm, global_clipnorm)
    _hyper.check_momentum(momentum)
    _validation.check_bool("nesterov", nesterov)
    learning_rate = _as_legacy_schedule(learning_rate)
    if _hyper.is_schedule(learning_rate):
      learning_rate = _Schedule(learning_rate)
    elif not callable(learning_rate):
      _validation.check_learning_rate(learning_rate)
      learning_rate = float(learning_rate)
    # Keras 3's own clipping stays off: the legacy step clips.
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = momentum if callable(momentum) else float(momentum)
    self.nesterov = bool(nesterov)
    self.decay = float(decay)
    self.legacy_clipping = (clipvalue, clipnorm, global_clipnorm)
    self._use_momentum = _momentum.has_velocity(
      momentum if not callable(momentum) else jnp.zeros(())
    )

  def build(self, variables: list[Any]) -> None:
    if self.built:
      return
    super().build(variables)
    self.momentums = (
      self.add_optimizer_variables(variables, "momentum") if self._use_momentum else []
    )

  def _clip_gradients(self, grads: list[Any]) -> list[Any]:
    return grads  # the legacy step clips, after Keras 3's loss unscaling

  def _backend_update_step(
    self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any
  ) -> None:
    """One legacy step over all variables (the Keras 3 `learning_rate`
    argument is not used: the step evaluates the legacy one)."""
    del learning_rate
    schedule = getattr(self._learning_rate, "schedule", None)
    if schedule is not None:
      lr = None
    elif callable(self._learning_rate) and not isinstance(
      self._learning_rate, keras.Variable
    ):
      lr = _hyper.read(self._learning_rate)
    else:
      lr = jnp.asarray(self._learning_rate.value, jnp.float32)
    count = jnp.asarray(_value(self.iterations), jnp.int32)
    momentum: Any = self.momentum
    if _hyper.is_schedule(momentum):
      momentum = momentum(count.astype(jnp.float32))
    elif callable(momentum):
      momentum = _hyper.read(momentum)
    clipvalue, clipnorm, global_clipnorm = self.legacy_clipping
    config = _runner.StepConfig(
      schedule=schedule,
      use_momentum=self._use_momentum,
      nesterov=self.nesterov,
      clipvalue=clipvalue,
      clipnorm=clipnorm,
      global_clipnorm=global_clipnorm,
      decay=self.decay,
    )
    slots: list[Any] = []
    if self._use_momentum:
      slots = [self.momentums[self._get_variable_index(v)] for v in trainable_variables]
    new_values, velocities, _, _ = _runner.step(
      config,
      [v.value for v in trainable_variables],
      list(grads),
      [m.value for m in slots] if slots else None,
      count,
      jnp.zeros((), jnp.int32),
      lr,
      momentum,
    )
    for variable, value in zip(trainable_variables, new_values):
      variable.assign(value)
    for slot, value in zip(slots, velocities or []):
      slot.assign(value)

  def get_config(self) -> dict[str, Any]:
    """The legacy SGD's config (its keys and schedule format), plus the
    Keras 3 arguments given."""
    if isinstance(self._learning_rate, _Schedule):
      learning_rate = _hyper.serialize(self._learning_rate.schedule)
    else:
      learning_rate = _hyper.serialize(_value(self._learning_rate))
    config: dict[str, Any] = {"name": self.name}
    for key, value in zip(
      ("clipvalue", "clipnorm", "global_clipnorm"), self.legacy_clipping
    ):
      if value is not None:
        config[key] = value
    config.update(
      learning_rate=learning_rate,
      decay=self.decay,
      momentum=_hyper.serialize(self.momentum),
      nesterov=self.nesterov,
    )
    base = super().get_config()
    config.update({k: base[k] for k in _KERAS3_KWARGS if base[k] != _DEFAULTS[k]})
    return config

  @classmethod
  def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SGD:
    """From a config of ours or of `tf_keras`'s legacy SGD (the same keys)."""
    extra = {k: config[k] for k in _KERAS3_KWARGS if k in config}
    legacy = {k: v for k, v in config.items() if k not in _KERAS3_KWARGS}
    kwargs = _config.optimizer_kwargs_from_config(legacy, custom_objects)
    kwargs.pop("skip_non_finite", None)
    return cls(**kwargs, **extra)


_DEFAULTS = {
  "loss_scale_factor": None,
  "gradient_accumulation_steps": None,
  "use_ema": False,
  "ema_momentum": 0.99,
  "ema_overwrite_frequency": None,
}


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
  for variable, path in zip(variables, paths):
    if by_path:
      index = optimizer._get_variable_index(variable)
      optimizer.momentums[index].assign(by_path[path])
  return optimizer

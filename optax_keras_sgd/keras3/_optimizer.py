"""`SGD`: Keras 2's legacy SGD as a Keras 3 optimizer (JAX backend).

Keras 3 does what happens around the step (filtering `None` gradients, loss
scaling, gradient accumulation, EMA, constraints, the `iteration` counter);
`_backend_update_step` runs this project's step (`_facade._runner.step`),
clipping included, traced into Keras's jitted train step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import keras

from optax_keras_sgd import _config, _momentum, _validation, schedules
from optax_keras_sgd._facade import _hyperparameters as _hyper
from optax_keras_sgd._facade import _runner

if keras.backend.backend() != "jax":  # pragma: no cover - set before import
  raise ImportError(
    "optax_keras_sgd.keras3 runs on Keras 3's JAX backend; Keras was "
    f"imported with the {keras.backend.backend()!r} backend. Set "
    "KERAS_BACKEND=jax before importing keras."
  )

# Keras 3 arguments that keep their meaning around the legacy step, with
# their defaults: they act before it (loss scaling, gradient accumulation) or
# after it (EMA).
_KERAS3_KWARGS = {
  "loss_scale_factor": None,
  "gradient_accumulation_steps": None,
  "use_ema": False,
  "ema_momentum": 0.99,
  "ema_overwrite_frequency": None,
}


def _as_legacy_schedule(value: Any) -> Any:
  """A Keras 3 schedule of one of the six legacy classes becomes ours, whose
  arithmetic is the legacy one; anything else is kept."""
  if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
    name = type(value).__name__
    if getattr(schedules, name, None) is None:
      raise ValueError(
        f"`learning_rate`: the Keras 3 schedule {name} is not one of the "
        "six Keras 2 schedules, so its legacy arithmetic is unknown. Use an "
        "`optax_keras_sgd.schedules` schedule (subclass "
        "`optax_keras_sgd.schedules.LearningRateSchedule` for your own)."
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

  Examples:
    Legacy arguments that Keras 3's own SGD would drop or refuse:

    >>> import keras
    >>> from optax_keras_sgd import keras3
    >>> opt = keras3.SGD(0.1, momentum=0.9, decay=0.01, clipnorm=1.0, clipvalue=0.5)
    >>> var = keras.Variable([1.0, 2.0])
    >>> opt.apply([keras.ops.array([0.5, -4.0])], [var])
    >>> var.numpy()  # clipvalue, then per-tensor clipnorm, then v = -lr * g
    array([0.95, 2.05], dtype=float32)
    >>> sorted(opt.get_config())
    ['clipnorm', 'clipvalue', 'decay', 'learning_rate', 'momentum', 'name', 'nesterov']
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
    momentum = _hyper.value_at(self.momentum, count)
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
      learning_rate = self._learning_rate.schedule
    else:
      learning_rate = _value(self._learning_rate)
    clipping = dict(
      zip(("clipvalue", "clipnorm", "global_clipnorm"), self.legacy_clipping)
    )
    config = _hyper.legacy_config(
      self.name, learning_rate, self.momentum, self.nesterov, self.decay, clipping
    )
    base = super().get_config()
    config.update({k: base[k] for k, off in _KERAS3_KWARGS.items() if base[k] != off})
    return config

  @classmethod
  def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SGD:
    """From a config of ours or of `tf_keras`'s legacy SGD (the same keys)."""
    extra = {k: config[k] for k in _KERAS3_KWARGS if k in config}
    legacy = {k: v for k, v in config.items() if k not in _KERAS3_KWARGS}
    kwargs = _config.optimizer_kwargs_from_config(legacy, custom_objects)
    kwargs.pop("skip_non_finite", None)
    return cls(**kwargs, **extra)

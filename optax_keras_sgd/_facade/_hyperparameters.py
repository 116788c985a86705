"""How the facade holds `learning_rate` and `momentum`, as Keras 2 does.

A hyperparameter is one of:
- a schedule: a callable of the step (an `optax_keras_sgd.schedules` object,
  an optax schedule, any function with one required argument). It is traced
  into the compiled step, so it is evaluated on device at the current step.
- a zero-argument callable: called anew on the host before every step and
  fed to the compiled step as an argument.
- a number or scalar array: held in a float32 `Variable`, so `opt.lr = 0.5`
  or `opt.learning_rate.assign(0.5)` changes it without recompiling.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_keras_sgd import _validation, schedules
from optax_keras_sgd._facade import _inputs
from optax_keras_sgd._variable import Variable


def is_schedule(value: Any) -> bool:
  """A callable that takes the step (one required positional argument)."""
  if isinstance(value, schedules.LearningRateSchedule):
    return True
  if not callable(value) or isinstance(value, Variable):
    return False
  try:
    signature = inspect.signature(value)
  except (TypeError, ValueError):
    return False
  required = [
    p
    for p in signature.parameters.values()
    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
  ]
  return len(required) == 1


def is_zero_argument_callable(value: Any) -> bool:
  return callable(value) and not isinstance(value, Variable) and not is_schedule(value)


def hold(name: str, value: Any, current: Any = None) -> Any:
  """What the facade stores for `value`, reusing the `current` Variable when a
  number replaces a number (so compiled steps and references stay valid)."""
  if is_schedule(value) or is_zero_argument_callable(value):
    return value
  if isinstance(value, Variable):
    value = value.value()
  _validation.check_scalar_hyperparameter(name, value)
  value = jnp.asarray(value, jnp.float32)
  if isinstance(current, Variable):
    return current.assign(value)
  return Variable(value, name=name, trainable=False)


def read(value: Any) -> Any:
  """The value to feed the compiled step: the schedule itself, or a float32
  scalar array (a zero-argument callable is called now)."""
  if isinstance(value, Variable):  # the common case, first: never a schedule
    return value.value()
  if is_schedule(value):
    return value
  if is_zero_argument_callable(value):
    value = value()
    if isinstance(value, Variable):
      value = value.value()
    _validation.check_scalar_hyperparameter("the value returned by a callable", value)
  if isinstance(value, Variable):
    return value.value()
  return jnp.asarray(value, jnp.float32)


def serialize(value: Any) -> Any:
  """The config form: a schedule dict, else the current value as a float."""
  if isinstance(value, schedules.LearningRateSchedule):
    return schedules.serialize(value)
  if is_schedule(value):
    raise ValueError(
      f"Cannot serialize the schedule {value!r}: only "
      "`optax_keras_sgd.schedules.LearningRateSchedule` objects have a "
      "config. Subclass LearningRateSchedule (with get_config) to save it."
    )
  # The shortest decimal that reads back as the same float32 (0.1, not
  # 0.10000000149011612), so configs stay readable and exact.
  return float(str(np.float32(read(value))))


class Held:
  """An optimizer attribute (`learning_rate`, `momentum`) held as `hold`
  holds it, after `check` accepts the value. The owner keeps the held
  values in its `_hyper` dict."""

  def __init__(self, name: str, check: Callable[[Any], None]):
    # Named here, not by `__set_name__`: an alias (`lr`) must not rename it.
    self._name, self._check = name, check

  def __get__(self, obj: Any, objtype: Any = None) -> Any:
    return self if obj is None else obj._hyper[self._name]

  def __set__(self, obj: Any, value: Any) -> None:
    self._check(value)
    obj._hyper[self._name] = hold(self._name, value, obj._hyper.get(self._name))


class Threshold:
  """A clipping threshold attribute (`clipvalue`, `clipnorm`,
  `global_clipnorm`): None or a non-negative number, kept as a Python float
  (it shapes the compiled step). `clipnorm` and `global_clipnorm` exclude
  each other, as in Keras."""

  def __set_name__(self, owner: type, name: str) -> None:
    self._name, self._attribute = name, f"_{name}"

  def __get__(self, obj: Any, objtype: Any = None) -> Any:
    return self if obj is None else getattr(obj, self._attribute, None)

  def __set__(self, obj: Any, value: Any) -> None:
    if value is not None:
      _validation.check_non_negative(self._name, value)
    if self._name == "clipnorm":
      _validation.check_clip_exclusive(value, getattr(obj, "_global_clipnorm", None))
    elif self._name == "global_clipnorm":
      _validation.check_clip_exclusive(getattr(obj, "_clipnorm", None), value)
    setattr(obj, self._attribute, _inputs.threshold(value))


def check_momentum(value: Any) -> None:
  """Accepts a callable (read later) or a number in [0, 1]."""
  if not callable(value):
    _validation.check_momentum(value)


ALLOWED_KWARGS = {"clipnorm", "clipvalue", "lr", "decay", "global_clipnorm"}


def check_kwargs(kwargs: dict[str, Any], learning_rate: Any) -> Any:
  """Checks the constructor's `**kwargs` as Keras does (names, signs, not
  both `clipnorm` and `global_clipnorm`, with the raw values in the message);
  returns the learning rate to use (`lr`, deprecated, replaces it)."""
  for key, value in kwargs.items():
    if key not in ALLOWED_KWARGS:
      raise TypeError(
        f"Unexpected keyword argument passed to optimizer: {key}. "
        f"Allowed kwargs are {ALLOWED_KWARGS}."
      )
    if value is not None and not (key == "lr" and callable(value)):
      _validation.check_non_negative(key, value)
  _validation.check_clip_exclusive(
    kwargs.get("clipnorm"), kwargs.get("global_clipnorm")
  )
  if "lr" not in kwargs:
    return learning_rate
  warnings.warn(
    "The `lr` argument is deprecated, use `learning_rate` instead.", stacklevel=3
  )
  return kwargs["lr"]


def legacy_config(
  name: str,
  learning_rate: Any,
  momentum: Any,
  nesterov: bool,
  decay: float,
  clipping: dict[str, Any],
) -> dict[str, Any]:
  """An SGD config in the reference's keys and order (thresholds that are
  None left out), hyperparameters as `serialize` writes them."""
  config: dict[str, Any] = {"name": name}
  for key in ("clipnorm", "clipvalue", "global_clipnorm"):
    if clipping.get(key) is not None:
      config[key] = clipping[key]
  config["learning_rate"] = serialize(learning_rate)
  config["decay"] = decay
  config["momentum"] = serialize(momentum)
  config["nesterov"] = nesterov
  return config


def keras_config(opt: Any) -> dict[str, Any]:
  """`opt.get_config()`: the reference's config, plus ours."""
  clipping = {k: getattr(opt, k) for k in ("clipnorm", "clipvalue", "global_clipnorm")}
  config = legacy_config(
    opt.name,
    opt._hyper["learning_rate"],
    opt._hyper["momentum"],
    opt.nesterov,
    opt.decay,
    clipping,
  )
  if opt._skip_non_finite:
    config["skip_non_finite"] = True
  return config


def value_at(value: Any, count: Any) -> Any:
  """What to feed the step at step `count`: a schedule evaluated there (the
  count as float32), anything else as `read` gives it."""
  if not isinstance(value, Variable) and is_schedule(value):
    return read(value(jnp.asarray(count, jnp.float32)))
  return read(value)


def check_aggregator(aggregator: Any) -> None:
  if aggregator is not None and not callable(aggregator):
    raise TypeError(
      "`gradient_aggregator` must be a callable on (gradient, Variable) "
      f"pairs. Received: {type(aggregator).__name__}."
    )

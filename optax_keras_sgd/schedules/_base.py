"""`LearningRateSchedule` and the reference's serialization format."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax

KERAS_MODULE = "keras.optimizers.schedules"

_BUILTINS: dict[str, type[LearningRateSchedule]] = {}


class LearningRateSchedule(abc.ABC):
  """A learning rate as a function of the step, Keras-style.

  Subclasses implement `__call__(step)` with `jax.numpy` (so it traces under
  `jax.jit`) and `get_config()`. Every instance is also a valid optax
  schedule and plugs into `optax_keras_sgd.sgd(learning_rate=...)`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd.schedules import LearningRateSchedule
    >>> class Halving(LearningRateSchedule):
    ...   def __init__(self, initial):
    ...     self.initial = initial
    ...   def __call__(self, step):
    ...     return self.initial * 0.5 ** jnp.floor(jnp.asarray(step) / 10)
    ...   def get_config(self):
    ...     return {"initial": self.initial}
    >>> float(Halving(1.0)(25))
    0.25
  """

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__module__.startswith(
      "optax_keras_sgd.schedules"
    ) and not cls.__name__.startswith("_"):
      _BUILTINS[cls.__name__] = cls

  @abc.abstractmethod
  def __call__(self, step: jax.typing.ArrayLike) -> jax.Array:
    """The learning rate at `step` (float32)."""

  def get_config(self) -> dict[str, Any]:
    """The constructor arguments, JSON-serialisable: a dataclass's fields,
    or what a subclass that is not a dataclass returns."""
    if not dataclasses.is_dataclass(self):
      raise NotImplementedError(
        f"{type(self).__name__} must implement get_config (or be a dataclass)."
      )
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def from_config(cls, config: dict[str, Any]) -> LearningRateSchedule:
    return cls(**config)

  def __eq__(self, other: Any) -> bool:
    return type(self) is type(other) and self.get_config() == other.get_config()

  def __hash__(self) -> int:
    return hash((type(self), repr(sorted(self.get_config().items()))))

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"


def serialize(schedule: LearningRateSchedule) -> dict[str, Any]:
  """The reference's dict: `module`, `class_name`, `config`, `registered_name`.

  Built-in schedules name the Keras module, so `tf_keras` can load them; a
  user class is written as Keras writes an unregistered class (module None,
  `registered_name` its class name) and needs `custom_objects` to load.

  Raises:
    TypeError: if `schedule` is not a `LearningRateSchedule`.

  Examples:
    >>> from optax_keras_sgd import schedules
    >>> schedules.serialize(schedules.InverseTimeDecay(0.1, 5, 0.5))["class_name"]
    'InverseTimeDecay'
  """
  if not isinstance(schedule, LearningRateSchedule):
    raise TypeError(
      "`schedule` must be an optax_keras_sgd.schedules."
      f"LearningRateSchedule. Received: {schedule!r}."
    )
  name = type(schedule).__name__
  builtin = _BUILTINS.get(name) is type(schedule)
  return {
    "module": KERAS_MODULE if builtin else None,
    "class_name": name,
    "config": schedule.get_config(),
    "registered_name": None if builtin else name,
  }


def deserialize(
  config: dict[str, Any], custom_objects: dict[str, Any] | None = None
) -> LearningRateSchedule:
  """Builds a schedule from `serialize`'s dict, ours or the reference's.

  Raises:
    ValueError: for a dict without `class_name`/`config`, or an unknown class.

  Examples:
    >>> from optax_keras_sgd import schedules
    >>> config = {"module": "keras.optimizers.schedules",
    ...           "class_name": "ExponentialDecay", "registered_name": None,
    ...           "config": {"initial_learning_rate": 0.1, "decay_steps": 10,
    ...                      "decay_rate": 0.5, "staircase": False, "name": None}}
    >>> round(float(schedules.deserialize(config)(10)), 6)
    0.05
  """
  if (
    not isinstance(config, dict) or "class_name" not in config or "config" not in config
  ):
    raise ValueError(
      "A serialized schedule is a dict with `class_name` and "
      f"`config`. Received: {config!r}."
    )
  custom_objects = custom_objects or {}
  names = [config.get("registered_name"), config["class_name"]]
  for name in names:
    if name in custom_objects:
      return custom_objects[name].from_config(config["config"])
  cls = _BUILTINS.get(config["class_name"])
  if cls is None:
    raise ValueError(
      f"Unknown schedule: '{config['class_name']}'. Built-in schedules are "
      f"{sorted(_BUILTINS)}; pass other classes in `custom_objects`."
    )
  return cls.from_config(config["config"])

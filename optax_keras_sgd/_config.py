"""Reading optimizer configs: ours, JSON round trips, and `tf_keras`'s."""

from __future__ import annotations

from typing import Any

from optax_keras_sgd import schedules

CONFIG_KEYS = (
  "name",
  "learning_rate",
  "lr",
  "decay",
  "momentum",
  "nesterov",
  "clipnorm",
  "clipvalue",
  "global_clipnorm",
  "skip_non_finite",
)


def optimizer_kwargs_from_config(
  config: dict[str, Any], custom_objects: dict[str, Any] | None = None
) -> dict[str, Any]:
  """Constructor arguments for `SGD` from a `get_config()` dict.

  Accepts `lr` as an alias of `learning_rate` and a serialized schedule dict
  (ours or the reference's). Keys that are None are dropped.

  Raises:
    TypeError: if `config` is not a dict.
    ValueError: for keys an SGD config does not have, or both `lr` and
      `learning_rate`.
  """
  if not isinstance(config, dict):
    raise TypeError(f"`config` must be a dict. Received: {type(config).__name__}.")
  unknown = sorted(set(config) - set(CONFIG_KEYS))
  if unknown:
    raise ValueError(
      f"Unknown keys in SGD config: {unknown}. An SGD config has "
      f"the keys {list(CONFIG_KEYS)}."
    )
  kwargs = {k: v for k, v in config.items() if v is not None}
  if "lr" in kwargs:
    if "learning_rate" in kwargs:
      raise ValueError(
        "An SGD config may not have both `lr` and "
        f"`learning_rate`. Received: {config!r}."
      )
    kwargs["learning_rate"] = kwargs.pop("lr")
  if isinstance(kwargs.get("learning_rate"), dict):
    kwargs["learning_rate"] = schedules.deserialize(
      kwargs["learning_rate"], custom_objects=custom_objects
    )
  return kwargs

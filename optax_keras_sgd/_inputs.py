"""Checks of what the facade receives: pairs, gradients, loaded weights.

Each names the argument (or variable) and what was received, and raises
before any state changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd._variable import Variable


def threshold(value: Any) -> float | None:
  """A clip threshold as the Python number Keras keeps (hashable, so it can
  key the compiled step; a changed threshold compiles a new step)."""
  return None if value is None else float(value)


def as_count(value: Any, what: str) -> jax.Array:
  value = np.asarray(value)
  if value.shape != () or not np.issubdtype(value.dtype, np.integer) or not (
      0 <= int(value) <= np.iinfo(np.int32).max):
    raise ValueError(f"`{what}` must be a non-negative integer scalar below 2**31. "
                     f"Received: {value!r}.")
  return jnp.asarray(value, jnp.int32)


def as_slot_value(value: np.ndarray, slot: Variable) -> jax.Array:
  if not (np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16"
          or np.issubdtype(value.dtype, np.integer)):
    raise TypeError(f"Cannot load a weight of dtype {value.dtype} into slot "
                    f"'{slot.name}' of dtype {slot.dtype}.")
  return jnp.asarray(value).astype(slot.dtype)


def check_pairs(grads_and_vars: Iterable[Any]) -> list[tuple[Any, Variable]]:
  try:
    pairs = list(grads_and_vars)
  except TypeError:
    raise TypeError("`grads_and_vars` must be an iterable of (gradient, Variable) "
                    f"pairs. Received: {type(grads_and_vars).__name__}.") from None
  for i, pair in enumerate(pairs):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
      raise TypeError(f"`grads_and_vars[{i}]` must be a (gradient, Variable) "
                      f"pair. Received: {pair!r:.80}.")
    if not isinstance(pair[1], Variable):
      raise TypeError(f"`grads_and_vars[{i}][1]` must be an "
                      f"optax_keras_sgd.Variable. Received: "
                      f"{type(pair[1]).__name__}.")
  seen = set()
  for _, v in pairs:
    if id(v) in seen:
      raise ValueError(f"Variable '{v.name}' appears more than once in "
                       "`grads_and_vars`.")
    seen.add(id(v))
  return [tuple(p) for p in pairs]


def filter_none(pairs: list[tuple[Any, Variable]]) -> list[tuple[Any, Variable]]:
  kept = [(g, v) for g, v in pairs if g is not None]
  if not kept:
    names = ([v.name for _, v in pairs],)
    raise ValueError(f"No gradients provided for any variable: {names}. "
                     f"Provided `grads_and_vars` is {tuple(pairs)!r:.200}.")
  missing = [v.name for g, v in pairs if g is None]
  if missing:
    warnings.warn(f"Gradients do not exist for variables {missing} when "
                  "minimizing the loss.", stacklevel=3)
  return kept

"""The reference's rule for turning hyperparameters into numbers.

Keras 2 keeps `learning_rate`, `momentum` and `decay` as float32 variables (or
converts a Python number to a float32 tensor) and casts them to each
variable's dtype when it applies an update. A float64 variable trained with
`learning_rate=0.1` is therefore updated with `float64(float32(0.1))`, and a
bfloat16 one with `bfloat16(float32(0.1))`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def as_hyperparameter(value: Any, dtype: Any) -> jnp.ndarray:
  """Passes `value` through float32, then casts it to `dtype`."""
  return jnp.asarray(value, dtype=jnp.float32).astype(dtype)


def as_threshold(value: Any, dtype: Any) -> jnp.ndarray:
  """Converts a clipping threshold directly to `dtype`.

  Clipping thresholds are plain Python numbers in the reference and are
  converted straight to the gradient's dtype (no float32 step).
  """
  return jnp.asarray(value, dtype=dtype)

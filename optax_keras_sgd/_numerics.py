"""The reference's rule for turning hyperparameters into numbers.

Keras 2 keeps `learning_rate`, `momentum` and `decay` as float32 variables (or
converts a Python number to a float32 tensor) and casts them to each
variable's dtype when it applies an update. A float64 variable trained with
`learning_rate=0.1` is therefore updated with `float64(float32(0.1))`, and a
bfloat16 one with `bfloat16(float32(0.1))`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def as_hyperparameter(value: Any, dtype: Any) -> jnp.ndarray:
  """Passes `value` through float32, then casts it to `dtype`."""
  return jnp.asarray(value, dtype=jnp.float32).astype(dtype)


def as_threshold(value: Any, dtype: Any) -> jnp.ndarray:
  """Converts a clipping threshold directly to `dtype`.

  Clipping thresholds are plain Python numbers in the reference and are
  converted straight to the gradient's dtype (no float32 step).
  """
  return jnp.asarray(value, dtype=dtype)


def rounded(product: jax.Array) -> jax.Array:
  """Returns `product` unchanged, rounded to its dtype before any later add.

  TensorFlow's CPU kernels round each product (`v * m - g * lr` is two rounded
  products and a subtraction), while XLA on CPU and GPU contracts a multiply
  feeding an add into one fused multiply-add with a single rounding. That
  differs from the reference in the last bit of about one element in ten,
  and the difference grows over steps. `copysign(x, x)` is the identity for
  every value (NaN, infinities and signed zeros included), costs two bit
  operations, and stands between the multiply and the add so that the
  compiler cannot fuse them; no XLA flag is needed.
  """
  # copysign(x, x) from lax primitives: jnp.copysign nests three jitted
  # functions, which multiplies compile time by the number of leaves.
  bits = lax.bitcast_convert_type(product, _SAME_WIDTH_INT[product.dtype.itemsize])
  magnitude = lax.abs(product)
  return lax.select(lax.lt(bits, lax.full_like(bits, 0)), lax.neg(magnitude),
                    magnitude)


_SAME_WIDTH_INT = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}

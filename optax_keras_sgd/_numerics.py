"""The reference's rule for turning hyperparameters into numbers.

Keras 2 keeps `learning_rate`, `momentum` and `decay` as float32 variables (or
converts a Python number to a float32 tensor) and casts them to each
variable's dtype when it applies an update. A float64 variable trained with
`learning_rate=0.1` is therefore updated with `float64(float32(0.1))`, and a
bfloat16 one with `bfloat16(float32(0.1))`.

It also holds the two barriers that keep XLA from rewriting that arithmetic:
one against fused multiply-adds (`rounded`), one against chaining per-tensor
scalars (`stacked_scalars`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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
  and the difference grows over steps. `x if signbit(x) else |x|` is the
  identity on every bit pattern (NaN, infinities and signed zeros included),
  costs three cheap operations, and stands between the multiply and the add
  so that the compiler cannot fuse them; no XLA flag is needed.
  """
  # Lax primitives only, with a literal zero: no nested jit, the fewest
  # operations to trace and compile (once per tensor).
  if product.dtype.kind == "c":  # each part is a real product or sum of them
    return lax.complex(rounded(lax.real(product)), rounded(lax.imag(product)))
  bits = lax.bitcast_convert_type(product, _SAME_WIDTH_INT[product.dtype.itemsize])
  return lax.select(lax.lt(bits, bits.dtype.type(0)), product, lax.abs(product))


def rounded_product(scalar: jax.Array, x: jax.Array) -> jax.Array:
  """`scalar * x`, rounded to `x`'s dtype before any later add.

  Built from lax primitives (no nested jit), as it runs once per tensor
  and tracing cost multiplies by the number of tensors.
  """
  return rounded(lax.mul(lax.convert_element_type(scalar, x.dtype), x))


def stacked_scalars(scalars: list[jax.Array]) -> jax.Array:
  """One scalar per tensor as a vector, ready for a single reduction.

  Without the barrier, XLA rewrites a reduction of stacked scalars into a
  chain of scalar operations, which its fusion pass merges one tensor at a
  time, at a cost that grows faster than the square of the tensor count:
  compiling `skip_non_finite` over 500 tensors took 109 s with the chain and
  2.7 s with the barrier, and `global_clipnorm` over 5,000 tensors 378 s and
  69 s. The vector holds one element per tensor, so keeping it costs nothing.
  """
  return lax.optimization_barrier(jnp.stack(scalars))


_SAME_WIDTH_INT = {2: np.int16, 4: np.int32, 8: np.int64}

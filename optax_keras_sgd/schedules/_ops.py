"""The arithmetic forms the schedules share, in `jax.numpy` and float32.

Each reproduces `tf_keras.optimizers.schedules` operation by operation, in the
form TensorFlow runs it in each of its two modes:

* **Eager** (a concrete step): TensorFlow runs each op as written, so ours
  divides, multiplies and adds as the Keras source reads.
* **Graph** (a traced step: `jax.jit`, `lax.scan`, `vmap`, `grad`): Keras users
  train inside `tf.function` (`model.fit`), where TensorFlow's graph optimizer
  rewrites the schedule before it runs. It turns `x / c` for a constant `c`
  into `x * (1/c)` with the reciprocal rounded to float32, folds constant
  factors together (`pi * (x * (1/c))` becomes `(pi * (1/c)) * x`), and
  replaces `pow(x, c)` by `sqrt`, `x * x`, `1 / x` ... for some `c`. Ours
  writes each of those forms out, computing the folded constants on the host
  in float32 as TensorFlow does.

Under tracing, every constant enters as a runtime value (`operands`), so
neither XLA's simplifier (which also turns division by a constant into a
multiplication, and reassociates constant factors) nor LLVM (which would see
through `_numerics.rounded` once it can prove a product's sign, and fuse a
multiply-add) can rewrite it: the form written here is the form that runs.
Products that feed an addition go through `_numerics.rounded`, since
TensorFlow rounds each op.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F32 = jnp.float32

# Schedules are frozen dataclasses: a schedule is part of a compiled step's
# static configuration, so it must not change after it is made. Equality and
# hashing stay the base class's (by config): `boundaries` and `values` are
# lists.


def f32(x: Any) -> np.float32:
  """A Python number as TensorFlow converts it: to the nearest float32."""
  return np.float32(x)


def reciprocal(x: Any) -> np.float32:
  """`1 / x` in float32, as TensorFlow's graph optimizer folds it."""
  return np.float32(1) / np.float32(x)


def operands(
  step: Any, *constants: Any
) -> tuple[jax.Array, bool, tuple[jax.Array, ...]]:
  """The step as float32, whether it is traced, and the constants as arrays.

  A traced step selects TensorFlow's graph-mode form. Each constant `c` is
  then `-c if step == -2**31 else c`: a step that never occurs, but that no
  compiler can rule out, so `c` reaches the arithmetic as a runtime value of
  unknown sign. (An optimization barrier is not enough: XLA removes it before
  code generation, and LLVM then folds the constants.) For a concrete step
  the constants are plain operands already.
  """
  step = lax.convert_element_type(jnp.asarray(step), F32)
  graph = isinstance(step, jax.core.Tracer)
  arrays = tuple(jnp.asarray(c, F32) for c in constants)
  if graph:
    never = step == F32(-(2**31))
    arrays = tuple(jnp.where(never, -a, a) for a in arrays)
  return step, graph, arrays


def non_negative(name: str, value: Any, cls: str) -> None:
  number(name, value, cls)
  if value < 0:
    raise ValueError(f"{cls}: `{name}` must be >= 0. Received: {name}={value}.")


def positive(name: str, value: Any, cls: str) -> None:
  number(name, value, cls)
  if not float(value) > 0:
    raise ValueError(f"{cls}: `{name}` must be > 0. Received: {name}={value}.")


def number(name: str, value: Any, cls: str) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{cls}: `{name}` must be a number. Received: {name}={value!r}.")

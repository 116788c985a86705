"""Checks of what the facade receives: pairs, gradients, loaded weights.

Each names the argument (or variable) and what was received, and raises
before any state changes.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd import _validation
from optax_keras_sgd._variable import Variable


def as_arrays(leaves: list[Any]) -> list[jax.Array]:
  """`leaves` as JAX arrays (NumPy arrays and Python numbers converted)."""
  return [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in leaves]


def threshold(value: Any) -> float | None:
  """A clip threshold as the Python number Keras keeps (hashable, so it can
  key the compiled step; a changed threshold compiles a new step)."""
  return None if value is None else float(value)


def as_count(value: Any, what: str) -> jax.Array:
  value = np.asarray(value)
  if (
    value.shape != ()
    or not np.issubdtype(value.dtype, np.integer)
    or not (0 <= int(value) <= np.iinfo(np.int32).max)
  ):
    raise ValueError(
      f"`{what}` must be a non-negative integer scalar below 2**31. "
      f"Received: {value!r}."
    )
  return jnp.asarray(value, jnp.int32)


def as_slot_value(value: np.ndarray, slot: Variable) -> jax.Array:
  if not (
    np.issubdtype(value.dtype, np.floating)
    or value.dtype.name == "bfloat16"
    or np.issubdtype(value.dtype, np.integer)
  ):
    raise TypeError(
      f"Cannot load a weight of dtype {value.dtype} into slot "
      f"'{slot.name}' of dtype {slot.dtype}."
    )
  return jnp.asarray(value).astype(slot.dtype)


def split_pairs(grads_and_vars: Iterable[Any]) -> tuple[list[Any], list[Variable]]:
  """The gradients and Variables of `(gradient, Variable)` pairs, leaving out
  pairs whose gradient is `None` (with Keras's warning). No pairs at all is
  no step (empty lists), as in Keras. Gradients given as Variables, Python
  lists or numbers become arrays, as TensorFlow converts them.

  Runs once per step, so the common case is checked with whole-list
  operations; the per-pair loop only runs to name what is wrong.

  Raises:
    TypeError: if a pair is not a (gradient, Variable) pair.
    ValueError: if a Variable appears twice, or every gradient is `None`.
  """
  try:
    pairs = list(grads_and_vars)
  except TypeError:
    raise TypeError(
      "`grads_and_vars` must be an iterable of (gradient, Variable) "
      f"pairs. Received: {type(grads_and_vars).__name__}."
    ) from None
  if not (set(map(type, pairs)) <= {tuple, list} and set(map(len, pairs)) <= {2}):
    _explain_pairs(pairs)
  grads, variables = (list(x) for x in zip(*pairs)) if pairs else ([], [])
  if not set(map(type, variables)) <= {Variable}:
    _explain_pairs(pairs)  # subclasses of Variable pass
  if len(set(map(id, variables))) != len(variables):
    seen = set()
    for v in variables:
      if id(v) in seen:
        raise ValueError(
          f"Variable '{v.name}' appears more than once in `grads_and_vars`."
        )
      seen.add(id(v))
  if not pairs:
    return [], []
  types = set(map(type, grads))
  if type(None) in types:
    kept = [(g, v) for g, v in zip(grads, variables) if g is not None]
    if not kept:
      raise ValueError(
        f"No gradients provided for any variable: "
        f"{([v.name for v in variables],)}. Provided "
        f"`grads_and_vars` is {tuple(map(tuple, pairs))!r:.200}."
      )
    warnings.warn(
      "Gradients do not exist for variables "
      f"{[v.name for g, v in zip(grads, variables) if g is None]} "
      "when minimizing the loss.",
      stacklevel=3,
    )
    grads, variables = [g for g, _ in kept], [v for _, v in kept]
  if any(issubclass(t, _CONVERTED) for t in types):
    grads = [_as_gradient(g) for g in grads]
  return grads, variables


_CONVERTED = (Variable, list, tuple, float, int)


def _as_gradient(g: Any) -> Any:
  """A gradient as an array: a Variable's value, or a list or number as
  TensorFlow's `convert_to_tensor` reads Python floats (float32)."""
  if isinstance(g, Variable):
    return g.value()
  if isinstance(g, _CONVERTED):
    return jnp.asarray(np.asarray(g, np.float32))
  return g


def _explain_pairs(pairs: list[Any]) -> None:
  """Raises naming the first item of `pairs` that is not a pair of a
  gradient and a Variable."""
  for i, pair in enumerate(pairs):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
      raise TypeError(
        f"`grads_and_vars[{i}]` must be a (gradient, Variable) "
        f"pair. Received: {pair!r:.80}."
      )
    if isinstance(pair[1], (jax.Array, np.ndarray)):
      raise NotImplementedError(
        f"Updating an array is not implemented (`grads_and_vars[{i}][1]` "
        f"is a {type(pair[1]).__name__} of shape {np.shape(pair[1])}): arrays "
        "are immutable. Hold it in an optax_keras_sgd.Variable, or use "
        "`update(params, grads)` for a pytree."
      )
    if not isinstance(pair[1], Variable):
      raise TypeError(
        f"`grads_and_vars[{i}][1]` must be an "
        f"optax_keras_sgd.Variable. Received: "
        f"{type(pair[1]).__name__}."
      )


def check_gradients(
  grads: list[Any], variables: list[Variable], expected: list[tuple[Any, Any]]
) -> None:
  """Each gradient must have its Variable's shape and dtype (`expected`:
  theirs, as `(shape, dtype)` pairs).

  Raises:
    ValueError: naming the Variable, if the shapes differ.
    TypeError: naming the Variable, if the dtypes differ.
  """
  if signatures(grads) == expected:
    return
  for g, v in zip(grads, variables):
    _validation.check_gradient(
      g, v.shape, v.dtype, f"for variable '{v.name}'", "variable"
    )


def signatures(arrays: list[Any]) -> list[tuple[Any, Any]] | None:
  """Each array's `(shape, dtype)`, or None if one is not an array; cheap
  enough to compare on every step."""
  try:  # a JAX array's own `shape` and `dtype` are slower to read
    return [(a.shape, a.dtype) for a in map(_AVAL, arrays)]
  except AttributeError:
    pass
  try:
    return list(map(_SHAPE_AND_DTYPE, arrays))
  except AttributeError:
    return None


_AVAL = operator.attrgetter("aval")
_SHAPE_AND_DTYPE = operator.attrgetter("shape", "dtype")

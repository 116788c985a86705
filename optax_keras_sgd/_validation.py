"""Argument checks with the reference's error types and messages.

Every check names the argument and the value it received. Checks that need a
concrete number skip traced values (e.g. hyperparameters injected with
`optax.inject_hyperparams`), which cannot be inspected at trace time.
"""

from __future__ import annotations

import numbers
from typing import Any, cast

import jax
import numpy as np

from optax_keras_sgd._sparse import IndexedSlices, is_indexed_slices


def concrete_number(value: Any) -> float | None:
  """Returns `value` as a Python float when it is a concrete real scalar."""
  if isinstance(value, bool):
    return None
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if isinstance(value, jax.core.Tracer) or np.ndim(value) != 0:
      return None
    if not np.issubdtype(np.asarray(value).dtype, np.number):
      return None
    return float(np.asarray(value))
  return None


def check_scalar_hyperparameter(name: str, value: Any) -> None:
  """Raises TypeError unless `value` is a real scalar (number or array)."""
  if isinstance(value, bool) or value is None:
    raise TypeError(
      f"`{name}` must be a real number or a scalar array. "
      f"Received: {name}={value!r} (of type {type(value).__name__})."
    )
  if isinstance(value, numbers.Real):
    return
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if np.ndim(value) != 0:
      raise ValueError(
        f"`{name}` must be a scalar. Received: {name} with shape {np.shape(value)}."
      )
    dtype = np.dtype(value.dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
      if dtype.name != "bfloat16":
        raise TypeError(
          f"`{name}` must be a real number or a scalar array. "
          f"Received: {name} of dtype {dtype}."
        )
    return
  raise TypeError(
    f"`{name}` must be a real number or a scalar array. "
    f"Received: {name}={value!r} (of type {type(value).__name__})."
  )


def check_non_negative(name: str, value: Any) -> None:
  """The reference's kwargs rule: `Expected clipnorm >= 0, received: -1`."""
  check_scalar_hyperparameter(name, value)
  number = concrete_number(value)
  if number is not None and number < 0:
    raise ValueError(f"Expected {name} >= 0, received: {value}")


def check_momentum(momentum: Any) -> None:
  """A number must lie in [0, 1]; arrays are accepted as the reference does."""
  check_scalar_hyperparameter("momentum", momentum)
  if isinstance(momentum, numbers.Real) and not 0 <= float(momentum) <= 1:
    raise ValueError(
      "`momentum` must be between [0, 1]. Received: "
      f"momentum={momentum} (of type {type(momentum)})."
    )


def check_learning_rate(learning_rate: Any) -> None:
  """A learning rate is a real scalar or a callable (a schedule)."""
  if callable(learning_rate):
    return
  check_scalar_hyperparameter("learning_rate", learning_rate)


def check_clip_exclusive(clipnorm: Any, global_clipnorm: Any) -> None:
  if clipnorm is not None and global_clipnorm is not None:
    raise ValueError(
      "Cannot accept both `clipnorm` and `global_clipnorm`. "
      f"Received: `clipnorm`={clipnorm}, `global_clipnorm`={global_clipnorm}."
    )


def check_bool(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(
      f"`{name}` must be a bool. Received: {name}={value!r} "
      f"(of type {type(value).__name__})."
    )


def check_float_leaves(tree: Any, what: str) -> None:
  """Raises TypeError naming the first leaf of `tree` that is not floating.

  The reference accepts float16, bfloat16, float32, float64 and complex
  variables; an integer or boolean one has no update kernel there and no
  meaningful gradient here.
  """

  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_indexed_slices)[0]
  for path, leaf in leaves:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
      continue
    if not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
      raise TypeError(
        f"{what} at {jax.tree_util.keystr(path) or '<root>'} has dtype "
        f"{dtype}; SGD updates floating-point (float16, bfloat16, float32, "
        "float64) or complex arrays only."
      )


def check_gradients_match(updates: Any, params: Any) -> None:
  """Gradients must have the structure, shapes and dtypes of the params.

  Raises:
    ValueError: naming the first leaf path whose structure or shape differs.
    TypeError: naming the first leaf path whose dtype differs.
  """

  g_leaves, g_def = jax.tree_util.tree_flatten_with_path(
    updates, is_leaf=is_indexed_slices
  )
  p_leaves, p_def = jax.tree_util.tree_flatten_with_path(params)
  g_def, p_def = cast(Any, g_def), cast(Any, p_def)
  if g_def != p_def:
    raise ValueError(
      "The gradients and the params have different tree structures. "
      f"Gradients: {g_def}; params: {p_def}."
    )
  for (path, g), (_, p) in zip(g_leaves, p_leaves):
    where = f"at {jax.tree_util.keystr(path) or '<root>'}"
    check_gradient(g, np.shape(p), jax.numpy.result_type(p), where, "parameter")


def check_gradient(g: Any, shape: Any, dtype: Any, where: str, owner: str) -> None:
  """One gradient (dense or `IndexedSlices`) against its parameter's shape and
  dtype; `where` and `owner` name them ("at ['w']", "parameter").

  Raises:
    ValueError: if the shapes differ.
    TypeError: if the dtypes differ.
  """

  g_shape = g.dense_shape if isinstance(g, IndexedSlices) else np.shape(g)
  if tuple(g_shape) != tuple(shape):
    raise ValueError(
      f"The gradient {where} has shape {tuple(g_shape)}, but the "
      f"{owner} has shape {tuple(shape)}."
    )
  g_dtype = jax.numpy.result_type(getattr(g, "dtype", None) or g)
  if g_dtype != jax.numpy.dtype(dtype):
    raise TypeError(
      f"The gradient {where} has dtype {g_dtype}, but the {owner} "
      f"has dtype {jax.numpy.dtype(dtype)}. Cast one to the other."
    )

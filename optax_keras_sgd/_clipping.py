"""Gradient clipping with TensorFlow's arithmetic, as Keras 2 applies it.

Keras clips in this order: `clipvalue`, then `clipnorm` (each tensor on its
own), then `global_clipnorm` (all tensors together). The three transforms
below reproduce `tf.clip_by_value`, `tf.clip_by_norm` and
`tf.clip_by_global_norm` operation by operation, including what they do with
zeros, infinities and NaNs. An `IndexedSlices` gradient is clipped through its
raw `values`, as TensorFlow does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_keras_sgd import _flat, _numerics, _sparse, _validation


def _real(argument: str, g: jax.Array) -> jax.Array:
  """`g`, checked to be real: TensorFlow's clip ops take no complex numbers."""
  if jnp.issubdtype(g.dtype, jnp.complexfloating):
    raise TypeError(
      f"`{argument}` cannot clip complex gradients (the reference cannot "
      f"either). Received a gradient of dtype {g.dtype} with shape {g.shape}."
    )
  return g


def clip_by_value(clipvalue: jax.typing.ArrayLike) -> optax.GradientTransformation:
  r"""Clips every gradient element to `[-clipvalue, clipvalue]`.

  .. math::
    g \leftarrow \max(\min(g, c), -c)

  NaN stays NaN. The threshold is converted straight to each gradient's dtype,
  as the reference converts a Python number.

  Args:
    clipvalue: the non-negative bound `c`.

  Returns:
    A stateless `optax.GradientTransformation`.

  Raises:
    ValueError: if `clipvalue` is negative.
    TypeError: from `update`, if a gradient is complex.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import clip_by_value
    >>> tx = clip_by_value(0.5)
    >>> tx.update(jnp.array([-2.0, 0.25, 3.0]), tx.init(None))[0]
    Array([-0.5 ,  0.25,  0.5 ], dtype=float32)
  """
  _validation.check_non_negative("clipvalue", clipvalue)

  def clip(g):
    return tensor_clip_by_value(g, clipvalue)

  def update_fn(updates, state, params=None):
    del params
    return _sparse.tree_map_gradients(
      lambda g: _sparse.map_values(clip, g), updates
    ), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def tensor_clip_by_value(g: jax.Array, clipvalue) -> jax.Array:
  """`tf.clip_by_value(g, -clipvalue, clipvalue)` on one tensor."""
  c = _numerics.as_threshold(clipvalue, _real("clipvalue", g).dtype)
  return jnp.maximum(jnp.minimum(g, c), -c)


def _sum_of_squares(g: jax.Array, axis=None) -> jax.Array:
  """`sum(g * g)` over `axis` (all axes by default), in `g`'s dtype."""
  axes = tuple(range(g.ndim)) if axis is None else (axis,)
  return lax.reduce_sum(lax.mul(g, g), axes)


def tensor_clip_by_norm(g: jax.Array, clipnorm, axis=None) -> jax.Array:
  """`tf.clip_by_norm(g, clipnorm)` on one tensor (or on each row of `g` with
  `axis=1`)."""
  # Lax primitives: this runs once per tensor, and nested jits multiply
  # tracing time by the number of tensors.
  c = _numerics.as_threshold(clipnorm, _real("clipnorm", g).dtype)
  l2sum = _sum_of_squares(g, axis)
  positive = lax.gt(l2sum, g.dtype.type(0))
  l2sum_safe = lax.select(positive, l2sum, lax.full_like(l2sum, 1))
  l2norm = lax.select(positive, lax.sqrt(l2sum_safe), l2sum)
  denominator = lax.max(l2norm, c)
  if axis is not None:
    denominator = lax.broadcast_in_dim(denominator, g.shape, (0,))
  # XLA turns this division by a broadcast scalar into a multiplication by
  # its reciprocal (one more rounding than TensorFlow's). Keeping it a true
  # division (a divisor of `g`'s shape) costs a full-size temporary where
  # the clipped gradient has two uses (Nesterov), so the norm clips keep the
  # ulp bound instead.
  return lax.div(lax.mul(g, c), denominator)


def _flat_clip_by_norm(g: _flat.FlatParams, clipnorm) -> _flat.FlatParams:
  """`tf.clip_by_norm` on each original tensor: each row of each buffer."""
  return g.map_tensors(lambda block: tensor_clip_by_norm(block, clipnorm, axis=1))


def clip_by_norm(clipnorm: jax.typing.ArrayLike) -> optax.GradientTransformation:
  r"""Clips each gradient tensor to L2 norm at most `clipnorm`, on its own.

  TensorFlow's `clip_by_norm`, step for step:

  .. math::
    n = \lVert g \rVert_2 \;(0 \text{ if } \textstyle\sum g^2 = 0), \qquad
    g \leftarrow \frac{g \cdot c}{\max(n, c)}

  A zero gradient stays zero. An infinite element makes that element NaN and
  the rest of its tensor zero, as in TensorFlow. This is the L2 norm of the
  whole tensor, not `optax.clip_by_block_rms`.

  Args:
    clipnorm: the non-negative bound `c`.

  Returns:
    A stateless `optax.GradientTransformation`.

  Raises:
    ValueError: if `clipnorm` is negative.
    TypeError: from `update`, if a gradient is complex.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import clip_by_norm
    >>> tx = clip_by_norm(1.0)
    >>> tx.update({'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.3, 0.4])},
    ...           tx.init(None))[0]
    {'a': Array([0.6, 0.8], dtype=float32), 'b': Array([0.3, 0.4], dtype=float32)}
  """
  _validation.check_non_negative("clipnorm", clipnorm)

  def clip(g):
    if isinstance(g, _flat.FlatParams):
      return _flat_clip_by_norm(g, clipnorm)
    return _sparse.map_values(lambda v: tensor_clip_by_norm(v, clipnorm), g)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(
      clip,
      updates,
      is_leaf=lambda x: isinstance(x, (_sparse.IndexedSlices, _flat.FlatParams)),
    ), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def global_norm(updates) -> jax.Array:
  r"""`tf.linalg.global_norm`: :math:`\sqrt{2 \sum_i \tfrac12 \sum g_i^2}`.

  Each tensor's half squared norm is computed in its own dtype (TensorFlow's
  `l2_loss`); they are summed in their common result dtype. An
  `IndexedSlices` counts with its raw values.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import global_norm
    >>> global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
    Array(5., dtype=float32)
  """
  values = [
    _real("global_clipnorm", _sparse.dense_values(g))
    for g in _sparse.tree_leaves_gradients(updates)
  ]
  dtype = jnp.result_type(*values)
  # The halving is exact, so it comes after the sum: inside it, XLA on CPU
  # would stream a full-size array of 0.5s next to each gradient.
  halves = _numerics.stacked_scalars(
    [lax.mul(_sum_of_squares(v), v.dtype.type(0.5)).astype(dtype) for v in values]
  )
  return jnp.sqrt(jnp.sum(halves) * jnp.asarray(2.0, dtype))


def clip_by_global_norm(
  global_clipnorm: jax.typing.ArrayLike,
) -> optax.GradientTransformation:
  r"""Scales all gradients together so their global L2 norm is at most `c`.

  TensorFlow's `clip_by_global_norm`:

  .. math::
    G = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}, \qquad
    s = c \cdot \min(1/G, 1/c) + (G - G), \qquad g_i \leftarrow g_i \cdot s

  If `G` is infinite or NaN, `s` is NaN and so is every gradient, as in
  TensorFlow (opt into skipping such steps instead with
  `optax_keras_sgd.skip_non_finite`). `c = 0` with all-zero gradients also
  gives NaN (0/0).

  Args:
    global_clipnorm: the non-negative bound `c`.

  Returns:
    A stateless `optax.GradientTransformation`.

  Raises:
    ValueError: if `global_clipnorm` is negative.
    TypeError: from `update`, if a gradient is complex.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import clip_by_global_norm
    >>> tx = clip_by_global_norm(1.0)
    >>> tx.update([jnp.array([3.0]), jnp.array([4.0])], tx.init(None))[0]
    [Array([0.6], dtype=float32), Array([0.8], dtype=float32)]
  """
  _validation.check_non_negative("global_clipnorm", global_clipnorm)

  def update_fn(updates, state, params=None):
    del params
    if not _sparse.tree_leaves_gradients(updates):
      return updates, state
    scale = global_scale(updates, global_clipnorm)
    return _sparse.tree_map_gradients(
      lambda g: _sparse.map_values(lambda x: scaled(x, scale), g), updates
    ), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def global_scale(updates, global_clipnorm) -> jax.Array:
  """`clip_by_global_norm`'s scale `s` over the gradients `updates` (at least
  one), in the global norm's dtype."""
  norm = global_norm(updates)
  c = _numerics.as_threshold(global_clipnorm, norm.dtype)
  one = jnp.asarray(1.0, norm.dtype)
  # `rounded` keeps XLA from turning `1 / sqrt(x)` into its inexact `rsqrt`.
  return c * jnp.minimum(one / _numerics.rounded(norm), one / c) + (norm - norm)


def scaled(g: jax.Array, scale: jax.Array) -> jax.Array:
  """A gradient times `global_scale`, as `clip_by_global_norm` scales it."""
  return g * scale.astype(g.dtype)

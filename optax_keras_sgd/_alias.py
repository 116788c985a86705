"""`sgd`: the whole Keras 2 legacy SGD step as one optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from optax_keras_sgd import (
  _clipping,
  _distributed,
  _fused,
  _learning_rate,
  _momentum,
  _sparse,
  _validation,
)


def sgd(
  learning_rate: optax.ScalarOrSchedule = 0.01,
  momentum: jax.typing.ArrayLike = 0.0,
  nesterov: bool = False,
  *,
  clipvalue: jax.typing.ArrayLike | None = None,
  clipnorm: jax.typing.ArrayLike | None = None,
  global_clipnorm: jax.typing.ArrayLike | None = None,
  decay: jax.typing.ArrayLike = 0.0,
  axis_name: _distributed.AxisName | None = None,
) -> optax.GradientTransformation:
  r"""Keras 2's legacy SGD (`tf.keras.optimizers.legacy.SGD`), exactly.

  Chains, in Keras's order: `clip_by_value`, `clip_by_norm` (per tensor),
  `clip_by_global_norm`, `scale_by_keras_learning_rate` (with legacy `decay`) and
  `keras_momentum` (the momentum velocity, which holds the learning rate):

  .. math::
    v \leftarrow m v - \eta_t g, \qquad
    w \leftarrow w + v \;\; (\text{Nesterov: } w + m v - \eta_t g)

  With `momentum=0` (a plain number): :math:`w \leftarrow w - \eta_t g`. The
  state counts steps (Keras's `iterations`); read it with
  `optax_keras_sgd.iterations(state)`. Apply updates with `optax.apply_updates`
  (or `optax_keras_sgd.apply_updates` when gradients include `IndexedSlices`).

  Args:
    learning_rate: a number, scalar array, or callable of the step (an optax
      schedule or an `optax_keras_sgd.schedules` object). Negative values
      are accepted (gradient ascent), as in Keras.
    momentum: in [0, 1]; 0 (a plain number) keeps no velocity.
    nesterov: whether to use Nesterov momentum.
    clipvalue: if set, clip each gradient element to `[-clipvalue, clipvalue]`.
    clipnorm: if set, clip each gradient tensor to this L2 norm.
    global_clipnorm: if set, clip all gradients to this global L2 norm.
    decay: legacy inverse-time decay of the learning rate, >= 0.
    axis_name: inside `shard_map`/`pmap`, the data axis whose replicas'
      gradients are summed first, before clipping, as Keras does with a
      distribution strategy. None (the default) aggregates nothing: use it
      outside mapped code, with global (sharded) arrays, or when you have
      aggregated the gradients yourself (Keras's
      `experimental_aggregate_gradients=False`).

  Returns:
    An `optax.GradientTransformation`. Works with `optax.inject_hyperparams`.

  Raises:
    ValueError: for a momentum outside [0, 1], a negative clip or decay, or
      both `clipnorm` and `global_clipnorm`.
    TypeError: for a hyperparameter of the wrong type.

  Examples:
    The seed's example: one step on `loss = w**2 / 2` from `w = 1`.

    >>> import jax, jax.numpy as jnp, optax
    >>> from optax_keras_sgd import sgd
    >>> tx = sgd(learning_rate=0.1, momentum=0.9)
    >>> w = jnp.array(1.0)
    >>> state = tx.init(w)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jax.grad(lambda w: w**2 / 2)(w), state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> w  # 1 - 0.100000024 - 0.18, in float32
    Array(0.71999997, dtype=float32)
  """
  return transformation(
    parts(
      learning_rate,
      momentum,
      nesterov,
      clipvalue=clipvalue,
      clipnorm=clipnorm,
      global_clipnorm=global_clipnorm,
      decay=decay,
      axis_name=axis_name,
    )
  )


class Parts(NamedTuple):
  """`sgd`'s blocks: the gradient blocks (aggregation, clipping, summing
  duplicate rows), the learning-rate scale, the momentum trace, and their
  settings for the fused native pass."""

  gradients: optax.GradientTransformation
  scale: optax.GradientTransformation
  trace: optax.GradientTransformation
  settings: _fused.Settings


def parts(
  learning_rate: optax.ScalarOrSchedule = 0.01,
  momentum: jax.typing.ArrayLike = 0.0,
  nesterov: bool = False,
  *,
  clipvalue: jax.typing.ArrayLike | None = None,
  clipnorm: jax.typing.ArrayLike | None = None,
  global_clipnorm: jax.typing.ArrayLike | None = None,
  decay: jax.typing.ArrayLike = 0.0,
  axis_name: _distributed.AxisName | None = None,
) -> Parts:
  """Checks `sgd`'s arguments and builds its blocks."""
  _validation.check_clip_exclusive(clipnorm, global_clipnorm)
  blocks = []
  if axis_name is not None:
    blocks.append(_distributed.aggregate_gradients(axis_name))
  if clipvalue is not None:
    blocks.append(_clipping.clip_by_value(clipvalue))
  if clipnorm is not None:
    blocks.append(_clipping.clip_by_norm(clipnorm))
  if global_clipnorm is not None:
    blocks.append(_clipping.clip_by_global_norm(global_clipnorm))
  # The kernel applies the clips itself (the global norm's scale computed in
  # XLA), not the aggregation.
  direct = axis_name is None
  if _momentum.has_velocity(momentum):
    blocks.append(_sparse.sum_duplicate_indices())
  return Parts(
    optax.chain(*blocks) if blocks else _NO_BLOCKS,
    _learning_rate.scale_by_keras_learning_rate(learning_rate, decay),
    _momentum.keras_momentum(momentum, nesterov),
    _fused.Settings(
      learning_rate,
      decay,
      momentum,
      nesterov,
      clipvalue,
      clipnorm,
      global_clipnorm,
      direct,
    ),
  )


# `optax.chain()` of nothing fails; its state would be the empty tuple.
_NO_BLOCKS = optax.GradientTransformation(
  lambda params: (), lambda updates, state, params=None: (updates, ())
)


def transformation(p: Parts) -> optax.GradientTransformation:
  """`p` as one transformation, with the state `optax.chain` of the blocks
  would have: one entry per gradient block, then the scale's and the
  trace's."""

  def init_fn(params):
    return (*p.gradients.init(params), p.scale.init(params), p.trace.init(params))

  return optax.GradientTransformation(init_fn, _Update(p))


class _Update:
  """`sgd`'s update function. It keeps `sgd`'s blocks, which
  `update_and_apply` runs with the parameters' update in one pass."""

  __slots__ = ("parts", "__weakref__")  # weakly referable, as jax.jit needs

  def __init__(self, parts: Parts):
    self.parts = parts

  def __call__(self, updates, state, params=None):
    p = self.parts
    gradient_state, (scale, trace) = state[:-2], state[-2:]
    updates, gradient_state, scale, trace = _fused.update(
      p.settings, p.gradients, updates, gradient_state, scale, trace, params
    ) or _blocks(p, updates, gradient_state, scale, trace, params)
    return updates, (*gradient_state, scale, trace)


def update_and_apply(
  tx: optax.GradientTransformation,
  grads: Any,
  state: Any,
  params: Any,
  *,
  in_place: bool = True,
) -> tuple[Any, Any]:
  """One step of `tx`: returns `(new params, new state)`.

  The numbers are those of

      updates, state = tx.update(grads, state, params)
      params = optax_keras_sgd.apply_updates(params, updates)

  and for a transformation made by `sgd` the step is faster: on the CPU
  (float32 and float64) one native pass reads each parameter, gradient and
  velocity once and writes the new parameter and velocity over the old, 20
  bytes per float32 parameter with momentum or Nesterov, where an update
  followed by `apply_updates` moves 24 to 28. Donate `params` and `state` to
  the enclosing `jax.jit` (`donate_argnums`). XLA copies a parameter it
  cannot write over before the pass, so where the parameters cannot be
  donated pass `in_place=False`: the step then runs as the two lines above,
  which is cheaper than the copy. Any other transformation (one from optax,
  or `sgd` inside `optax.chain` or `optax.inject_hyperparams`) runs as those
  two lines.

  Args:
    tx: an `optax.GradientTransformation`.
    grads: the gradients, a tree like `params` (`IndexedSlices` leaves
      allowed).
    state: `tx`'s state.
    params: the parameters.
    in_place: whether `params`' buffers may be written over (donated).

  Returns:
    `(new params, new state)`.

  Raises:
    TypeError: if `tx` is not an `optax.GradientTransformation`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import optax_keras_sgd as oks
    >>> tx = oks.sgd(learning_rate=0.1, momentum=0.9)
    >>> step = jax.jit(
    ...   lambda p, g, s: oks.update_and_apply(tx, g, s, p), donate_argnums=(0, 2)
    ... )
    >>> w = jnp.ones(3)
    >>> w, state = step(w, jnp.ones(3), tx.init(w))
    >>> w
    Array([0.9, 0.9, 0.9], dtype=float32)
  """
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(
      "`tx` must be an optax.GradientTransformation, such as "
      f"optax_keras_sgd.sgd(...). Received: tx of type {type(tx).__name__}."
    )
  if not in_place or not isinstance(tx.update, _Update):
    updates, state = tx.update(grads, state, params)
    return _sparse.apply_updates(params, updates), state
  p = tx.update.parts
  gradient_state, (scale, trace) = state[:-2], state[-2:]
  fused = _fused.apply(
    p.settings, p.gradients, grads, gradient_state, scale, trace, params
  )
  if fused is None:
    updates, gradient_state, scale, trace = _blocks(
      p, grads, gradient_state, scale, trace, params
    )
    params = _sparse.apply_updates(params, updates)
  else:
    params, gradient_state, scale, trace = fused
  return params, (*gradient_state, scale, trace)


def _blocks(p: Parts, grads, gradient_state, scale, trace, params):
  """All of `p`'s blocks in XLA: `(updates, gradient_state, scale, trace)`."""
  grads, gradient_state = p.gradients.update(grads, gradient_state, params)
  updates, scale = p.scale.update(grads, scale, params)
  updates, trace = p.trace.update(updates, trace, params)
  return updates, gradient_state, scale, trace

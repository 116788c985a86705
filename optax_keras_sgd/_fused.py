"""Keras's clipping, learning-rate scale and momentum as one native pass.

`sgd`'s last two blocks (`scale_by_keras_learning_rate`, `keras_momentum`),
the per-tensor clips before them (`clipvalue`, `clipnorm`) and, for the
facade, the parameter update, run as `_native` kernel calls when the step
allows it: one call per dtype over the dense leaves, one per `IndexedSlices`
leaf on its rows. `update` and `apply` take the gradients as given, before
`sgd`'s gradient blocks, and return None when the step does not allow the
kernel; the caller then runs the blocks in XLA. `reference` and
`sparse_reference` are the kernels' arithmetic in XLA, through which they are
differentiated. Without norms the two compute the same bits; with
`clipnorm`, the kernel sums each tensor's squares in its own fixed order and
divides by the clip's denominator as TensorFlow does, where XLA multiplies
by its reciprocal (both within the reference's rounding, see
`_native/keras_sgd.cc`).

Dense leaves take the kernel where it writes no new full-size array: with no
gradient block before it that it cannot take itself (aggregation over
devices), whose output XLA fuses into its own loop but would write out for
the kernel to read, and not for Nesterov's update in `update`, which XLA
fuses into the caller's `apply_updates`. `global_clipnorm`'s norm is a
reduction in XLA, and the kernel multiplies by its scale; in `update`, where
the caller's add is a second pass either way, XLA's step with the scale
fused into it is the faster (on a 32M tensor, 24.5 ms against 27.9 in two
runs, `optax.sgd` 22.2 and 22.3 in them) and takes the large leaves. A new
array of that size is a fresh allocation each step, and its page faults
cost more than the kernel saves (on a 32M tensor, 69 ms a step against
XLA's 23).
Small leaves take the kernel there too, up to `SMALL_TOTAL` elements of them
in all: their new arrays are small temporaries the allocator reuses, and the
kernel spares XLA a loop per leaf, at run time and at compile time.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import (
  _clipping,
  _flat,
  _learning_rate,
  _momentum,
  _native,
  _numerics,
  _sparse,
)

# A dense leaf of at most `SMALL_LEAF` elements takes the kernel wherever it
# runs, while the leaves so taken hold at most `SMALL_TOTAL` elements in all
# (see the module's docstring).
SMALL_LEAF = 1 << 12
SMALL_TOTAL = 1 << 20


class Settings(NamedTuple):
  """The hyperparameters of the blocks the kernel runs."""

  learning_rate: Any
  decay: Any
  momentum: Any
  nesterov: bool
  clipvalue: Any  # None, or the clips, which the kernel applies
  clipnorm: Any
  global_clipnorm: Any  # the kernel applies the scale computed in XLA
  direct: bool  # no gradient block but those clips (and summing duplicates)


def _scalars(settings: Settings, count: jax.Array, leaves: list[Any], scale=None):
  """Per dtype: `(lr, m, clipvalue, clipnorm)`, the clips 0 when unset;
  `global_clipnorm`'s `scale`, when given, in place of `clipnorm`."""
  scalars = {}
  for d in dict.fromkeys(x.dtype for x in leaves):
    clips = [
      _numerics.as_threshold(0 if c is None else c, d)
      for c in (settings.clipvalue, settings.clipnorm)
    ]
    if scale is not None:
      clips[1] = scale.astype(d)
    scalars[d] = (
      _learning_rate.learning_rate_at(settings.learning_rate, settings.decay, count, d),
      _numerics.as_hyperparameter(settings.momentum, d),
      *clips,
    )
  return scalars


def _states(count, velocity):
  return (
    _learning_rate.KerasLearningRateState(count=optax.safe_increment(count)),
    _momentum.KerasMomentumState(velocity=velocity) if velocity is not None else None,
  )


def _usable(grads: Any, *trees: Any) -> bool:
  return _native.usable(_sparse.tree_map_gradients(_sparse.dense_values, grads), *trees)


def _clip(settings: Settings, updates: Any) -> int | None:
  """The clips the kernel applies to the dense leaves it takes (bits of
  `_native.CLIP_*`), or None where the gradient blocks run first on every
  leaf (`settings.direct` false; a `FlatParams`, whose rows the norm clip
  must see one by one)."""
  if not settings.direct:
    return None
  if settings.clipnorm is not None and any(
    isinstance(x, _flat.FlatParams)
    for x in jax.tree.leaves(updates, is_leaf=lambda x: isinstance(x, _flat.FlatParams))
  ):
    return None
  clip = _native.CLIP_VALUE if settings.clipvalue is not None else 0
  clip |= _native.CLIP_NORM if settings.clipnorm is not None else 0
  return clip | (_native.CLIP_SCALE if settings.global_clipnorm is not None else 0)


def _gradient_blocks(settings, gradients, clip, updates, native, state, params):
  """`sgd`'s gradient blocks on the gradients `updates`: on the whole tree,
  or (with `clip` not None) on the leaves the kernel does not clip itself,
  the sparse ones and the dense ones left to XLA. Returns the leaves, the
  blocks' state and, under `CLIP_SCALE`, `global_clipnorm`'s scale."""
  if clip is None:  # on the tree, where a `FlatParams` is still one
    updates, state = gradients.update(updates, state, params)
    return jax.tree.leaves(updates, is_leaf=_sparse.is_indexed_slices), state, None
  leaves = jax.tree.leaves(updates, is_leaf=_sparse.is_indexed_slices)
  rest = [
    i for i, x in enumerate(leaves) if not native[i] or _sparse.is_indexed_slices(x)
  ]
  if clip & _native.CLIP_SCALE:
    # The global norm sees every leaf, value-clipped; the kernel clips and
    # scales its own leaves, and here the others are, as the blocks would
    # (the blocks keep no state; `_step` sums the sparse rows' duplicates).
    clipped = leaves
    if settings.clipvalue is not None:
      clip_value = lambda x: _clipping.tensor_clip_by_value(x, settings.clipvalue)  # noqa: E731
      clipped = [_sparse.map_values(clip_value, x) for x in leaves]
    scale = _clipping.global_scale(clipped, settings.global_clipnorm)
    for i in rest:
      leaves[i] = _sparse.map_values(lambda x: _clipping.scaled(x, scale), clipped[i])
    return leaves, state, scale
  if not rest:
    return leaves, state, None
  values = None if params is None else jax.tree.leaves(params)
  pick = lambda xs: None if xs is None else [xs[i] for i in rest]  # noqa: E731
  done, state = gradients.update(pick(leaves), state, pick(values))
  for i, x in zip(rest, done):
    leaves[i] = x
  return leaves, state, None


def update(
  settings: Settings,
  gradients: optax.GradientTransformation,
  updates: Any,
  gradient_state: Any,
  scale_state: Any,
  trace_state: Any,
  params: Any,
) -> tuple[Any, Any, Any, Any] | None:
  """`sgd`'s update from the gradients as given, through its `gradients`
  blocks: `(updates, gradient_state, scale_state, trace_state)`, or None.

  Only with a velocity: without one, the scaled gradient is the update, and
  XLA fuses it into the caller's `apply_updates`.
  """
  if not _momentum.has_velocity(settings.momentum):
    return None
  mode = _native.NESTEROV_UPDATE if settings.nesterov else _native.VELOCITY
  grads, treedef = jax.tree.flatten(updates, is_leaf=_sparse.is_indexed_slices)
  clip = _clip(settings, updates)
  native = _native_leaves(clip, mode, grads)
  if not any(native) or not _usable(updates, trace_state.velocity, params):
    return None
  _learning_rate.check_inputs(updates, params)
  treedef = cast(Any, treedef)
  grads, gradient_state, global_scale = _gradient_blocks(
    settings, gradients, clip, updates, native, gradient_state, params
  )
  velocities = treedef.flatten_up_to(trace_state.velocity)
  scalars = _scalars(settings, scale_state.count, grads, global_scale)
  new_v, out = _step(mode, native, clip or 0, scalars, grads, velocities, None)
  velocity = treedef.unflatten(new_v)
  return (
    treedef.unflatten(out),
    gradient_state,
    *_states(scale_state.count, velocity),
  )


def apply(
  settings: Settings,
  gradients: optax.GradientTransformation,
  grads: Any,
  gradient_state: Any,
  scale_state: Any,
  trace_state: Any,
  params: Any,
) -> tuple[Any, Any, Any, Any] | None:
  """`(new params, gradient_state, scale_state, trace_state)` in one pass
  from the gradients as given, or None."""
  has_velocity = _momentum.has_velocity(settings.momentum)
  velocity = trace_state.velocity if has_velocity else None
  if has_velocity:
    mode = _native.APPLY_NESTEROV if settings.nesterov else _native.APPLY
  else:
    mode = _native.APPLY_NO_VELOCITY
  leaves, treedef = jax.tree.flatten(grads, is_leaf=_sparse.is_indexed_slices)
  clip = _clip(settings, grads)
  native = _native_leaves(clip, mode, leaves)
  if not any(native) or not _usable(grads, velocity, params):
    return None
  _learning_rate.check_inputs(grads, params)
  treedef = cast(Any, treedef)
  values = treedef.flatten_up_to(params)
  leaves, gradient_state, global_scale = _gradient_blocks(
    settings, gradients, clip, grads, native, gradient_state, params
  )
  scalars = _scalars(settings, scale_state.count, leaves, global_scale)
  velocities = treedef.flatten_up_to(velocity) if has_velocity else None
  new_v, new_p = _step(mode, native, clip or 0, scalars, leaves, velocities, values)
  new_velocity = None if velocities is None else treedef.unflatten(new_v)
  scale, trace = _states(scale_state.count, new_velocity)
  return (
    treedef.unflatten(new_p),
    gradient_state,
    scale,
    trace if has_velocity else trace_state,
  )


def _native_leaves(clip: int | None, mode: int, leaves: list[Any]) -> list[bool]:
  """Per leaf, whether it takes a kernel: every sparse one, and the dense
  ones by the rule of the module's docstring (`clip` None: a gradient block
  the kernel cannot take runs first)."""
  in_place = mode in (_native.APPLY, _native.APPLY_NESTEROV, _native.APPLY_NO_VELOCITY)
  scaled = clip is not None and bool(clip & _native.CLIP_SCALE)
  large = clip is not None and (in_place or (mode == _native.VELOCITY and not scaled))
  budget = SMALL_TOTAL
  native = []
  for x in leaves:
    if _sparse.is_indexed_slices(x):
      native.append(True)
    elif large:
      native.append(True)
    else:
      size = jnp.size(x)
      small = size <= min(SMALL_LEAF, budget)
      budget -= size if small else 0
      native.append(small)
  return native


def _xla_step(mode, clip, reference, scalars, grads, velocities, params):
  """`_native.step`'s results from `reference`, leaf by leaf."""
  results = [
    reference(
      mode,
      clip,
      scalars[g.dtype],
      [g],
      None if velocities is None else [velocities[i]],
      None if params is None else [params[i]],
    )
    for i, g in enumerate(grads)
  ]
  vs, outs = zip(*results)
  return (
    None if vs[0] is None else [v[0] for v in vs],
    None if outs[0] is None else [o[0] for o in outs],
  )


def _step(mode, native, clip, scalars, grads, velocities, params):
  """`_native.step` over the dense leaves marked `native`, clipping them by
  `clip`; the same in XLA over the other dense leaves (clipped already);
  `_native.sparse_step` over each `IndexedSlices` leaf. Returns the new
  velocities and outputs, per leaf."""
  n = len(grads)
  new_v: list[Any] = [None] * n
  out: list[Any] = [None] * n
  pick = lambda xs, idx: None if xs is None else [xs[i] for i in idx]  # noqa: E731
  dense = [i for i, g in enumerate(grads) if not _sparse.is_indexed_slices(g)]
  for run, clips, idx in (
    (_native.step, clip, [i for i in dense if native[i]]),
    (_xla_step, 0, [i for i in dense if not native[i]]),
  ):
    if not idx:
      continue
    vs, os_ = run(
      mode,
      clips,
      reference,
      scalars,
      [grads[i] for i in idx],
      pick(velocities, idx),
      pick(params, idx),
    )
    for j, i in enumerate(idx):
      new_v[i] = None if vs is None else vs[j]
      out[i] = new_v[i] if os_ is None else os_[j]  # VELOCITY: v is the update
  for i, g in enumerate(grads):
    if not _sparse.is_indexed_slices(g):
      continue
    if mode != _native.APPLY_NO_VELOCITY:
      g = _sparse.sum_duplicates(g)  # done already by `sgd`'s gradient blocks
    lr, m = scalars[g.dtype][:2]
    new_v[i], rows = _native.sparse_step(
      mode,
      sparse_reference,
      lr,
      m,
      g.values,
      g.indices.astype(jnp.int32),
      None if velocities is None else velocities[i],
      None if params is None else params[i],
    )
    out[i] = rows if params is not None else g.with_values(rows)
  return new_v, out


def _is_nesterov(mode: int) -> bool:
  return mode in (_native.NESTEROV_UPDATE, _native.APPLY_NESTEROV)


def reference(mode, clip, scalars, grads, velocities, params):
  """`_native.step`'s arithmetic in XLA."""
  lr, m, clipvalue, clipnorm = scalars
  if clip & _native.CLIP_VALUE:
    grads = [_clipping.tensor_clip_by_value(g, clipvalue) for g in grads]
  if clip & _native.CLIP_NORM:
    grads = [_clipping.tensor_clip_by_norm(g, clipnorm) for g in grads]
  if clip & _native.CLIP_SCALE:  # `clipnorm` holds global_clipnorm's scale
    grads = [_clipping.scaled(g, clipnorm) for g in grads]
  us = [_learning_rate.scaled(lr, g) for g in grads]
  if mode == _native.APPLY_NO_VELOCITY:
    return None, tuple(jnp.add(p, u) for p, u in zip(params, us))
  vs = tuple(_momentum.velocity_step(m, v, u) for v, u in zip(velocities, us))
  if mode == _native.VELOCITY:
    return vs, None
  ups = [_momentum.update_from(m, v, u, _is_nesterov(mode)) for v, u in zip(vs, us)]
  if mode == _native.NESTEROV_UPDATE:
    return vs, tuple(ups)
  return vs, tuple(jnp.add(p, u) for p, u in zip(params, ups))


def sparse_reference(mode, lr, m, values, indices, velocity, param):
  """`_native.sparse_step`'s arithmetic in XLA."""
  u = _learning_rate.scaled(lr, values)
  if mode == _native.APPLY_NO_VELOCITY:
    return None, param.at[indices].add(u, mode="drop")
  rows, new_v = _momentum.sparse_velocity_step(
    m, velocity, indices, u, _is_nesterov(mode)
  )
  if param is None:
    return new_v, rows
  return new_v, param.at[indices].add(rows, mode="drop")

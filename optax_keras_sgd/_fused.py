"""Keras's learning-rate scale and momentum as one native pass.

`sgd`'s last two blocks (`scale_by_keras_learning_rate`, `keras_momentum`)
and, for the facade, the parameter update, run as `_native` kernel calls when
the step allows it: one call per dtype over the dense leaves, one per
`IndexedSlices` leaf on its rows. Each function returns None when the step
does not allow it, and the caller then runs the XLA blocks, which compute the
same bits; `reference` and `sparse_reference` are those bits in XLA, through
which the kernels are differentiated.

Dense leaves take the kernel only where it writes no new full-size array:
not after a gradient block (clipping, aggregation), whose output XLA fuses
into its own loop but would write out for the kernel to read, and not for
Nesterov's update in `update`, which XLA fuses into the caller's
`apply_updates`. A new array of that size is a fresh allocation each step,
and its page faults cost more than the kernel saves (on a 32M tensor, 69 ms
a step against XLA's 23).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _learning_rate, _momentum, _native, _numerics, _sparse


class Settings(NamedTuple):
  """The hyperparameters of the two blocks."""

  learning_rate: Any
  decay: Any
  momentum: Any
  nesterov: bool
  direct: bool  # the gradients reach these blocks as given: no clip before


def _scalars(settings: Settings, count: jax.Array, leaves: list[Any]):
  dtypes = list(dict.fromkeys(x.dtype for x in leaves))
  rates = {
    d: _learning_rate.learning_rate_at(settings.learning_rate, settings.decay, count, d)
    for d in dtypes
  }
  momenta = {d: _numerics.as_hyperparameter(settings.momentum, d) for d in dtypes}
  return rates, momenta


def _states(count, velocity):
  return (
    _learning_rate.KerasLearningRateState(count=optax.safe_increment(count)),
    _momentum.KerasMomentumState(velocity=velocity) if velocity is not None else None,
  )


def _usable(grads: Any, *trees: Any) -> bool:
  return _native.usable(_sparse.tree_map_gradients(_sparse.dense_values, grads), *trees)


def update(
  settings: Settings, updates: Any, scale_state: Any, trace_state: Any, params: Any
) -> tuple[Any, Any, Any] | None:
  """The two blocks' `(updates, scale_state, trace_state)`, or None.

  Only with a velocity: without one, the scaled gradient is the update, and
  XLA fuses it into the caller's `apply_updates`.
  """
  if not _momentum.has_velocity(settings.momentum):
    return None
  mode = _native.NESTEROV_UPDATE if settings.nesterov else _native.VELOCITY
  grads, treedef = jax.tree.flatten(updates, is_leaf=_sparse.is_indexed_slices)
  if not _worth_it(settings, mode, grads):
    return None
  if not _usable(updates, trace_state.velocity, params):
    return None
  _learning_rate.check_inputs(updates, params)
  treedef = cast(Any, treedef)
  velocities = treedef.flatten_up_to(trace_state.velocity)
  rates, momenta = _scalars(settings, scale_state.count, grads)
  dense_native = _dense_native(settings, mode)
  new_v, out = _step(mode, dense_native, rates, momenta, grads, velocities, None)
  velocity = treedef.unflatten(new_v)
  return (treedef.unflatten(out), *_states(scale_state.count, velocity))


def apply(
  settings: Settings, grads: Any, scale_state: Any, trace_state: Any, params: Any
) -> tuple[Any, Any, Any] | None:
  """`(new params, scale_state, trace_state)` in one pass, or None."""
  has_velocity = _momentum.has_velocity(settings.momentum)
  velocity = trace_state.velocity if has_velocity else None
  if has_velocity:
    mode = _native.APPLY_NESTEROV if settings.nesterov else _native.APPLY
  else:
    mode = _native.APPLY_NO_VELOCITY
  leaves, treedef = jax.tree.flatten(grads, is_leaf=_sparse.is_indexed_slices)
  if not _worth_it(settings, mode, leaves):
    return None
  if not _usable(grads, velocity, params):
    return None
  _learning_rate.check_inputs(grads, params)
  treedef = cast(Any, treedef)
  values = treedef.flatten_up_to(params)
  rates, momenta = _scalars(settings, scale_state.count, leaves)
  velocities = treedef.flatten_up_to(velocity) if has_velocity else None
  dense_native = _dense_native(settings, mode)
  new_v, new_p = _step(mode, dense_native, rates, momenta, leaves, velocities, values)
  new_velocity = None if velocities is None else treedef.unflatten(new_v)
  scale, trace = _states(scale_state.count, new_velocity)
  return treedef.unflatten(new_p), scale, trace if has_velocity else trace_state


def _dense_native(settings: Settings, mode: int) -> bool:
  """Whether the dense leaves take the kernel (see the module's docstring)."""
  return settings.direct and mode != _native.NESTEROV_UPDATE


def _worth_it(settings: Settings, mode: int, leaves: list[Any]) -> bool:
  """Whether any leaf takes a kernel: the dense ones, or a sparse one."""
  return _dense_native(settings, mode) or any(map(_sparse.is_indexed_slices, leaves))


def _xla_step(mode, reference, rates, momenta, grads, velocities, params):
  """`_native.step`'s results from `reference`, leaf by leaf."""
  results = [
    reference(
      mode,
      rates[g.dtype],
      momenta[g.dtype],
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


def _step(mode, dense_native, rates, momenta, grads, velocities, params):
  """`_native.step` (or, if not `dense_native`, the same in XLA) over the
  dense leaves, `_native.sparse_step` over each `IndexedSlices` leaf;
  returns the new velocities and outputs, per leaf."""
  n = len(grads)
  new_v: list[Any] = [None] * n
  out: list[Any] = [None] * n
  pick = lambda xs, idx: None if xs is None else [xs[i] for i in idx]  # noqa: E731
  dense = [i for i, g in enumerate(grads) if not _sparse.is_indexed_slices(g)]
  if dense:
    vs, os_ = (_native.step if dense_native else _xla_step)(
      mode,
      reference,
      rates,
      momenta,
      [grads[i] for i in dense],
      pick(velocities, dense),
      pick(params, dense),
    )
    for j, i in enumerate(dense):
      new_v[i] = None if vs is None else vs[j]
      out[i] = new_v[i] if os_ is None else os_[j]  # VELOCITY: v is the update
  for i, g in enumerate(grads):
    if not _sparse.is_indexed_slices(g):
      continue
    if mode != _native.APPLY_NO_VELOCITY:
      g = _sparse.sum_duplicates(g)  # done already by `sgd`'s gradient blocks
    new_v[i], rows = _native.sparse_step(
      mode,
      sparse_reference,
      rates[g.dtype],
      momenta[g.dtype],
      g.values,
      g.indices.astype(jnp.int32),
      None if velocities is None else velocities[i],
      None if params is None else params[i],
    )
    out[i] = rows if params is not None else g.with_values(rows)
  return new_v, out


def _is_nesterov(mode: int) -> bool:
  return mode in (_native.NESTEROV_UPDATE, _native.APPLY_NESTEROV)


def reference(mode, lr, m, grads, velocities, params):
  """`_native.step`'s arithmetic in XLA."""
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

"""The compiled step behind the facade: the functional core over flat lists.

The facade keeps its state (values, velocities, the step count) in Python
objects; this module turns one step over them into a single `jax.jit` call,
cached per structural configuration. Numbers that change between steps
(learning rate, momentum) are arguments, so changing them never recompiles.
The velocities of small tensors travel packed in one buffer per dtype
(`_packing`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _alias, _non_finite, _state
from optax_keras_sgd._facade import _hyperparameters, _packing


class StepConfig(NamedTuple):
  """Everything that shapes the compiled program (hashable, static; a
  tuple, made and hashed on every step at little cost)."""

  schedule: Callable[[Any], Any] | None
  use_momentum: bool
  nesterov: bool
  clipvalue: float | None
  clipnorm: float | None
  global_clipnorm: float | None
  decay: float
  skip_non_finite: bool = False


def step(
  config: StepConfig,
  values,
  grads,
  velocities,
  count,
  skipped,
  lr,
  momentum,
  *,
  in_place: bool = True,
):
  """One step of `sgd` built from `config` over lists of arrays: returns the
  new values, velocities (None without momentum), count and skipped count.
  `in_place`: the values' buffers are donated, so one native pass may write
  the new values over them (`update_and_apply`).
  Traceable; the facade jits it, Keras 3's trainer traces it in its step."""
  tx = _alias.sgd(
    config.schedule if config.schedule is not None else lr,
    momentum if config.use_momentum else 0.0,
    config.nesterov,
    clipvalue=config.clipvalue,
    clipnorm=config.clipnorm,
    global_clipnorm=config.global_clipnorm,
    decay=config.decay,
  )
  if config.skip_non_finite:
    tx = _non_finite.skip_non_finite(tx)
  state = tx.init(values)
  state = optax.tree.set(state, count=count)
  if config.use_momentum:
    state = optax.tree.set(state, velocity=velocities)
  if config.skip_non_finite:
    state = optax.tree.set(state, skipped=skipped)
  # One native pass over the values when it can run (`_fused`).
  new_values, state = _alias.update_and_apply(
    tx, grads, state, values, in_place=in_place
  )
  if config.skip_non_finite:
    skipped = _non_finite.skipped_steps(state)
  return new_values, _state.velocity(state), _state.iterations(state), skipped


def packed_step(
  config: StepConfig,
  layout: _packing.Layout | None,
  in_place: bool,
  values,
  grads,
  velocities,
  *rest,
):
  """`step` with the velocities as `layout` packs them: `(buffers, others)`
  in and out (as they are, with no layout)."""
  if layout is None:
    return step(config, values, grads, velocities, *rest, in_place=in_place)
  velocities = layout.unpack(*velocities)
  new_values, velocities, count, skipped = step(
    config, values, grads, velocities, *rest, in_place=in_place
  )
  return new_values, layout.pack(velocities), count, skipped


class CompiledSteps:
  """One jitted step per `StepConfig` and slot layout, with and without
  buffer donation."""

  def __init__(self):
    self._cache: dict[tuple[Any, ...], Any] = {}  # jitted

  def get(
    self,
    config: StepConfig,
    layout: _packing.Layout | None,
    donate_values: bool,
    donate_velocities: bool,
  ) -> Callable[..., Any]:
    """The step for `config` and `layout`; donating the values (argument 0)
    and the velocities (argument 2) as asked. The step count and the count
    of skipped steps are scalars, never donated: the count `apply_gradients`
    returns shares the counter's array, and a user may keep it."""
    key = (config, layout, donate_values, donate_velocities)
    if key not in self._cache:
      donate = ((0,) if donate_values else ()) + ((2,) if donate_velocities else ())
      fn = lambda *args: packed_step(config, layout, donate_values, *args)  # noqa: E731
      self._cache[key] = jax.jit(fn, donate_argnums=donate)
    return self._cache[key]

  def compiled_count(self) -> int:
    """How many programs have been compiled, over all configs and shapes."""
    return sum(fn._cache_size() for fn in self._cache.values())


class StepRunner:
  """Runs one compiled step over the facade's Variables and writes the new
  slots and counters back into them; returns the new values."""

  def __init__(self):
    self._steps = CompiledSteps()
    self._pack: _packing.SlotPack | None = None
    self._unpacked: list[Any] | None = None  # the last slots with no layout

  def _pack_for(self, slots: list[Any]) -> _packing.SlotPack | None:
    """The pack of `slots` (the same list object as the last step's, in the
    steady state), made anew when they are not packed."""
    pack = self._pack
    if pack is not None and pack.active and pack.slots is slots:
      return pack
    if slots is self._unpacked:
      return None
    if pack is not None:
      pack.release()
    layout = _packing.layout(slots)
    self._pack = None if layout is None else _packing.SlotPack(slots, layout)
    self._unpacked = slots if layout is None else None
    return self._pack

  def run(
    self,
    config: StepConfig,
    values: list[Any],
    grads: list[Any],
    slots: list[Any],
    counter: Any,
    skipped: Any,
    learning_rate: Any,
    momentum: Any,
    donate_values: bool,
  ) -> list[jax.Array]:
    """One step. `learning_rate` and `momentum` are as the facade holds them
    (`_hyperparameters`): a learning-rate schedule is traced into the step
    (it is `config.schedule`); momentum enters as a value, a schedule of it
    evaluated here at the current step."""
    zero = _zero()
    learning_rate = zero if config.schedule else _hyperparameters.read(learning_rate)
    if config.use_momentum:
      momentum = _hyperparameters.value_at(momentum, counter.value())
    else:
      momentum = zero
    pack = self._pack_for(slots) if slots else None
    layout = None if pack is None else pack.layout
    own = slots if layout is None else [slots[i] for i in layout.rest]
    # Whether to donate is decided before the state is read: a read would
    # count as one more owner. A pack's buffers are its own.
    step = self._steps.get(
      config,
      layout,
      donate_values=donate_values,
      donate_velocities=sole_owner(own),
    )
    velocities = [s.value() for s in own]
    new_values, velocities, count, new_skipped = step(
      values,
      grads,
      velocities if pack is None else (pack.buffers, velocities),
      counter.value(),
      skipped.value(),
      learning_rate,
      momentum,
    )
    if pack is not None:
      buffers, velocities = velocities
      pack.store(buffers)
    for s, x in zip(own, velocities or []):
      s._value = x
    counter._value = (
      count if count.dtype == counter.dtype else count.astype(counter.dtype)
    )
    skipped._value = new_skipped
    return new_values

  def compiled_count(self) -> int:
    return self._steps.compiled_count()


@contextlib.contextmanager
def collection_paused():
  """Holds Python's cyclic garbage collector off for a step that replaces
  its Variables' arrays. Each array a compiled call returns is an object the
  collector tracks; allocating a thousand of them starts collections that
  walk the young objects (and, every so often, every object in the
  process), though freeing the old arrays before the pause ends leaves the
  count where it was. On 1,000 tensors of 64 floats that was a tenth of the
  step (docs/performance.md). The step's own objects make no reference
  cycles, so the pause delays nothing of its own; cycles made by a
  `gradient_aggregator` wait until the next collection. A collector the
  caller turned off stays off."""
  if not gc.isenabled():
    yield
    return
  gc.disable()
  try:
    yield
  finally:
    gc.enable()


@functools.cache
def _zero() -> jax.Array:
  """The float32 zero fed for a hyperparameter the step does not read;
  made once (a new array each step is a dispatch, 20 us on a CPU)."""
  return jnp.zeros((), jnp.float32)


def sole_owner(variables: list[Any]) -> bool:
  """True when each Variable's array is referenced by that Variable alone, so
  donating its buffer cannot invalidate an array a user still holds (such as
  `val0 = var.value()` in the Keras examples)."""
  return not held_elsewhere(variables)


def held_elsewhere(variables: list[Any]) -> list[Any]:
  """The Variables whose array something else references too (all of them
  where that cannot be known). `sys.getrefcount` counts the attribute and
  its own argument."""
  if not hasattr(sys, "getrefcount"):
    return list(variables)
  return [v for v in variables if sys.getrefcount(v._value) > 2]

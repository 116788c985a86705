"""Schedules and legacy `decay` against the real tf_keras, in both its modes.

The learning rate our transformation applies at each step is compared
bitwise with `tf_keras.optimizers.legacy.SGD._decayed_lr`, the value the
reference applies:

* graph: ours traced (`lax.scan` over the steps, and `vmap` over them, both
  under `jax.jit`) against the reference inside one `tf.function`, as
  `model.fit` runs it, at every step of the horizon;
* eager: ours called step by step with a concrete count against the eager
  reference, at every multiple of the decay period up to 40 (and its
  neighbours) and at steps spread over the horizon.

Each case runs in the variable dtypes float16, bfloat16, float32 and float64
(the reference casts the step to the variable's dtype before the schedule sees
it, and the rate back to it after). TensorFlow flushes subnormal float32
intermediates to zero and XLA on CPU does not, so rates below 1e-36 (where a
factor such as `m_mul ** i` has underflowed) are left out of the comparison.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import enable_x64
from jax import lax

from optax_keras_sgd import (
  KerasLearningRateState,
  scale_by_keras_learning_rate,
  schedules,
)

pytestmark = pytest.mark.reference

TFS = reference.schedules()
DTYPES = ["float16", "bfloat16", "float32", "float64"]
NEAR_UNDERFLOW = 1e-36


def _grid():
  """Every argument combination the schedules have, over periods that do and
  do not divide the steps."""
  for ds, rate, staircase in itertools.product(
    [1, 7, 100, 1000], [0.1, 0.96], [False, True]
  ):
    for cls in ("ExponentialDecay", "InverseTimeDecay"):
      yield (
        cls,
        dict(
          initial_learning_rate=0.1,
          decay_steps=ds,
          decay_rate=rate,
          staircase=staircase,
        ),
      )
  for ds, power, cycle in itertools.product(
    [7, 30, 1000], [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, -0.5, -1.0], [False, True]
  ):
    yield (
      "PolynomialDecay",
      dict(
        initial_learning_rate=0.1,
        decay_steps=ds,
        end_learning_rate=0.001,
        power=power,
        cycle=cycle,
      ),
    )
  for ds, alpha in itertools.product([7, 50, 1000], [0.0, 0.1]):
    yield "CosineDecay", dict(initial_learning_rate=0.1, decay_steps=ds, alpha=alpha)
    yield (
      "CosineDecay",
      dict(
        initial_learning_rate=0.1,
        decay_steps=ds,
        alpha=alpha,
        warmup_target=0.2,
        warmup_steps=30,
      ),
    )
  yield (
    "CosineDecay",
    dict(
      initial_learning_rate=0.0, decay_steps=0, warmup_target=10.0, warmup_steps=1500
    ),
  )
  for fd, t_mul, m_mul, alpha in itertools.product(
    [4, 7, 1000], [1.0, 1.5, 2.0], [1.0, 0.5], [0.0, 0.01]
  ):
    yield (
      "CosineDecayRestarts",
      dict(
        initial_learning_rate=0.1,
        first_decay_steps=fd,
        t_mul=t_mul,
        m_mul=m_mul,
        alpha=alpha,
      ),
    )
  for boundaries in ([1, 3, 50], [100, 1000, 10000]):
    yield (
      "PiecewiseConstantDecay",
      dict(boundaries=boundaries, values=[1.0, 0.5, 0.1, 0.01]),
    )


GRID = list(_grid())

# One long sweep per schedule and for legacy decay, in every dtype: these run
# in every tier. The whole grid runs in the slow tier.
LONG = [
  (
    "ExponentialDecay",
    dict(initial_learning_rate=0.1, decay_steps=1000, decay_rate=0.96),
  ),
  ("InverseTimeDecay", dict(initial_learning_rate=1.0, decay_steps=7, decay_rate=0.9)),
  (
    "PolynomialDecay",
    dict(
      initial_learning_rate=0.1,
      decay_steps=30,
      end_learning_rate=0.001,
      power=0.5,
      cycle=True,
    ),
  ),
  (
    "CosineDecay",
    dict(
      initial_learning_rate=0.1,
      decay_steps=1000,
      alpha=0.1,
      warmup_target=0.2,
      warmup_steps=300,
    ),
  ),
  (
    "CosineDecayRestarts",
    dict(
      initial_learning_rate=0.1, first_decay_steps=30, t_mul=1.5, m_mul=0.9, alpha=0.01
    ),
  ),
  (
    "PiecewiseConstantDecay",
    dict(boundaries=[100, 1000, 10000], values=[1.0, 0.5, 0.1, 0.01]),
  ),
]
LONG_HORIZON = 100_000
GRID_HORIZON = 3_000


def _period(kwargs):
  return (
    kwargs.get("decay_steps")
    or kwargs.get("first_decay_steps")
    or kwargs.get("warmup_steps")
    or max(kwargs.get("boundaries", [1]))
  )


def _eager_steps(kwargs, horizon):
  """Every multiple of the period up to 40, its neighbours, and 60 steps
  spread over the horizon."""
  period = _period(kwargs)
  multiples = np.arange(41) * period
  steps = np.concatenate(
    [
      multiples - 1,
      multiples,
      multiples + 1,
      np.linspace(0, horizon, 60).astype(np.int64),
    ]
  )
  return np.unique(np.clip(steps, 0, horizon))


def _rate_fn(learning_rate, decay, dtype):
  """Our rate at a step: the update of `scale_by_keras_learning_rate` for a
  gradient of 1, whose product with the rate is exact."""
  tx = scale_by_keras_learning_rate(learning_rate, decay=decay)
  one = jnp.ones((), dtype)

  def rate(count):
    update, _ = tx.update(one, KerasLearningRateState(count=count))
    return -update

  return rate


def _x64(dtype):
  return enable_x64(dtype == "float64")


def _ours_graph(learning_rate, decay, dtype, steps):
  with _x64(dtype):
    return _ours_graph_x(learning_rate, decay, dtype, steps)


def _ours_graph_x(learning_rate, decay, dtype, steps):
  rate = _rate_fn(learning_rate, decay, dtype)
  counts = jnp.asarray(steps, jnp.int32)
  scanned = jax.jit(lambda c: lax.scan(lambda _, s: (None, rate(s)), None, c)[1])
  mapped = jax.jit(jax.vmap(rate))
  return {
    "scan": np.asarray(scanned(counts)).astype(np.float64),
    "vmap": np.asarray(mapped(counts)).astype(np.float64),
  }


def _ours_eager(learning_rate, decay, dtype, steps):
  with _x64(dtype):
    rate = _rate_fn(learning_rate, decay, dtype)
    return np.array([np.asarray(rate(jnp.int32(s))).astype(np.float64) for s in steps])


def _assert_bitwise(ours, ref, steps, what):
  comparable = np.maximum(np.abs(ours), np.abs(ref)) >= NEAR_UNDERFLOW
  comparable |= (ours == 0) & (ref == 0)
  same = (ours == ref) | (np.isnan(ours) & np.isnan(ref)) | ~comparable
  bad = np.nonzero(~same)[0]
  assert not bad.size, (
    f"{what}: {bad.size} of {len(steps)} steps differ, first at steps "
    f"{steps[bad[:5]]}: ours {ours[bad[:5]]}, reference {ref[bad[:5]]}"
  )


def _check(cls, kwargs, dtype, mode, horizon, decay=0.0):
  ours = getattr(schedules, cls)(**kwargs)
  theirs = getattr(TFS, cls)(**kwargs)
  if mode == "graph":
    steps = np.arange(horizon + 1)
    ref = reference.decayed_lr(theirs, steps, dtype, decay=decay)
    for how, values in _ours_graph(ours, decay, dtype, steps).items():
      _assert_bitwise(values, ref, steps, f"{how} vs tf.function")
  else:
    steps = _eager_steps(kwargs, horizon)
    ref = reference.decayed_lr(theirs, steps, dtype, decay=decay, graph=False)
    _assert_bitwise(_ours_eager(ours, decay, dtype, steps), ref, steps, "eager")


@pytest.mark.parametrize("mode", ["graph", "eager"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs", LONG, ids=[c for c, _ in LONG])
def test_each_schedule_over_100k_steps(cls, kwargs, dtype, mode):
  _check(cls, kwargs, dtype, mode, LONG_HORIZON)


@pytest.mark.parametrize("mode", ["graph", "eager"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("learning_rate", [0.1, "schedule"])
def test_legacy_decay_over_100k_steps(learning_rate, dtype, mode):
  steps = (
    np.arange(LONG_HORIZON + 1)
    if mode == "graph"
    else np.unique(np.linspace(0, LONG_HORIZON, 400).astype(np.int64))
  )
  ours_lr, tf_lr = learning_rate, learning_rate
  if learning_rate == "schedule":
    ours_lr = schedules.ExponentialDecay(0.1, 1000, 0.96, staircase=True)
    tf_lr = TFS.ExponentialDecay(0.1, 1000, 0.96, staircase=True)
  ref = reference.decayed_lr(tf_lr, steps, dtype, decay=1e-3, graph=mode == "graph")
  if mode == "graph":
    for how, values in _ours_graph(ours_lr, 1e-3, dtype, steps).items():
      _assert_bitwise(values, ref, steps, f"{how} vs tf.function")
  else:
    _assert_bitwise(_ours_eager(ours_lr, 1e-3, dtype, steps), ref, steps, "eager")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["graph", "eager"])
@pytest.mark.parametrize(
  "cls, kwargs", GRID, ids=[f"{c}-{i}" for i, (c, _) in enumerate(GRID)]
)
def test_every_argument_combination(cls, kwargs, mode):
  _check(cls, kwargs, "float32", mode, GRID_HORIZON)


def test_tensorflow_modes_differ_where_the_readme_says():
  """The figures of the README's parity section: over 400 steps, eager and
  graph TensorFlow differ at these many steps."""
  steps = np.arange(400)
  counts = {}
  for cls, kwargs in [
    (
      "ExponentialDecay",
      dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=0.1),
    ),
    (
      "InverseTimeDecay",
      dict(initial_learning_rate=1.0, decay_steps=7, decay_rate=0.9),
    ),
    (
      "CosineDecayRestarts",
      dict(initial_learning_rate=0.1, first_decay_steps=30, t_mul=1.0),
    ),
    (
      "PiecewiseConstantDecay",
      dict(boundaries=[1, 3, 50], values=[1.0, 0.5, 0.1, 0.01]),
    ),
  ]:
    schedule = getattr(TFS, cls)(**kwargs)
    graph = reference.decayed_lr(schedule, steps)
    eager = reference.decayed_lr(schedule, steps, graph=False)
    counts[cls] = int(np.sum(graph != eager))
  assert counts == {
    "ExponentialDecay": 109,
    "InverseTimeDecay": 294,
    "CosineDecayRestarts": 233,
    "PiecewiseConstantDecay": 0,
  }

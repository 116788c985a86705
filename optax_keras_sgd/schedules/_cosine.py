"""CosineDecay (with warmup) and CosineDecayRestarts, as Keras 2 computes them.

Each follows its Keras 2 source op by op; `_ops` explains the two modes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from optax_keras_sgd._numerics import rounded
from optax_keras_sgd.schedules._base import LearningRateSchedule
from optax_keras_sgd.schedules._ops import (
  f32,
  non_negative,
  number,
  operands,
  positive,
  reciprocal,
)


def _cosine_constants(alpha: float, period: float) -> tuple[Any, ...]:
  """The constants of a cosine decay: `pi`, `1`, `0.5`, `alpha`, `1 - alpha`
  (Keras computes it on the Python number), their graph-mode product
  `(1 - alpha) * 0.5`, and the folded `pi * (1/period)` (0 for a warmup-only
  schedule, which never uses it)."""
  pi = f32(math.pi)
  return (
    pi,
    1.0,
    0.5,
    alpha,
    1 - alpha,
    f32(1 - alpha) * f32(0.5),
    pi * reciprocal(period) if period else 0.0,
  )


def _cosine(fraction, constants):
  """`(1 - alpha) * 0.5 * (1 + cos(pi * fraction)) + alpha`, as Keras writes it."""
  pi, one, half, alpha, keep, _, _ = constants
  cosine = half * (one + jnp.cos(pi * fraction))
  return rounded(keep * cosine) + alpha


@dataclasses.dataclass(frozen=True, eq=False)
class CosineDecay(LearningRateSchedule):
  """Cosine decay from `initial_learning_rate` (or, after a linear warmup of
  `warmup_steps`, from `warmup_target`) to `alpha` times it over
  `decay_steps`, then constant.

  Examples:
    >>> from optax_keras_sgd.schedules import CosineDecay
    >>> s = CosineDecay(0.1, 10, alpha=0.1, warmup_target=0.2, warmup_steps=3)
    >>> [round(float(s(t)), 6) for t in (0, 3, 20)]
    [0.1, 0.2, 0.02]
  """

  initial_learning_rate: float
  decay_steps: float
  alpha: float = 0.0
  name: str | None = None
  warmup_target: float | None = None
  warmup_steps: float = 0

  def __post_init__(self):
    number("initial_learning_rate", self.initial_learning_rate, "CosineDecay")
    if self.warmup_target is None:
      positive("decay_steps", self.decay_steps, "CosineDecay")
    else:
      number("warmup_target", self.warmup_target, "CosineDecay")
      non_negative("decay_steps", self.decay_steps, "CosineDecay")
    number("alpha", self.alpha, "CosineDecay")
    non_negative("warmup_steps", self.warmup_steps, "CosineDecay")

  def __call__(self, step):
    warmup = self.warmup_target is not None
    step, graph, constants = operands(
      step,
      self.initial_learning_rate,
      self.decay_steps,
      self.warmup_target if warmup else 0.0,
      self.warmup_steps,
      f32(self.decay_steps) + f32(self.warmup_steps),
      *_cosine_constants(self.alpha, self.decay_steps),
    )
    initial, decay_steps, target, warmup_steps, horizon = constants[:5]
    cosine = constants[5:]
    if not warmup:
      step = jnp.minimum(step, decay_steps)
      if graph:
        # `pi * (step * (1/decay_steps))` and `(1 - alpha) * (0.5 * x)`, the
        # constants folded.
        _, one, _, alpha, _, keep_half, pi_inverse = cosine
        wave = jnp.cos(step * pi_inverse) + one
        return (rounded(wave * keep_half) + alpha) * initial
      return initial * _cosine(step / decay_steps, cosine)
    # Keras branches with `tf.cond`; in graph mode the constants reach the
    # branches through switches, so no division is rewritten: both modes
    # compute the same.
    step = jnp.minimum(step, horizon)
    rising = rounded((target - initial) * (step / warmup_steps)) + initial
    decaying = target * _cosine((step - warmup_steps) / decay_steps, cosine)
    return jnp.where(step < warmup_steps, rising, decaying)


@dataclasses.dataclass(frozen=True, eq=False)
class CosineDecayRestarts(LearningRateSchedule):
  """Cosine decay with warm restarts (SGDR): periods of `first_decay_steps`
  growing by `t_mul`, peaks scaled by `m_mul`, floor `alpha`.

  Examples:
    >>> from optax_keras_sgd.schedules import CosineDecayRestarts
    >>> s = CosineDecayRestarts(0.1, 4, t_mul=2.0, m_mul=0.5, alpha=0.01)
    >>> round(float(s(4)), 6)  # first restart, at half the peak
    0.0505
  """

  initial_learning_rate: float
  first_decay_steps: float
  t_mul: float = 2.0
  m_mul: float = 1.0
  alpha: float = 0.0
  name: str | None = None

  def __post_init__(self):
    cls = "CosineDecayRestarts"
    number("initial_learning_rate", self.initial_learning_rate, cls)
    positive("first_decay_steps", self.first_decay_steps, cls)
    positive("t_mul", self.t_mul, cls)
    number("m_mul", self.m_mul, cls)
    number("alpha", self.alpha, cls)

  def __call__(self, step):
    t_mul32, alpha32 = f32(self.t_mul), f32(self.alpha)
    geometric = t_mul32 != 1
    # log(t_mul) to the nearest float32, as TensorFlow's kernel computes it.
    log_t32 = f32(math.log(t_mul32)) if geometric else f32(1)
    keep32, shrink32 = f32(1) - alpha32, f32(1) - t_mul32
    step, graph, constants = operands(
      step,
      self.initial_learning_rate,
      self.first_decay_steps,
      reciprocal(self.first_decay_steps),
      t_mul32,
      self.m_mul,
      alpha32,
      1.0,
      0.5,
      math.pi,
      log_t32,
      shrink32,
      keep32,
      reciprocal(log_t32),
      reciprocal(shrink32) if geometric else 1.0,
      keep32 * f32(0.5),
    )
    (
      initial,
      periods,
      inverse,
      t_mul,
      m_mul,
      alpha,
      one,
      half,
      pi,
      log_t,
      shrink,
      keep,
      inverse_log_t,
      inverse_shrink,
      keep_half,
    ) = constants
    fraction = step * inverse if graph else step / periods

    if geometric:
      ratio = jnp.log(one - rounded(fraction * shrink))
      i_restart = jnp.floor(ratio * inverse_log_t if graph else ratio / log_t)
      growth = jnp.power(t_mul, i_restart)
      past = (
        rounded(inverse_shrink * (one - growth)) if graph else (one - growth) / shrink
      )
      # `rounded`: XLA rewrites `x / pow(t, i)` into `x * pow(t, -i)`.
      fraction = (fraction - past) / rounded(growth)
    else:
      i_restart = jnp.floor(fraction)
      fraction = fraction - i_restart

    m_fac = jnp.power(m_mul, i_restart)
    wave = one + jnp.cos(pi * fraction)
    if graph:
      # `(1 - alpha) * ((0.5 * m_fac) * wave)`, the constants pushed together.
      return (alpha + rounded(wave * (keep_half * m_fac))) * initial
    return initial * (rounded(keep * (half * m_fac * wave)) + alpha)

"""The Keras 2 learning-rate schedules, in `jax.numpy`, with float32 arithmetic.

Each reproduces `tf_keras.optimizers.schedules` operation by operation: the
step is cast to float32, Python constants enter as Keras's do, and products
that feed additions are kept rounded (see `_numerics.rounded`), as
TensorFlow computes them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from optax_keras_sgd._numerics import rounded
from optax_keras_sgd.schedules._base import LearningRateSchedule

F32 = jnp.float32


def _f32(x: Any) -> jax.Array:
  return jnp.asarray(x, F32)


def _step(step: Any) -> jax.Array:
  return jnp.asarray(step).astype(F32)


def _positive(name: str, value: Any, cls: str) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{cls}: `{name}` must be a number. Received: {name}={value!r}.")
  if not float(value) > 0:
    raise ValueError(f"{cls}: `{name}` must be > 0. Received: {name}={value}.")


def _number(name: str, value: Any, cls: str) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{cls}: `{name}` must be a number. Received: {name}={value!r}.")


class _RateDecay(LearningRateSchedule):
  """The arguments and config shared by ExponentialDecay and InverseTimeDecay."""

  def __init__(self, initial_learning_rate: float, decay_steps: float,
               decay_rate: float, staircase: bool = False, name: str | None = None):
    cls = type(self).__name__
    _number("initial_learning_rate", initial_learning_rate, cls)
    _positive("decay_steps", decay_steps, cls)
    _number("decay_rate", decay_rate, cls)
    self.initial_learning_rate = initial_learning_rate
    self.decay_steps = decay_steps
    self.decay_rate = decay_rate
    self.staircase = staircase
    self.name = name

  def _progress(self, step) -> jax.Array:
    """`step / decay_steps`, floored with `staircase`."""
    p = _step(step) / _f32(self.decay_steps)
    return jnp.floor(p) if self.staircase else p

  def get_config(self):
    return {"initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
            "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
  """`initial_learning_rate * decay_rate ** (step / decay_steps)`.

  With `staircase=True` the exponent is floored, so the rate drops every
  `decay_steps` steps.

  Examples:
    >>> from optax_keras_sgd.schedules import ExponentialDecay
    >>> round(float(ExponentialDecay(0.1, 10, 0.5)(20)), 6)
    0.025
  """

  def __call__(self, step):
    return _f32(self.initial_learning_rate) * jnp.power(_f32(self.decay_rate),
                                                        self._progress(step))


class PiecewiseConstantDecay(LearningRateSchedule):
  """`values[0]` while `step <= boundaries[0]`, `values[i]` while
  `boundaries[i-1] < step <= boundaries[i]`, then `values[-1]`.

  Examples:
    >>> from optax_keras_sgd.schedules import PiecewiseConstantDecay
    >>> s = PiecewiseConstantDecay([1, 3], [1.0, 0.5, 0.1])
    >>> [round(float(s(t)), 6) for t in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.1]
  """

  def __init__(self, boundaries: Sequence[float], values: Sequence[float],
               name: str | None = None):
    boundaries, values = list(boundaries), list(values)
    if len(boundaries) != len(values) - 1:
      raise ValueError(
          "The length of boundaries should be 1 less than the length of "
          f"values. Received: boundaries={boundaries} of length "
          f"{len(boundaries)}, and values={values} of length {len(values)}.")
    for b in boundaries:
      _number("boundaries[i]", b, "PiecewiseConstantDecay")
    if any(b2 < b1 for b1, b2 in zip(boundaries, boundaries[1:])):
      raise ValueError("PiecewiseConstantDecay: `boundaries` must be increasing. "
                       f"Received: boundaries={boundaries}.")
    self.boundaries = boundaries
    self.values = values
    self.name = name

  def __call__(self, step):
    step = jnp.asarray(step)
    boundaries = jnp.asarray(self.boundaries).astype(step.dtype)
    index = jnp.sum(step > boundaries)
    return jnp.asarray(self.values, F32)[index]

  def get_config(self):
    return {"boundaries": self.boundaries, "values": self.values,
            "name": self.name}


class PolynomialDecay(LearningRateSchedule):
  """From `initial_learning_rate` to `end_learning_rate` over `decay_steps`:
  `(initial - end) * (1 - step / decay_steps) ** power + end`.

  With `cycle=True` the horizon grows to the next multiple of `decay_steps`
  instead of holding `end_learning_rate`.

  Examples:
    >>> from optax_keras_sgd.schedules import PolynomialDecay
    >>> round(float(PolynomialDecay(0.1, 10, 0.01, power=2.0)(5)), 6)
    0.0325
  """

  def __init__(self, initial_learning_rate: float, decay_steps: float,
               end_learning_rate: float = 0.0001, power: float = 1.0,
               cycle: bool = False, name: str | None = None):
    _number("initial_learning_rate", initial_learning_rate, "PolynomialDecay")
    _positive("decay_steps", decay_steps, "PolynomialDecay")
    _number("end_learning_rate", end_learning_rate, "PolynomialDecay")
    _number("power", power, "PolynomialDecay")
    self.initial_learning_rate = initial_learning_rate
    self.decay_steps = decay_steps
    self.end_learning_rate = end_learning_rate
    self.power = power
    self.cycle = cycle
    self.name = name

  def __call__(self, step):
    initial = _f32(self.initial_learning_rate)
    end = _f32(self.end_learning_rate)
    step = _step(step)
    decay_steps = _f32(self.decay_steps)
    if self.cycle:
      multiplier = jnp.where(step == 0, _f32(1.0), jnp.ceil(step / decay_steps))
      decay_steps = decay_steps * multiplier
    else:
      step = jnp.minimum(step, decay_steps)
    p = step / decay_steps
    return rounded((initial - end) * jnp.power(_f32(1) - p, _f32(self.power))) + end

  def get_config(self):
    return {"initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate, "power": self.power,
            "cycle": self.cycle, "name": self.name}


class InverseTimeDecay(_RateDecay):
  """`initial_learning_rate / (1 + decay_rate * step / decay_steps)`.

  Examples:
    >>> from optax_keras_sgd.schedules import InverseTimeDecay
    >>> round(float(InverseTimeDecay(0.1, 5, 0.5, staircase=True)(11)), 6)
    0.05
  """

  def __call__(self, step):
    denominator = _f32(1) + rounded(_f32(self.decay_rate) * self._progress(step))
    return _f32(self.initial_learning_rate) / denominator


def _cosine(step, decay_steps, alpha, decay_from):
  fraction = step / decay_steps
  cosine = _f32(0.5) * (_f32(1.0) + jnp.cos(_f32(math.pi) * fraction))
  # Keras computes `1 - alpha` on the Python number, then converts.
  decayed = rounded(_f32(1 - alpha) * cosine) + _f32(alpha)
  return decay_from * decayed


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

  def __init__(self, initial_learning_rate: float, decay_steps: float,
               alpha: float = 0.0, name: str | None = None,
               warmup_target: float | None = None, warmup_steps: float = 0):
    _number("initial_learning_rate", initial_learning_rate, "CosineDecay")
    _positive("decay_steps", decay_steps, "CosineDecay")
    _number("alpha", alpha, "CosineDecay")
    if warmup_target is not None:
      _number("warmup_target", warmup_target, "CosineDecay")
    _number("warmup_steps", warmup_steps, "CosineDecay")
    if warmup_steps < 0:
      raise ValueError("CosineDecay: `warmup_steps` must be >= 0. Received: "
                       f"warmup_steps={warmup_steps}.")
    self.initial_learning_rate = initial_learning_rate
    self.decay_steps = decay_steps
    self.alpha = alpha
    self.name = name
    self.warmup_target = warmup_target
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    initial = _f32(self.initial_learning_rate)
    decay_steps = _f32(self.decay_steps)
    step = _step(step)
    if self.warmup_target is None:
      step = jnp.minimum(step, decay_steps)
      return _cosine(step, decay_steps, self.alpha, initial)
    target = _f32(self.warmup_target)
    warmup_steps = _f32(self.warmup_steps)
    step = jnp.minimum(step, decay_steps + warmup_steps)
    warmup = rounded((target - initial) * (step / warmup_steps)) + initial
    decay = _cosine(step - warmup_steps, decay_steps, self.alpha, target)
    return jnp.where(step < warmup_steps, warmup, decay)

  def get_config(self):
    return {"initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps, "alpha": self.alpha,
            "name": self.name, "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
  """Cosine decay with warm restarts (SGDR): periods of `first_decay_steps`
  growing by `t_mul`, peaks scaled by `m_mul`, floor `alpha`.

  Examples:
    >>> from optax_keras_sgd.schedules import CosineDecayRestarts
    >>> s = CosineDecayRestarts(0.1, 4, t_mul=2.0, m_mul=0.5, alpha=0.01)
    >>> round(float(s(4)), 6)  # first restart, at half the peak
    0.0505
  """

  def __init__(self, initial_learning_rate: float, first_decay_steps: float,
               t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0,
               name: str | None = None):
    _number("initial_learning_rate", initial_learning_rate, "CosineDecayRestarts")
    _positive("first_decay_steps", first_decay_steps, "CosineDecayRestarts")
    _positive("t_mul", t_mul, "CosineDecayRestarts")
    _number("m_mul", m_mul, "CosineDecayRestarts")
    _number("alpha", alpha, "CosineDecayRestarts")
    self.initial_learning_rate = initial_learning_rate
    self.first_decay_steps = first_decay_steps
    self.t_mul = t_mul
    self.m_mul = m_mul
    self.alpha = alpha
    self.name = name

  def __call__(self, step):
    alpha = _f32(self.alpha)
    t_mul = _f32(self.t_mul)
    fraction = _step(step) / _f32(self.first_decay_steps)
    one = _f32(1.0)

    # Geometric periods (t_mul != 1).
    i_geo = jnp.floor(jnp.log(one - rounded(fraction * (one - t_mul))) / jnp.log(t_mul))
    sum_r = (one - t_mul**i_geo) / (one - t_mul)
    fraction_geo = (fraction - sum_r) / t_mul**i_geo
    # Equal periods (t_mul == 1).
    i_eq = jnp.floor(fraction)
    fraction_eq = fraction - i_eq

    equal = t_mul == one
    i_restart = jnp.where(equal, i_eq, i_geo)
    fraction = jnp.where(equal, fraction_eq, fraction_geo)
    m_fac = _f32(self.m_mul) ** i_restart
    cosine = _f32(0.5) * m_fac * (one + jnp.cos(_f32(math.pi) * fraction))
    decayed = rounded((one - alpha) * cosine) + alpha
    return _f32(self.initial_learning_rate) * decayed

  def get_config(self):
    return {"initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps, "t_mul": self.t_mul,
            "m_mul": self.m_mul, "alpha": self.alpha, "name": self.name}

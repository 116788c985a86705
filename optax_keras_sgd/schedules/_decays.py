"""ExponentialDecay, PiecewiseConstantDecay, PolynomialDecay, InverseTimeDecay.

Each follows its Keras 2 source op by op; `_ops` explains the two modes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from optax_keras_sgd._numerics import rounded
from optax_keras_sgd.schedules._base import LearningRateSchedule
from optax_keras_sgd.schedules._ops import (
  F32,
  f32,
  number,
  operands,
  positive,
  reciprocal,
)


@dataclasses.dataclass(frozen=True, eq=False)
class _RateDecay(LearningRateSchedule):
  """The arguments and config shared by ExponentialDecay and InverseTimeDecay."""

  initial_learning_rate: float
  decay_steps: float
  decay_rate: float
  staircase: bool = False
  name: str | None = None

  def __post_init__(self):
    cls = type(self).__name__
    number("initial_learning_rate", self.initial_learning_rate, cls)
    positive("decay_steps", self.decay_steps, cls)
    number("decay_rate", self.decay_rate, cls)


@dataclasses.dataclass(frozen=True, eq=False)
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
    step, graph, (initial, rate, decay_steps, inverse) = operands(
      step,
      self.initial_learning_rate,
      self.decay_rate,
      self.decay_steps,
      reciprocal(self.decay_steps),
    )
    p = step * inverse if graph else step / decay_steps
    if self.staircase:
      p = jnp.floor(p)
    return initial * jnp.power(rate, p)


@dataclasses.dataclass(frozen=True, eq=False)
class PiecewiseConstantDecay(LearningRateSchedule):
  """`values[0]` while `step <= boundaries[0]`, `values[i]` while
  `boundaries[i-1] < step <= boundaries[i]`, then `values[-1]`.

  Examples:
    >>> from optax_keras_sgd.schedules import PiecewiseConstantDecay
    >>> s = PiecewiseConstantDecay([1, 3], [1.0, 0.5, 0.1])
    >>> [round(float(s(t)), 6) for t in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.1]
  """

  boundaries: Sequence[float]
  values: Sequence[float]
  name: str | None = None

  def __post_init__(self):
    boundaries, values = list(self.boundaries), list(self.values)
    if len(boundaries) != len(values) - 1:
      raise ValueError(
        "The length of boundaries should be 1 less than the length of "
        f"values. Received: boundaries={boundaries} of length "
        f"{len(boundaries)}, and values={values} of length {len(values)}."
      )
    for b in boundaries:
      number("boundaries[i]", b, "PiecewiseConstantDecay")
    if any(b2 < b1 for b1, b2 in zip(boundaries, boundaries[1:])):
      raise ValueError(
        "PiecewiseConstantDecay: `boundaries` must be increasing. "
        f"Received: boundaries={boundaries}."
      )
    object.__setattr__(self, "boundaries", boundaries)
    object.__setattr__(self, "values", values)

  def __call__(self, step):
    step = jnp.asarray(step)
    boundaries = jnp.asarray(self.boundaries).astype(step.dtype)
    index = jnp.sum(step > boundaries)
    return jnp.asarray(self.values, F32)[index]


@dataclasses.dataclass(frozen=True, eq=False)
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

  initial_learning_rate: float
  decay_steps: float
  end_learning_rate: float = 0.0001
  power: float = 1.0
  cycle: bool = False
  name: str | None = None

  def __post_init__(self):
    number("initial_learning_rate", self.initial_learning_rate, "PolynomialDecay")
    positive("decay_steps", self.decay_steps, "PolynomialDecay")
    number("end_learning_rate", self.end_learning_rate, "PolynomialDecay")
    number("power", self.power, "PolynomialDecay")

  def __call__(self, step):
    step, graph, (end, power, decay_steps, inverse, span, one) = operands(
      step,
      self.end_learning_rate,
      self.power,
      self.decay_steps,
      reciprocal(self.decay_steps),
      f32(self.initial_learning_rate) - f32(self.end_learning_rate),
      1.0,
    )
    if self.cycle:
      periods = rounded(step * inverse) if graph else step / decay_steps
      multiplier = jnp.where(step == 0, one, jnp.ceil(periods))
      p = step / (decay_steps * multiplier)
    else:
      step = jnp.minimum(step, decay_steps)
      p = rounded(step * inverse) if graph else step / decay_steps
    base = one - p
    if graph:
      scaled = _graph_power(base, float(f32(self.power)), power, one, span)
    else:
      scaled = jnp.power(base, power) * span
    return rounded(scaled) + end


def _graph_power(
  x: jax.Array, exponent: float, power: jax.Array, one: jax.Array, scale: jax.Array
) -> jax.Array:
  """`x ** power * scale` as TensorFlow's graph optimizer rewrites it.

  A constant power 2 becomes `x * x`, 3 becomes `x * square(x)` (on CPU, and
  `scale` is then pushed into the first factor), 0.5 `sqrt`, -0.5 `rsqrt`
  (`1 / sqrt(x)` in TensorFlow's CPU kernel), -1 `reciprocal`, 1 and 0
  identities; other powers stay `pow`.
  """
  if exponent == 3.0:
    return (x * x) * (scale * x)
  # `rounded` keeps XLA from turning `1 / sqrt(x)` into its `rsqrt`.
  forms = {
    2.0: lambda: x * x,
    1.0: lambda: x,
    0.5: lambda: jnp.sqrt(x),
    0.0: lambda: jnp.ones_like(x),
    -0.5: lambda: one / rounded(jnp.sqrt(x)),
    -1.0: lambda: one / x,
  }
  form = forms.get(exponent)
  return (form() if form else jnp.power(x, power)) * scale


@dataclasses.dataclass(frozen=True, eq=False)
class InverseTimeDecay(_RateDecay):
  """`initial_learning_rate / (1 + decay_rate * step / decay_steps)`.

  Examples:
    >>> from optax_keras_sgd.schedules import InverseTimeDecay
    >>> round(float(InverseTimeDecay(0.1, 5, 0.5, staircase=True)(11)), 6)
    0.05
  """

  def __call__(self, step):
    step, graph, (initial, rate, decay_steps, inverse, rate_inverse, one) = operands(
      step,
      self.initial_learning_rate,
      self.decay_rate,
      self.decay_steps,
      reciprocal(self.decay_steps),
      f32(self.decay_rate) * reciprocal(self.decay_steps),
      1.0,
    )
    if graph and not self.staircase:
      # `decay_rate * (step * (1/decay_steps))`, the constants folded.
      return initial / (rounded(step * rate_inverse) + one)
    p = step * inverse if graph else step / decay_steps
    if self.staircase:
      p = jnp.floor(p)
    return initial / (one + rounded(rate * p))

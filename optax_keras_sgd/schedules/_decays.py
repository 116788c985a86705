"""The Keras 2 learning-rate schedules, in `jax.numpy`, with float32 arithmetic.

Each reproduces `tf_keras.optimizers.schedules` operation by operation, in the
form TensorFlow runs it in each of its two modes:

* **Eager** (a concrete step): TensorFlow runs each op as written, so ours
  divides, multiplies and adds as the Keras source reads.
* **Graph** (a traced step: `jax.jit`, `lax.scan`, `vmap`, `grad`): Keras users
  train inside `tf.function` (`model.fit`), where TensorFlow's graph optimizer
  rewrites the schedule before it runs. It turns `x / c` for a constant `c`
  into `x * (1/c)` with the reciprocal rounded to float32, folds constant
  factors together (`pi * (x * (1/c))` becomes `(pi * (1/c)) * x`), and
  replaces `pow(x, c)` by `sqrt`, `x * x`, `1 / x` ... for some `c`. Ours
  writes each of those forms out, computing the folded constants on the host
  in float32 as TensorFlow does.

Under tracing, every constant enters as a runtime value (`_inputs`), so
neither XLA's simplifier (which also turns division by a constant into a
multiplication, and reassociates constant factors) nor LLVM (which would see
through `_numerics.rounded` once it can prove a product's sign, and fuse a
multiply-add) can rewrite it: the form written here is the form that runs.
Products that feed an addition go through `_numerics.rounded`, since
TensorFlow rounds each op.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_keras_sgd._numerics import rounded
from optax_keras_sgd.schedules._base import LearningRateSchedule

F32 = jnp.float32

# Schedules are frozen dataclasses: a schedule is part of a compiled step's
# static configuration, so it must not change after it is made. Equality and
# hashing stay the base class's (by config): `boundaries` and `values` are
# lists.


def _f32(x: Any) -> np.float32:
  """A Python number as TensorFlow converts it: to the nearest float32."""
  return np.float32(x)


def _reciprocal(x: Any) -> np.float32:
  """`1 / x` in float32, as TensorFlow's graph optimizer folds it."""
  return np.float32(1) / np.float32(x)


def _inputs(
  step: Any, *constants: Any
) -> tuple[jax.Array, bool, tuple[jax.Array, ...]]:
  """The step as float32, whether it is traced, and the constants as arrays.

  A traced step selects TensorFlow's graph-mode form. Each constant `c` is
  then `-c if step == -2**31 else c`: a step that never occurs, but that no
  compiler can rule out, so `c` reaches the arithmetic as a runtime value of
  unknown sign. (An optimization barrier is not enough: XLA removes it before
  code generation, and LLVM then folds the constants.) For a concrete step
  the constants are plain operands already.
  """
  step = lax.convert_element_type(jnp.asarray(step), F32)
  graph = isinstance(step, jax.core.Tracer)
  arrays = tuple(jnp.asarray(c, F32) for c in constants)
  if graph:
    never = step == F32(-(2**31))
    arrays = tuple(jnp.where(never, -a, a) for a in arrays)
  return step, graph, arrays


def _non_negative(name: str, value: Any, cls: str) -> None:
  _number(name, value, cls)
  if value < 0:
    raise ValueError(f"{cls}: `{name}` must be >= 0. Received: {name}={value}.")


def _positive(name: str, value: Any, cls: str) -> None:
  _number(name, value, cls)
  if not float(value) > 0:
    raise ValueError(f"{cls}: `{name}` must be > 0. Received: {name}={value}.")


def _number(name: str, value: Any, cls: str) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{cls}: `{name}` must be a number. Received: {name}={value!r}.")


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
    _number("initial_learning_rate", self.initial_learning_rate, cls)
    _positive("decay_steps", self.decay_steps, cls)
    _number("decay_rate", self.decay_rate, cls)


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
    step, graph, (initial, rate, decay_steps, inverse) = _inputs(
      step,
      self.initial_learning_rate,
      self.decay_rate,
      self.decay_steps,
      _reciprocal(self.decay_steps),
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
      _number("boundaries[i]", b, "PiecewiseConstantDecay")
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
    _number("initial_learning_rate", self.initial_learning_rate, "PolynomialDecay")
    _positive("decay_steps", self.decay_steps, "PolynomialDecay")
    _number("end_learning_rate", self.end_learning_rate, "PolynomialDecay")
    _number("power", self.power, "PolynomialDecay")

  def __call__(self, step):
    step, graph, (end, power, decay_steps, inverse, span, one) = _inputs(
      step,
      self.end_learning_rate,
      self.power,
      self.decay_steps,
      _reciprocal(self.decay_steps),
      _f32(self.initial_learning_rate) - _f32(self.end_learning_rate),
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
      scaled = _graph_power(base, float(_f32(self.power)), power, one, span)
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
    step, graph, (initial, rate, decay_steps, inverse, rate_inverse, one) = _inputs(
      step,
      self.initial_learning_rate,
      self.decay_rate,
      self.decay_steps,
      _reciprocal(self.decay_steps),
      _f32(self.decay_rate) * _reciprocal(self.decay_steps),
      1.0,
    )
    if graph and not self.staircase:
      # `decay_rate * (step * (1/decay_steps))`, the constants folded.
      return initial / (rounded(step * rate_inverse) + one)
    p = step * inverse if graph else step / decay_steps
    if self.staircase:
      p = jnp.floor(p)
    return initial / (one + rounded(rate * p))


def _cosine_constants(alpha: float, period: float) -> tuple[Any, ...]:
  """The constants of a cosine decay: `pi`, `1`, `0.5`, `alpha`, `1 - alpha`
  (Keras computes it on the Python number), their graph-mode product
  `(1 - alpha) * 0.5`, and the folded `pi * (1/period)` (0 for a warmup-only
  schedule, which never uses it)."""
  pi = _f32(math.pi)
  return (
    pi,
    1.0,
    0.5,
    alpha,
    1 - alpha,
    _f32(1 - alpha) * _f32(0.5),
    pi * _reciprocal(period) if period else 0.0,
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
    _number("initial_learning_rate", self.initial_learning_rate, "CosineDecay")
    if self.warmup_target is None:
      _positive("decay_steps", self.decay_steps, "CosineDecay")
    else:
      _number("warmup_target", self.warmup_target, "CosineDecay")
      _non_negative("decay_steps", self.decay_steps, "CosineDecay")
    _number("alpha", self.alpha, "CosineDecay")
    _non_negative("warmup_steps", self.warmup_steps, "CosineDecay")

  def __call__(self, step):
    warmup = self.warmup_target is not None
    step, graph, constants = _inputs(
      step,
      self.initial_learning_rate,
      self.decay_steps,
      self.warmup_target if warmup else 0.0,
      self.warmup_steps,
      _f32(self.decay_steps) + _f32(self.warmup_steps),
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
    _number("initial_learning_rate", self.initial_learning_rate, cls)
    _positive("first_decay_steps", self.first_decay_steps, cls)
    _positive("t_mul", self.t_mul, cls)
    _number("m_mul", self.m_mul, cls)
    _number("alpha", self.alpha, cls)

  def __call__(self, step):
    t_mul32, alpha32 = _f32(self.t_mul), _f32(self.alpha)
    geometric = t_mul32 != 1
    # log(t_mul) to the nearest float32, as TensorFlow's kernel computes it.
    log_t32 = _f32(math.log(t_mul32)) if geometric else _f32(1)
    keep32, shrink32 = _f32(1) - alpha32, _f32(1) - t_mul32
    step, graph, constants = _inputs(
      step,
      self.initial_learning_rate,
      self.first_decay_steps,
      _reciprocal(self.first_decay_steps),
      t_mul32,
      self.m_mul,
      alpha32,
      1.0,
      0.5,
      math.pi,
      log_t32,
      shrink32,
      keep32,
      _reciprocal(log_t32),
      _reciprocal(shrink32) if geometric else 1.0,
      keep32 * _f32(0.5),
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

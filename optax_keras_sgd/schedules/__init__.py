"""Keras 2 learning-rate schedules for JAX (`tf_keras.optimizers.schedules`).

Each schedule is a callable of the step that traces under `jax.jit`, so it
is also an optax schedule. `serialize`/`deserialize` read and write the
reference's dict format, so configs move between TensorFlow and JAX.
"""

from optax_keras_sgd.schedules._base import LearningRateSchedule, deserialize, serialize
from optax_keras_sgd.schedules._cosine import CosineDecay, CosineDecayRestarts
from optax_keras_sgd.schedules._decays import (
  ExponentialDecay,
  InverseTimeDecay,
  PiecewiseConstantDecay,
  PolynomialDecay,
)

__all__ = (
  "CosineDecay",
  "CosineDecayRestarts",
  "ExponentialDecay",
  "InverseTimeDecay",
  "LearningRateSchedule",
  "PiecewiseConstantDecay",
  "PolynomialDecay",
  "deserialize",
  "serialize",
)

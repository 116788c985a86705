"""Keras 2's legacy SGD for JAX, exactly: optax transformations and a facade."""

from optax_keras_sgd import schedules
from optax_keras_sgd._alias import sgd
from optax_keras_sgd._clipping import (
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    global_norm,
)
from optax_keras_sgd._distributed import aggregate_gradients
from optax_keras_sgd._flat import FlatParams, flatten
from optax_keras_sgd._learning_rate import (
    ScaleByLearningRateState,
    scale_by_learning_rate,
)
from optax_keras_sgd._momentum import TraceState, trace
from optax_keras_sgd._non_finite import (
    SkipNonFiniteState,
    skip_non_finite,
    skipped_steps,
)
from optax_keras_sgd._optimizer import SGD
from optax_keras_sgd._sparse import IndexedSlices, apply_updates, embedding_gradient
from optax_keras_sgd._state import iterations, velocity
from optax_keras_sgd._variable import Variable

__version__ = "0.1.0"

__all__ = (
    "FlatParams",
    "IndexedSlices",
    "SGD",
    "ScaleByLearningRateState",
    "SkipNonFiniteState",
    "TraceState",
    "Variable",
    "aggregate_gradients",
    "apply_updates",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "embedding_gradient",
    "flatten",
    "global_norm",
    "iterations",
    "scale_by_learning_rate",
    "schedules",
    "sgd",
    "skip_non_finite",
    "skipped_steps",
    "trace",
    "velocity",
)

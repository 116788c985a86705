"""Keras 2's legacy SGD for JAX, exactly: optax transformations and a facade."""

import warnings as _warnings

from optax_keras_sgd import schedules
from optax_keras_sgd._alias import sgd, update_and_apply
from optax_keras_sgd._clipping import (
  clip_by_global_norm,
  clip_by_norm,
  clip_by_value,
  global_norm,
)
from optax_keras_sgd._distributed import aggregate_gradients
from optax_keras_sgd._facade import SGD
from optax_keras_sgd._flat import FlatParams, flatten
from optax_keras_sgd._learning_rate import (
  KerasLearningRateState,
  scale_by_keras_learning_rate,
)
from optax_keras_sgd._momentum import KerasMomentumState, keras_momentum
from optax_keras_sgd._native import NativeStatus, native_status
from optax_keras_sgd._non_finite import (
  SkipNonFiniteState,
  skip_non_finite,
  skipped_steps,
)
from optax_keras_sgd._sparse import IndexedSlices, apply_updates, embedding_gradient
from optax_keras_sgd._state import iterations, velocity
from optax_keras_sgd._variable import Variable

__version__ = "0.1.0"

__all__ = (
  "FlatParams",
  "IndexedSlices",
  "KerasLearningRateState",
  "KerasMomentumState",
  "NativeStatus",
  "SGD",
  "SkipNonFiniteState",
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
  "keras_momentum",
  "native_status",
  "scale_by_keras_learning_rate",
  "schedules",
  "sgd",
  "skip_non_finite",
  "skipped_steps",
  "update_and_apply",
  "velocity",
)

# Names of 0.1.0 that read like optax's (which mean other things), kept for
# one release.
_DEPRECATED = {
  "trace": "keras_momentum",
  "TraceState": "KerasMomentumState",
  "scale_by_learning_rate": "scale_by_keras_learning_rate",
  "ScaleByLearningRateState": "KerasLearningRateState",
}


def __getattr__(name: str):
  if name in _DEPRECATED:
    _warnings.warn(
      f"optax_keras_sgd.{name} is deprecated (it reads like optax's "
      f"{name}, which differs): use {_DEPRECATED[name]}.",
      DeprecationWarning,
      stacklevel=2,
    )
    return globals()[_DEPRECATED[name]]
  raise AttributeError(f"module 'optax_keras_sgd' has no attribute {name!r}")

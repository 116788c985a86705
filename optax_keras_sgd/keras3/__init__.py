"""Keras 2's legacy SGD inside Keras 3 (`KERAS_BACKEND=jax`).

`SGD` is a `keras.optimizers.Optimizer` whose step is this project's
Keras-exact step (`optax_keras_sgd.sgd`), so `model.compile(optimizer=SGD(...))`
then `model.fit(...)` trains as `tf_keras`'s legacy SGD does on the same
gradients: the learning rate inside the velocity, Nesterov, legacy `decay`,
momentum schedules, per-tensor `clipnorm` together with `clipvalue` or
`global_clipnorm`, and the legacy schedules' arithmetic. Its variables follow
Keras 3's own SGD (`iteration`, `learning_rate` for a number, then one
`momentum` per variable), so `.keras` files round-trip, and a file saved with
Keras 3's SGD loads into it.

`keras_sgd_config` converts a legacy config to Keras 3's own SGD where that
can express it; `restore_legacy_state` loads a legacy run's step count and
velocities (from a Keras H5 file or TF checkpoint, read without TensorFlow)
into this optimizer.
"""

from optax_keras_sgd.keras3._convert import keras_sgd_config, restore_legacy_state
from optax_keras_sgd.keras3._optimizer import SGD

__all__ = ("SGD", "keras_sgd_config", "restore_legacy_state")

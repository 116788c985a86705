"""The stateful, Keras-speaking facade over the functional core."""

from optax_keras_sgd._facade._optimizer import SGD

__all__ = ("SGD",)

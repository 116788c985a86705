"""Collection settings for the whole tree (the tests and the doctests).

Keras 3 runs on its JAX backend here (`optax_keras_sgd.keras3`, its tests and
doctests), chosen before anything imports it. Without Keras 3 installed (it
comes with the `integrations` extra), its doctests are not collected, unless
OPTAX_KERAS_SGD_REQUIRE_EXTRAS asks for every extra.
"""

import importlib.util
import os

os.environ["KERAS_BACKEND"] = "jax"

collect_ignore = []
if importlib.util.find_spec("keras") is None and not os.environ.get(
  "OPTAX_KERAS_SGD_REQUIRE_EXTRAS"
):
  collect_ignore.append("optax_keras_sgd/keras3")

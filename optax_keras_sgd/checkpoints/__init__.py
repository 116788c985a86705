"""Keras 2 SGD state in files, for moving a training run between Keras and
JAX in either direction, with no TensorFlow installed.

- `read` a TensorFlow checkpoint, a Keras H5 model file or a Keras 3
  `.keras` archive (`from_keras3` reads a live Keras 3 model);
- `to_optax` / `to_sgd` continue that run on JAX parameters;
- `write_h5` / `write_checkpoint` write our state back as files `tf_keras`
  loads; `build_keras_slots` and `keras_weights` hand it to a live
  `tf_keras` optimizer through `set_weights`;
- `convert` / `load_converted` keep the run as an orbax checkpoint
  (`python -m optax_keras_sgd.migrate inspect|convert FILE`).
"""

try:
  import google.protobuf  # noqa: F401
  import google_crc32c  # noqa: F401
  import h5py  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError(
    "optax_keras_sgd.checkpoints needs the `checkpoints` extra: "
    f"pip install 'optax-keras-sgd[checkpoints]' ({e})."
  ) from e

from optax_keras_sgd.checkpoints._bundle import CheckpointError  # noqa: E402
from optax_keras_sgd.checkpoints._keras import build_keras_slots, keras_weights
from optax_keras_sgd.checkpoints._keras3 import from_keras3
from optax_keras_sgd.checkpoints._migrate import to_optax, to_sgd
from optax_keras_sgd.checkpoints._orbax import convert, load_converted
from optax_keras_sgd.checkpoints._read import KerasState, read
from optax_keras_sgd.checkpoints._write import write_checkpoint, write_h5

__all__ = (
  "CheckpointError",
  "KerasState",
  "build_keras_slots",
  "convert",
  "from_keras3",
  "keras_weights",
  "load_converted",
  "read",
  "to_optax",
  "to_sgd",
  "write_checkpoint",
  "write_h5",
)
